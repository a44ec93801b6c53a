"""The trabecular VOI of the distal femoral metaphysis, placed from the growth plate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ...errors import SegmentationError
from ...spacing import normalize_spacing
from .base import DistalEnd, as_bone, check_distal_end, length_mm
from .cortex import endocortical
from .envelope import CLOSING_MM, MIN_AREA_MM2, envelope_maps
from .plate import (
    FAR_MM,
    MARGIN_MM,
    GrowthPlate,
    decide_end,
    growth_plate_from_profiles,
    slice_profiles,
)

__all__ = ["TrabecularVoi", "auto_trabecular_voi", "proximal_slices", "trabecular_slices"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True, eq=False)
class TrabecularVoi:
    """Automatic trabecular VOI of a rat distal femur.

    Attributes
    ----------
    distal_end : {'first', 'last'}
        The end of the array that is distal (detected or given).
    ref_index : int
        Array index of the growth-plate reference slice.
    z0, z1 : int
        Array index range ``[z0, z1)`` of the VOI slices.
    offset_mm, height_mm : float
        Requested VOI placement (mm proximal of the reference) and length.
    region : (Z, Y, X) ndarray of bool
        Endocortical region of every slice of the input (marrow space and context).
    voi : (Z, Y, X) ndarray of bool
        ``region`` restricted to slices ``z0 .. z1-1``.
    growth_plate : GrowthPlate
        The plate the VOI was placed from.
    profiles : dict of str to (Z,) ndarray
        Per-slice QC profiles: those of the growth plate plus ``cortical_thickness_mm`` (mean
        over the circumference, NaN without envelope) and ``region_area_mm2``.
    """

    distal_end: DistalEnd
    ref_index: int
    z0: int
    z1: int
    offset_mm: float
    height_mm: float
    region: np.ndarray
    voi: np.ndarray
    growth_plate: GrowthPlate
    profiles: dict[str, np.ndarray] = field(default_factory=dict)


def proximal_slices(
    ref_index: int, distal_end: str, nz: int, n_offset: int, n_slices: int
) -> tuple[int, int] | None:
    """Array range ``[z0, z1)`` of ``n_slices`` slices starting ``n_offset`` slices proximal
    of ``ref_index`` (proximal = away from the distal end); None where it leaves the stack."""
    if distal_end == "first":
        z0, z1 = ref_index + n_offset, ref_index + n_offset + n_slices
    else:
        z0, z1 = ref_index - n_offset - n_slices + 1, ref_index - n_offset + 1
    return (z0, z1) if z0 >= 0 and z1 <= nz else None


def trabecular_slices(
    ref_index: int, distal_end: str, nz: int, dz: float, offset_mm: float, height_mm: float
) -> tuple[int, int]:
    """Slices ``[z0, z1)`` of the trabecular VOI: from ``offset_mm`` to ``offset_mm +
    height_mm`` (at least one slice) proximal of the reference; SegmentationError when the
    scan ends before."""
    span = proximal_slices(ref_index, distal_end, nz, int(round(offset_mm / dz)),
                           max(1, int(round(height_mm / dz))))
    if span is None:
        k_ref = ref_index if distal_end == "first" else nz - 1 - ref_index
        raise SegmentationError(
            f"scan ends {(nz - k_ref) * dz:.1f} mm proximal of the growth plate; the VOI needs "
            f"{offset_mm + height_mm:.1f} mm"
        )
    return span


def auto_trabecular_voi(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    offset_mm: float = 1.0,
    height_mm: float = 2.0,
    distal_end: Literal["auto", "first", "last"] = "auto",
) -> TrabecularVoi:
    """Place the trabecular VOI of a rat distal femur automatically.

    Steps: periosteal envelope, distal end (unless given), growth plate and its reference
    slice, endocortical region; the VOI is the endocortical region of the slices from
    ``offset_mm`` to ``offset_mm + height_mm`` proximal of the reference slice.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone, z along the femur.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    offset_mm : float
        Distance of the VOI's first slice proximal of the reference slice (mm, >= 0).
    height_mm : float
        VOI length along the bone (mm, > 0).
    distal_end : {'auto', 'first', 'last'}
        Which end of the stack is distal; ``'auto'`` detects it.

    Returns
    -------
    TrabecularVoi

    Raises
    ------
    ConfigError
        For invalid arguments.
    SegmentationError
        If the distal end cannot be told, no growth plate is found, the scan ends before the
        VOI would, or the VOI is empty.
    """
    bone = as_bone(bone)
    sp = normalize_spacing(spacing)
    check_distal_end(distal_end, allow_auto=True)
    offset_mm = length_mm("offset_mm", offset_mm, "a number >= 0", allow_zero=True)
    height_mm = length_mm("height_mm", height_mm, "a positive number", allow_zero=False)
    nz = bone.shape[0]
    dz = sp[0]
    maps = envelope_maps(bone, sp, CLOSING_MM, MIN_AREA_MM2)
    if not maps.envelope.any():
        raise SegmentationError("no bone cross-section found in the scan")
    prof = slice_profiles(bone, maps, sp, margin_mm=MARGIN_MM, far_mm=FAR_MM)
    if distal_end == "auto":
        end, why = decide_end(prof, dz)
        logger.info("distal end: %s (%s)", end, why)
    else:
        end = distal_end  # type: ignore[assignment]
    gp = growth_plate_from_profiles(
        prof, nz, sp, end, FAR_MM, MARGIN_MM, bone=bone, maps=maps
    )

    z0, z1 = trabecular_slices(gp.ref_index, end, nz, dz, offset_mm, height_mm)
    region, thick = endocortical(bone, maps.envelope, maps.depth, maps.crop, sp)
    voi = np.zeros_like(region)
    voi[z0:z1] = region[z0:z1]
    if not voi.any():
        raise SegmentationError(
            f"the trabecular VOI is empty: no endocortical region in slices {z0}..{z1 - 1}"
        )
    empty = [z for z in range(z0, z1) if not voi[z].any()]
    if len(empty) > 0.1 * (z1 - z0):
        raise SegmentationError(
            f"the trabecular VOI is incomplete: {len(empty)} of {z1 - z0} slices have no "
            "endocortical region"
        )
    profiles = dict(gp.profiles)
    profiles["cortical_thickness_mm"] = thick
    profiles["region_area_mm2"] = region.sum(axis=(1, 2)) * (sp[1] * sp[2])
    logger.info(
        "trabecular VOI: slices %d..%d (%s end distal, reference %d)", z0, z1 - 1, end,
        gp.ref_index,
    )
    return TrabecularVoi(
        distal_end=end,
        ref_index=gp.ref_index,
        z0=z0,
        z1=z1,
        offset_mm=float(offset_mm),
        height_mm=float(height_mm),
        region=region,
        voi=voi,
        growth_plate=gp,
        profiles=profiles,
    )
