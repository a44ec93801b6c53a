"""Analytic test volumes (:mod:`.shapes`), HA calibration rods (:mod:`.rods`), the synthetic
rat femur (:mod:`.femur`) and the sample study (:mod:`.sample_study`), realistic femur scans and
the hard study
(:mod:`.realistic`), and the building blocks they share (:mod:`.fields`)."""

from .realistic import (
    Anatomy,
    RealisticFemur,
    ScanSettings,
    Specimen,
    make_realistic_femur,
    make_realistic_study,
)
from .rods import (
    DEFAULT_HA_MODEL,
    AttenuationModel,
    cs_window_for_levels,
    grey_from_density,
    make_ha_phantom,
)
from .shapes import (
    ball,
    cube_with_cavity,
    grey_from_mask,
    plates,
    random_spheres,
    random_trabecular,
    rod_lattice,
    tilted_plates,
    torus,
)

__all__ = [
    "Anatomy",
    "RealisticFemur",
    "ScanSettings",
    "Specimen",
    "make_realistic_femur",
    "make_realistic_study",
    "DEFAULT_HA_MODEL",
    "AttenuationModel",
    "cs_window_for_levels",
    "grey_from_density",
    "make_ha_phantom",
    "ball",
    "cube_with_cavity",
    "grey_from_mask",
    "plates",
    "random_spheres",
    "random_trabecular",
    "rod_lattice",
    "tilted_plates",
    "torus",
]
