"""Per-slice profiles of a femur scan: QC curves, and the distal end told from the bone's shape.

The growth plate is found as a sheet (:mod:`.plate`); the per-slice profiles here are its QC
companions: in each slice, the envelope area, the interior (the envelope without its outer
:data:`MARGIN_MM`), its bone fraction, and its "cartilage-like" part (interior non-bone
farther than :data:`FAR_MM` from any bone of the slice). :func:`end_by_shape` tells the
distal end when the plate cannot (it is about as far from both ends): the condyles are wider
and hold more trabecular bone than the diaphysis.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ...errors import SegmentationError
from .base import DistalEnd
from .envelope import EnvelopeMaps

__all__ = ["MARGIN_MM", "FAR_MM", "SliceProfiles", "slice_counts",
           "profiles_from_counts", "slice_profiles", "end_by_shape"]

logger = logging.getLogger(__name__)

#: Interior = envelope eroded by this (mm): excludes the cortex near the plate.
MARGIN_MM = 0.15
#: Cartilage-like: interior non-bone farther than this (mm) from any bone in the slice.
FAR_MM = 0.10
#: Window (mm) at each end used to tell the distal end from its shape.
_END_WINDOW_MM = 0.5


@dataclass
class SliceProfiles:
    """Per-slice profiles of a scan (``(Z,)`` arrays in array order); see the module notes."""

    envelope_area: np.ndarray  # mm²
    interior_area: np.ndarray  # mm²
    interior_bone: np.ndarray  # fraction
    cartilage_area: np.ndarray  # mm²
    cartilage_fraction: np.ndarray  # fraction, NaN where no usable interior
    valid: np.ndarray  # bool: slice has a usable interior

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "envelope_area_mm2": self.envelope_area,
            "interior_area_mm2": self.interior_area,
            "interior_bone_fraction": self.interior_bone,
            "cartilage_area_mm2": self.cartilage_area,
            "cartilage_fraction": self.cartilage_fraction,
        }


def slice_counts(
    bone: np.ndarray, maps: EnvelopeMaps, *, margin_mm: float, far_mm: float
) -> dict[str, np.ndarray]:
    """Per-slice pixel counts behind the growth-plate profiles (every slice on its own, so
    the counts of a slab equal those of the same slices of the whole scan): ``envelope``,
    ``interior``, ``interior_bone`` and ``cartilage`` (interior non-bone farther than
    ``far_mm`` from any bone of the slice; slices without bone: all far)."""
    ys, xs = maps.crop
    env = maps.envelope[:, ys, xs]
    interior = maps.depth > np.float32(margin_mm)
    far = interior & (maps.dist_bone2 > np.float32(far_mm**2))
    return {
        "envelope": np.count_nonzero(env, axis=(1, 2)),
        "interior": np.count_nonzero(interior, axis=(1, 2)),
        "interior_bone": np.count_nonzero(interior & bone[:, ys, xs], axis=(1, 2)),
        "cartilage": np.count_nonzero(far, axis=(1, 2)),
    }


def profiles_from_counts(counts: dict[str, np.ndarray], sp: tuple[float, ...]) -> SliceProfiles:
    """:class:`SliceProfiles` of a whole scan from its per-slice :func:`slice_counts`."""
    pix = sp[1] * sp[2]
    int_px = np.asarray(counts["interior"])
    int_bone = np.asarray(counts["interior_bone"])
    cart_px = np.asarray(counts["cartilage"])
    # a usable interior: at least a quarter of the typical interior of the scan
    ref_area = np.percentile(int_px[int_px > 0], 75) if np.any(int_px > 0) else 0
    valid = (int_px > 0) & (int_px >= 0.25 * ref_area)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(valid, cart_px / np.maximum(int_px, 1), np.nan)
        ibf = np.where(int_px > 0, int_bone / np.maximum(int_px, 1), np.nan)
    return SliceProfiles(
        envelope_area=(np.asarray(counts["envelope"]) * pix).astype(np.float64),
        interior_area=int_px * pix,
        interior_bone=ibf,
        cartilage_area=cart_px * pix,
        cartilage_fraction=frac,
        valid=valid,
    )


def slice_profiles(
    bone: np.ndarray, maps: EnvelopeMaps, sp: tuple[float, ...], *, margin_mm: float, far_mm: float
) -> SliceProfiles:
    """:class:`SliceProfiles` of an in-memory volume with its envelope maps."""
    return profiles_from_counts(
        slice_counts(bone, maps, margin_mm=margin_mm, far_mm=far_mm), sp
    )


def end_by_shape(prof: SliceProfiles, dz: float) -> tuple[DistalEnd, str]:
    """The distal end from the bone's shape: the end whose outer 0.5 mm is wider and holds
    more trabecular bone (condyles, epiphysis) than the other (diaphysis).

    Raises
    ------
    SegmentationError
        Too few slices with a bone cross-section, or ends that look alike.
    """
    idx = np.flatnonzero(prof.valid)
    if idx.size < 4:
        raise SegmentationError(
            "cannot tell which end is distal: too few slices with a bone cross-section"
        )
    w = max(2, int(round(_END_WINDOW_MM / dz)))
    w = min(w, idx.size // 2)
    head, tail = idx[:w], idx[-w:]
    area = prof.envelope_area
    ibf = np.nan_to_num(prof.interior_bone)
    s_area = math.log(max(area[head].mean(), 1e-9) / max(area[tail].mean(), 1e-9))
    s_bone = math.log((ibf[head].mean() + 0.02) / (ibf[tail].mean() + 0.02))
    score = s_area + s_bone
    logger.debug("distal-end score %.3f (area %.3f, bone %.3f)", score, s_area, s_bone)
    if abs(score) < 0.15:
        raise SegmentationError(
            "cannot tell which end is distal: both ends look alike (cross-section area and "
            "interior bone); give the distal end explicitly (--distal-end first|last)"
        )
    end = "first" if score > 0 else "last"
    return end, f"the {end} end is wider and holds more trabecular bone (score {score:.2f})"
