"""Segmentation: global thresholding (:mod:`.threshold`) and the rat distal femur's bone
envelope, growth plate and trabecular VOI (:mod:`.femur`)."""

from .femur import (
    GrowthPlate,
    TrabecularVoi,
    auto_trabecular_voi,
    detect_distal_end,
    endocortical_region,
    find_growth_plate,
    periosteal_envelope,
)

__all__ = [
    "GrowthPlate",
    "TrabecularVoi",
    "auto_trabecular_voi",
    "detect_distal_end",
    "endocortical_region",
    "find_growth_plate",
    "periosteal_envelope",
]
