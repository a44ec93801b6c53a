"""The trabecular VOI of the distal femoral metaphysis, placed from the growth plate, for a
volume in memory: the same :class:`~.stream.FemurStream` the pipeline streams scans through,
fed the whole volume at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ...errors import SegmentationError
from ...spacing import normalize_spacing
from .base import DistalEnd, as_bone, check_distal_end, length_mm
from .envelope import EnvelopeMaps
from .plate import GrowthPlate
from .profiles import end_by_shape
from .stream import FemurStream, check_voi_slices

__all__ = ["TrabecularVoi", "auto_trabecular_voi", "find_growth_plate", "detect_distal_end"]

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
        The plate the VOI was placed from (its confidence and flags).
    profiles : dict of str to (Z,) ndarray
        Per-slice QC profiles (:class:`~.profiles.SliceProfiles`) plus
        ``cortical_thickness_mm`` (mean over the circumference, NaN without envelope), the
        envelope centroid and ``region_area_mm2``.
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
    stream, maps = _stream(bone, sp)
    found = stream.locate(slices=lambda a, b: bone[a:b], offset_mm=offset_mm,
                          height_mm=height_mm, distal_end=distal_end)
    assert found.plate is not None and found.ref_index is not None  # nothing given by hand
    z0, z1 = found.z0, found.z1
    region = stream.region(bone, 0, found.filled, maps)
    check_voi_slices(region[z0:z1].sum(axis=(1, 2)), z0)
    voi = np.zeros_like(region)
    voi[z0:z1] = region[z0:z1]
    profiles = dict(found.profiles)
    profiles["region_area_mm2"] = region.sum(axis=(1, 2)) * (sp[1] * sp[2])
    return TrabecularVoi(
        distal_end=found.distal_end,  # type: ignore[arg-type]
        ref_index=found.ref_index,
        z0=z0,
        z1=z1,
        offset_mm=float(offset_mm),
        height_mm=float(height_mm),
        region=region,
        voi=voi,
        growth_plate=found.plate,
        profiles=profiles,
    )


def _stream(bone: np.ndarray, sp: tuple[float, float, float]
            ) -> tuple[FemurStream, EnvelopeMaps]:
    """A :class:`FemurStream` fed the whole volume, and the volume's envelope maps."""
    stream = FemurStream(bone.shape, sp)
    maps = stream.maps(bone)
    stream.add(0, bone, maps)
    return stream, maps


def find_growth_plate(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    distal_end: DistalEnd,
) -> GrowthPlate:
    """Find the distal femoral growth plate and its reference slice.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone, z along the femur.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    distal_end : {'first', 'last'}
        Which end of the array is distal.

    Returns
    -------
    GrowthPlate
        With its confidence and named flags (:func:`~.plate.find_plate`).

    Raises
    ------
    ConfigError
        For invalid arguments.
    SegmentationError
        No bone, or no open growth plate (a diaphysis-only scan, a cylinder of sponge, a
        closed plate).
    """
    bone = as_bone(bone)
    sp = normalize_spacing(spacing)
    check_distal_end(distal_end, allow_auto=False)
    stream, _ = _stream(bone, sp)
    return stream.plate(lambda a, b: bone[a:b], distal_end)


def detect_distal_end(
    bone: np.ndarray, *, spacing: float | tuple[float, float, float]
) -> DistalEnd:
    """Which end of the array is distal: the end nearer the growth plate when the plate is at
    least 0.5 mm nearer one end, else the wider end with more trabecular bone (condyles
    versus diaphysis).

    Raises
    ------
    ConfigError
        For invalid arguments.
    SegmentationError
        No bone, or neither the plate nor the shape tells the ends apart.
    """
    bone = as_bone(bone)
    sp = normalize_spacing(spacing)
    stream, _ = _stream(bone, sp)
    try:
        return stream.plate(None).distal_end
    except SegmentationError as exc:
        if not stream.has.any():
            raise
        logger.info("%s; the distal end is told from the bone's shape", exc)
        end, why = end_by_shape(stream.profiles(), sp[0])
        logger.info("distal end: %s (%s)", end, why)
        return end
