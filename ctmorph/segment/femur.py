"""Rat distal femur: bone envelope, distal end, growth plate and the trabecular VOI.

Everything here works on an already segmented boolean bone volume ``(Z, Y, X)`` with
``spacing=(dz, dy, dx)`` in mm, z along the bone. All lengths are in mm so the rules hold at any
voxel size.

The VOI follows the usual metaphyseal convention for the rat distal femur (Bouxsein et al.
2010): the reference is the proximal boundary of the growth plate, i.e. the first slice, moving
proximally, that holds no growth-plate cartilage; the VOI starts ``offset_mm`` proximal of it,
is ``height_mm`` long, and covers the endocortical (marrow-side) region only.

Notes
-----
Cartilage has soft-tissue attenuation in µCT, so it looks like marrow. What sets the growth
plate apart is its shape: a continuous sheet spanning the whole interior of the bone, whereas
the marrow next to it (epiphysis distally, dense primary spongiosa proximally) comes in small
pores between trabeculae. Per slice, the "cartilage area" is therefore the interior non-bone
area farther than ``far_mm`` from any bone in the slice plane (2-D Euclidean distance). The
plate is the sharpest such band near the distal end, bounded by bone on both sides (epiphysis,
primary spongiosa); where the area falls to about zero proximal of it, the last remnants of a
wavy or tilted plate (crests and crescents too narrow to hold pixels ``far_mm`` from bone) are
followed slice by slice while they keep tapering, and the reference is the first slice after
them.

The distal end is the end nearer to the growth plate (or, without a plate seen from both
ends, the wider end with more trabecular bone: condyles versus diaphysis). The endocortical
region comes from bone-fraction-versus-depth profiles in angular sectors (see
:func:`endocortical_region`).

References: Bouxsein M.L. et al. (2010) Guidelines for assessment of bone microstructure in
rodents using micro-computed tomography. J Bone Miner Res 25:1468-1486.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from .._kernels.edt import squared_edt
from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing

__all__ = [
    "GrowthPlate",
    "TrabecularVoi",
    "periosteal_envelope",
    "detect_distal_end",
    "find_growth_plate",
    "endocortical_region",
    "auto_trabecular_voi",
    "proximal_slices",
    "trabecular_slices",
]

logger = logging.getLogger(__name__)

DistalEnd = Literal["first", "last"]

# Defaults of the growth-plate profile (mm) and of its band search.
_MARGIN_MM = 0.15  # interior = envelope eroded by this (excludes the cortex near the plate)
_FAR_MM = 0.10  # cartilage-like: non-bone farther than this from any bone in the slice
_HI = 0.30  # cartilage fraction of the interior that marks the plate core
_LO = 0.02  # ... and the level the reference slice must fall to
_MAX_PLATE_MM = 0.8  # longest accepted plate core (a tilted plate spans more slices)
_SUPPORT_MM = 0.3  # window distal/proximal of the core searched for bone on either side
_END_WINDOW_MM = 0.5  # window at each end used to tell the distal end from its shape
_TAIL_MM = 0.05  # cartilage remnants: non-bone farther than this from bone ...
_TAIL_DEPTH_MM = 0.08  # ... and deeper than this below the periosteal surface ...
_TAIL_MIN_MM2 = 0.003  # ... of at least this area, followed for at most
_TAIL_MAX_MM = 0.12  # this far proximally
_MIN_CONTRAST = 0.35  # weakest accepted plate contrast (a bridged, wavy plate peaks ~0.45)
_ENDO_MARGIN_VOX = 2.0  # the endocortical margin is at most this many in-plane voxels
_CLOSING_MM = 0.05  # envelope closing radius
_MIN_AREA_MM2 = 0.01  # smallest envelope cross-section kept
_BIG = 1.0e12  # squared "voxel size" along z that decouples slices in the EDT kernel


@dataclass(frozen=True, eq=False)
class GrowthPlate:
    """Growth plate found in a distal femur scan.

    Attributes
    ----------
    ref_index : int
        Array index of the reference slice: the first slice, moving proximally from the distal
        end, that holds no growth-plate cartilage (the proximal boundary of the plate).
    distal_index, proximal_index : int
        Array indices of the most distal and the most proximal slice judged to hold cartilage.
    distal_end : {'first', 'last'}
        The end of the array that is distal.
    thickness_mm : float
        Extent of the plate along z (mm), from ``distal_index`` to ``proximal_index``.
    profiles : dict of str to (Z,) ndarray
        Per-slice QC profiles in array order: ``envelope_area_mm2``, ``interior_area_mm2``,
        ``interior_bone_fraction``, ``cartilage_area_mm2``, ``cartilage_fraction`` (NaN where
        the slice has no usable interior).
    far_mm, margin_mm : float
        Parameters of the cartilage profile.
    """

    ref_index: int
    distal_index: int
    proximal_index: int
    distal_end: DistalEnd
    thickness_mm: float
    profiles: dict[str, np.ndarray] = field(default_factory=dict)
    far_mm: float = _FAR_MM
    margin_mm: float = _MARGIN_MM


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


# --------------------------------------------------------------------------------------------
# helpers


def _as_bone(bone: np.ndarray) -> np.ndarray:
    arr = np.asarray(bone)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ConfigError(f"bone must be a non-empty (Z, Y, X) array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise ConfigError(f"bone must be a boolean (Z, Y, X) array, got dtype {arr.dtype}")


def _length_mm(name: str, value: object, what: str, *, allow_zero: bool) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        x = float("nan")
    if not (math.isfinite(x) and (x >= 0 if allow_zero else x > 0)):
        raise ConfigError(f"{name} must be {what} (mm), got {value!r}")
    return x


def _check_distal_end(distal_end: str, *, allow_auto: bool) -> str:
    allowed = ("auto", "first", "last") if allow_auto else ("first", "last")
    if distal_end not in allowed:
        raise ConfigError(f"distal_end must be one of {', '.join(allowed)}, got {distal_end!r}")
    return distal_end


def _bbox_yx(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """In-plane bounding box of ``mask`` over all slices, grown by ``pad`` pixels."""
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    ny, nx = mask.shape[1:]
    return (
        slice(max(0, rows[0] - pad), min(ny, rows[-1] + pad + 1)),
        slice(max(0, cols[0] - pad), min(nx, cols[-1] + pad + 1)),
    )


def _inplane_sq_edt(phase: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Squared 2-D Euclidean distance (mm²) from each phase pixel to the nearest background
    pixel of the same slice; 0 on background, ``inf`` in slices without background.

    One call of the 3-D kernel with a huge z voxel size: a pixel's nearest background is then
    always in its own slice when that slice has any.
    """
    ph = np.ascontiguousarray(phase, dtype=np.uint8)
    out = np.empty(ph.shape, dtype=np.float32)
    w2 = np.array([_BIG, spacing[1] ** 2, spacing[2] ** 2], dtype=np.float64)
    squared_edt(ph, w2, out)
    out[out > _BIG * 0.5] = np.inf
    return out


def _label_inplane(mask: np.ndarray, *, full: bool = True) -> tuple[np.ndarray, int, np.ndarray]:
    """8-connected (``full``) or 4-connected components within each slice, never across
    slices.

    Returns the labels, their number and, per slice, the highest label used so far (labels
    are numbered in raster order, so the labels of slice ``z`` are
    ``last[z-1] + 1 .. last[z]``).
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True if full else ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(mask, structure=structure)
    last = np.maximum.accumulate(lab.reshape(lab.shape[0], -1).max(axis=1))
    return lab, n, last


@dataclass
class _Maps:
    """Envelope and distance maps of a scan, on the in-plane crop ``crop``."""

    envelope: np.ndarray  # (Z, Y, X) bool, full size
    crop: tuple[slice, slice]
    depth: np.ndarray  # crop: depth below the periosteal surface (mm), 0 outside
    dist_bone2: np.ndarray  # crop: squared in-plane distance to the nearest bone (mm²)


def _envelope_maps(
    bone: np.ndarray, sp: tuple[float, ...], closing_mm: float, min_area_mm2: float
) -> _Maps:
    """Closing as dilation, hole filling, largest component, erosion: two EDTs in all.

    The distance to bone gives the dilation by ``closing_mm``; after filling holes and
    keeping the largest component of each slice, the depth map ``D`` of the filled dilated
    region gives both the erosion (``D > r``) and the depth below the periosteal surface of
    the eroded region (``D - r``, exact for Euclidean distances).
    """
    nz = bone.shape[0]
    pad = int(math.ceil(closing_mm / min(sp[1:]))) + 2
    ys, xs = _bbox_yx(bone, pad)
    b = bone[:, ys, xs]
    envelope = np.zeros(bone.shape, dtype=bool)
    if b.size == 0 or not b.any():
        z = np.zeros(b.shape, dtype=np.float32)
        return _Maps(envelope, (ys, xs), z, np.full(b.shape, np.inf, dtype=np.float32))
    dist_bone2 = _inplane_sq_edt(~b, sp)
    dilated = dist_bone2 <= np.float32(closing_mm**2)
    # fill holes: background components (in-plane) that reach the slice border outside the
    # convex hull of the slice's bone. A marrow cavity cut open by the field-of-view edge
    # reaches the border only between the cortex ends, i.e. inside the hull, and is filled;
    # soft tissue and air reach it outside the hull.
    lab, n, _ = _label_inplane(~dilated, full=False)  # background: 4-connected
    outside = np.zeros(n + 1, dtype=bool)
    rim = np.zeros(dilated.shape[1:], dtype=bool)
    rim[0, :] = rim[-1, :] = rim[:, 0] = rim[:, -1] = True
    for z in range(lab.shape[0]):
        open_rim = rim
        if dilated[z][rim].any():  # bone reaches the border of the crop (= of the image)
            open_rim = rim & ~convex_hull_image(dilated[z])
        outside[lab[z][open_rim]] = True
    outside[0] = True  # label 0 is the foreground itself
    filled = dilated | ~outside[lab]
    del lab, dilated
    # keep the largest component of each slice
    lab, n, last = _label_inplane(filled)
    del filled
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    slice_of = np.searchsorted(last, np.arange(n + 1), side="left")
    order = np.lexsort((-sizes, slice_of))  # per slice, largest first
    keep = np.zeros(n + 1, dtype=bool)
    first_of_slice = np.ones(order.size, dtype=bool)
    first_of_slice[1:] = slice_of[order[1:]] != slice_of[order[:-1]]
    min_px = (min_area_mm2 + math.pi * closing_mm**2) / (sp[1] * sp[2])
    winners = order[first_of_slice]
    keep[winners[(winners > 0) & (sizes[winners] >= min_px)]] = True
    main = keep[lab]
    del lab
    depth = np.sqrt(_inplane_sq_edt(main, sp))
    if closing_mm > 0:
        depth -= np.float32(closing_mm)
        np.maximum(depth, 0.0, out=depth)
        envelope[:, ys, xs] = depth > 0
    else:
        envelope[:, ys, xs] = main
    logger.debug("envelope: %d of %d slices", int(envelope.any(axis=(1, 2)).sum()), nz)
    return _Maps(envelope, (ys, xs), depth, dist_bone2)


# --------------------------------------------------------------------------------------------
# envelope


def periosteal_envelope(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    closing_mm: float = _CLOSING_MM,
    min_area_mm2: float = _MIN_AREA_MM2,
) -> np.ndarray:
    """Region enclosed by the periosteal surface, slice by slice.

    Per slice: morphological closing with a disk of radius ``closing_mm`` (bridges cortical
    pores and gaps up to twice that wide), filling of holes, and the largest 8-connected
    component (drops the patella, fibula fragments and debris).

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    closing_mm : float
        Closing radius in mm (0 = no closing).
    min_area_mm2 : float
        Slices whose largest component is smaller (mm²) get an empty envelope.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The filled periosteal envelope.

    Notes
    -----
    The closing is done as dilation, hole filling and erosion (so holes are filled in the
    dilated region); with Euclidean distance transforms this costs two transforms in all.
    """
    bone = _as_bone(bone)
    sp = normalize_spacing(spacing)
    if not (math.isfinite(closing_mm) and closing_mm >= 0):
        raise ConfigError(f"closing_mm must be >= 0 (mm), got {closing_mm!r}")
    return _envelope_maps(bone, sp, closing_mm, min_area_mm2).envelope


# --------------------------------------------------------------------------------------------
# per-slice profiles and the band search


@dataclass
class _Profiles:
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


def _slice_counts(
    bone: np.ndarray, maps: _Maps, *, margin_mm: float, far_mm: float
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


def _profiles_from_counts(counts: dict[str, np.ndarray], sp: tuple[float, ...]) -> _Profiles:
    """:class:`_Profiles` of a whole scan from its per-slice :func:`_slice_counts`."""
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
    return _Profiles(
        envelope_area=(np.asarray(counts["envelope"]) * pix).astype(np.float64),
        interior_area=int_px * pix,
        interior_bone=ibf,
        cartilage_area=cart_px * pix,
        cartilage_fraction=frac,
        valid=valid,
    )


def _profiles(
    bone: np.ndarray, maps: _Maps, sp: tuple[float, ...], *, margin_mm: float, far_mm: float
) -> _Profiles:
    return _profiles_from_counts(
        _slice_counts(bone, maps, margin_mm=margin_mm, far_mm=far_mm), sp
    )


@dataclass(frozen=True)
class _Band:
    first: int  # distal-first coordinates: first slice holding cartilage
    last: int  # last slice holding cartilage
    ref: int  # first slice without
    contrast: float  # peak cartilage fraction minus the floor next to the band


def _find_band(prof: _Profiles, dz: float, reverse: bool) -> tuple[_Band | None, str]:
    """Search the plate in distal-first order. Returns the band or None and why not.

    Candidates are runs of slices whose cartilage fraction is above half of ``_HI`` and
    reaches ``_HI``, at most ``_MAX_PLATE_MM`` long, with bone-filled interior within
    ``_SUPPORT_MM`` distal of them and a drop to about zero within ``_SUPPORT_MM`` proximal
    of them. Of these, the plate is the most distal one whose contrast (peak fraction minus
    the floor within 0.1 mm on either side) is at least 0.5 and 70 % of the best contrast:
    the plate is a sharp sheet, pores of the epiphysis or of an osteopenic metaphysis give
    weaker, smoother bands.
    """
    f = prof.cartilage_fraction[::-1] if reverse else prof.cartilage_fraction
    ibf = prof.interior_bone[::-1] if reverse else prof.interior_bone
    valid = prof.valid[::-1] if reverse else prof.valid
    n = f.size
    hi = valid & (f >= _HI)
    mid = valid & (f >= _HI / 2)
    lo = valid & (f <= _LO)
    n_sup = max(2, int(round(_SUPPORT_MM / dz)))
    n_near = max(2, int(round(0.1 / dz)))
    n_max = max(1, int(round(_MAX_PLATE_MM / dz)))
    reasons: list[str] = []
    found: list[_Band] = []
    k = 0
    while k < n:
        if not mid[k]:
            k += 1
            continue
        a = k
        while k < n and mid[k]:
            k += 1
        b = k - 1  # core [a, b]: above half the plate level, with a slice above the level
        if not hi[a : b + 1].any():
            continue
        # distal support: bone-filled interior (epiphysis) just distal of the core
        lo_d = max(0, a - n_sup)
        distal_ok = valid[lo_d:a] & (f[lo_d:a] < _HI / 2) & (ibf[lo_d:a] >= 0.05)
        if np.count_nonzero(distal_ok) < max(2, n_sup // 6):
            reasons.append(f"no bone distal of a cartilage-like band at {a * dz:.2f} mm")
            continue
        if b - a + 1 > n_max:
            reasons.append(
                f"cartilage-like band at {a * dz:.2f} mm is {(b - a + 1) * dz:.2f} mm long"
            )
            continue
        # proximal boundary: first slice after the core where the cartilage area is ~0; where
        # the primary spongiosa leaves a few wide pores, the first slice at the floor level
        ref = None
        window = np.arange(b + 1, min(n, b + 1 + n_sup))
        window = window[valid[window]]
        if window.size:
            stop = np.flatnonzero(f[window] >= _HI)  # a new core: leave it to the outer loop
            if stop.size:
                window = window[: stop[0]]
        if window.size:
            floor = float(np.min(f[window]))
            if floor <= _LO:
                ref = int(window[np.argmax(lo[window])])
            elif floor < _HI / 3:
                ref = int(window[np.argmax(f[window] <= 1.5 * floor)])
        if ref is None:
            reasons.append(f"cartilage-like band at {a * dz:.2f} mm does not end in bone")
            continue
        near_d = np.arange(max(0, a - n_near), a)
        near_d = near_d[valid[near_d]]
        near_p = np.arange(ref, min(n, ref + n_near))
        near_p = near_p[valid[near_p]]
        floor_d = float(np.min(f[near_d])) if near_d.size else 1.0
        floor_p = float(np.min(f[near_p])) if near_p.size else 1.0
        contrast = float(np.max(f[a : b + 1])) - max(floor_d, floor_p)
        # distal boundary for QC: extend the core distally while the fraction is >= _HI / 3
        first = a
        while first - 1 >= 0 and valid[first - 1] and f[first - 1] >= _HI / 3:
            first -= 1
        found.append(_Band(first=first, last=ref - 1, ref=ref, contrast=contrast))
    if found:
        best = max(c.contrast for c in found)
        good = [c for c in found if c.contrast >= max(_MIN_CONTRAST, 0.7 * best)]
        if good:
            return good[0], ""
        reasons.append(
            f"cartilage-like bands are faint (contrast {best:.2f} < {_MIN_CONTRAST})"
        )
    if not reasons:
        reasons.append("no slice where cartilage-like marrow spans the interior")
    return None, "; ".join(reasons[:3])


def _to_array_index(k: int, n: int, distal_end: str) -> int:
    return k if distal_end == "first" else n - 1 - k


def _decide_end(prof: _Profiles, dz: float) -> tuple[DistalEnd, str]:
    band_first, _ = _find_band(prof, dz, reverse=False)
    band_last, _ = _find_band(prof, dz, reverse=True)
    idx = np.flatnonzero(prof.valid)
    if band_first is not None and band_last is None:
        return "first", "growth plate found from the first end only"
    if band_last is not None and band_first is None:
        return "last", "growth plate found from the last end only"
    if band_first is not None and band_last is not None:
        n = prof.valid.size
        # the same plate seen from both sides: the distal end is the one nearer to it
        lo_a, hi_a = band_first.first, band_first.last
        lo_b, hi_b = n - 1 - band_last.last, n - 1 - band_last.first
        if lo_a <= hi_b + 2 and lo_b <= hi_a + 2:
            centre = 0.5 * (lo_a + hi_a)
            d_first = (centre - idx[0]) * dz
            d_last = (idx[-1] - centre) * dz
            if abs(d_first - d_last) >= 0.5:
                end: DistalEnd = "first" if d_first < d_last else "last"
                return end, (
                    f"growth plate {min(d_first, d_last):.2f} mm from the {end} end and "
                    f"{max(d_first, d_last):.2f} mm from the other"
                )
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


# --------------------------------------------------------------------------------------------
# public API


def detect_distal_end(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
) -> DistalEnd:
    """Tell which end of a distal-femur stack is distal.

    The distal end has the growth plate near it, the wide condyles and trabecular bone; the
    other end is diaphysis-like (a narrower tube with empty marrow). A growth plate found from
    one end only decides; otherwise the mean cross-section area and interior bone fraction of
    the outer 0.5 mm at each end are compared.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.

    Returns
    -------
    {'first', 'last'}
        ``'first'`` if slice 0 is distal.

    Raises
    ------
    SegmentationError
        If the ends cannot be told apart.
    """
    bone = _as_bone(bone)
    sp = normalize_spacing(spacing)
    maps = _envelope_maps(bone, sp, _CLOSING_MM, _MIN_AREA_MM2)
    if not maps.envelope.any():
        raise SegmentationError("cannot tell which end is distal: no bone cross-section found")
    prof = _profiles(bone, maps, sp, margin_mm=_MARGIN_MM, far_mm=_FAR_MM)
    end, why = _decide_end(prof, sp[0])
    logger.info("distal end: %s (%s)", end, why)
    return end


def find_growth_plate(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    distal_end: DistalEnd,
    far_mm: float = _FAR_MM,
    margin_mm: float = _MARGIN_MM,
) -> GrowthPlate:
    """Find the distal femoral growth plate and its proximal boundary (the reference slice).

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    distal_end : {'first', 'last'}
        Which end of the array is distal.
    far_mm : float
        Non-bone farther than this (mm, in the slice plane) from any bone counts as
        cartilage-like.
    margin_mm : float
        The interior is the envelope eroded by this (mm), excluding the cortex.

    Returns
    -------
    GrowthPlate

    Raises
    ------
    SegmentationError
        If no growth plate is found (e.g. a diaphysis-only scan, a cylinder of sponge).

    Notes
    -----
    See the module notes for the cartilage profile. The band must be at most 0.8 mm long,
    have trabecular bone within 0.3 mm distal of it (epiphysis), and fall to a cartilage area
    of at most 2 % of the interior within 0.3 mm proximal of it (primary spongiosa); the
    remnants of a wavy or tilted plate are then followed for at most 0.12 mm while they
    taper. On synthetic femurs (:func:`ctmorph.phantoms.femur.make_femur`, wavy and tilted
    plates, 9 and 12 µm voxels) the reference is within 0.03 mm of the truth.
    """
    bone = _as_bone(bone)
    sp = normalize_spacing(spacing)
    _check_distal_end(distal_end, allow_auto=False)
    far_mm = _length_mm("far_mm", far_mm, "positive", allow_zero=False)
    margin_mm = _length_mm("margin_mm", margin_mm, "positive", allow_zero=False)
    maps = _envelope_maps(bone, sp, _CLOSING_MM, _MIN_AREA_MM2)
    prof = _profiles(bone, maps, sp, margin_mm=margin_mm, far_mm=far_mm)
    return _growth_plate_from_profiles(
        prof, bone.shape[0], sp, distal_end, far_mm, margin_mm, bone=bone, maps=maps
    )


def _follow_tail(
    maps: _Maps, sp: tuple[float, ...], seed_k: int, step: int, far_mm: float
) -> int:
    """Follow the last cartilage remnants proximally from array slice ``seed_k``.

    Where the plate is wavy or tilted, its proximal surface ends in crests and crescents too
    narrow to hold pixels ``far_mm`` from bone. Starting from the cartilage-like area of
    ``seed_k``, each next slice keeps the non-bone pixels (more than ``_TAIL_MM`` from bone,
    below the thin perichondrial ring) inside the previous slice's remnant grown by one
    pixel, as long as the remnant keeps shrinking by at least 5 % per slice (crests and
    crescents taper; a marrow channel keeps its size), is at least ``_TAIL_MIN_MM2`` and
    ``_TAIL_MAX_MM`` is not exceeded. Returns the number of slices followed.
    """
    nz = maps.depth.shape[0]
    r_far2 = np.float32(far_mm**2)
    r_t2 = np.float32(_TAIL_MM**2)
    min_px = _TAIL_MIN_MM2 / (sp[1] * sp[2])
    n_max = int(round(_TAIL_MAX_MM / sp[0]))
    grow = np.ones((3, 3), dtype=bool)

    def candidates(k: int) -> np.ndarray:
        return (maps.depth[k] > _TAIL_DEPTH_MM) & (maps.dist_bone2[k] > r_t2)

    # seed: the tail-criterion components of seed_k that hold cartilage-like (far) pixels
    cand = candidates(seed_k)
    lab, _ = ndimage.label(cand, structure=grow)
    far = (maps.depth[seed_k] > _MARGIN_MM) & (maps.dist_bone2[seed_k] > r_far2)
    hit = np.unique(lab[far & cand])
    prev = np.isin(lab, hit[hit > 0])
    followed = 0
    k = seed_k + step
    while 0 <= k < nz and followed < n_max:
        keep = candidates(k) & ndimage.binary_dilation(prev, grow)  # remnants taper
        area = np.count_nonzero(keep)
        if area < min_px or area > 0.95 * np.count_nonzero(prev):  # gone, or not tapering
            break
        prev = keep
        followed += 1
        k += step
    return followed


def _growth_plate_from_profiles(
    prof: _Profiles, nz: int, sp: tuple[float, ...], distal_end: str, far_mm: float,
    margin_mm: float, bone: np.ndarray | None = None, maps: _Maps | None = None,
    tail: Callable[[int, int], int] | None = None,
) -> GrowthPlate:
    """The plate from whole-scan profiles; the remnants past the band are followed on
    ``maps`` or, for a streamed scan, by ``tail(seed_index, step)`` (slices followed)."""
    if tail is None and bone is not None and maps is not None:
        def tail(seed_index: int, step: int) -> int:
            return _follow_tail(maps, sp, seed_index, step, far_mm)

    if not prof.valid.any():
        raise SegmentationError("no growth plate found: no bone cross-section in the scan")
    band, why = _find_band(prof, sp[0], reverse=(distal_end == "last"))
    if band is None:
        raise SegmentationError(
            f"no growth plate found from the {distal_end} (distal) end: {why}"
        )
    ref = band.ref
    if tail is not None:
        # seed: the last slice before the reference that still has cartilage-like area
        step = 1 if distal_end == "first" else -1
        seed = band.ref - 1
        while seed > band.first and prof.cartilage_area[_to_array_index(seed, nz, distal_end)] <= 0:
            seed -= 1
        extra = tail(_to_array_index(seed, nz, distal_end), step)
        ref = max(band.ref, seed + extra + 1)
    gp = GrowthPlate(
        ref_index=_to_array_index(ref, nz, distal_end),
        distal_index=_to_array_index(band.first, nz, distal_end),
        proximal_index=_to_array_index(ref - 1, nz, distal_end),
        distal_end=distal_end,  # type: ignore[arg-type]
        thickness_mm=(ref - band.first) * sp[0],
        profiles=prof.as_dict(),
        far_mm=far_mm,
        margin_mm=margin_mm,
    )
    logger.info(
        "growth plate: slices %d (distal) to %d (proximal), %.2f mm; reference slice %d",
        gp.distal_index, gp.proximal_index, gp.thickness_mm, gp.ref_index,
    )
    return gp


def endocortical_region(
    bone: np.ndarray,
    envelope: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    n_sectors: int = 24,
    level: float = 0.8,
    margin_mm: float = 0.02,
    smooth_mm: float = 0.1,
    max_cortex_mm: float = 1.0,
) -> np.ndarray:
    """Marrow-side region inside the cortex, slice by slice.

    In each of ``n_sectors`` angular sectors around the envelope centroid, the bone fraction
    is tabulated against depth below the periosteal surface (2-D Euclidean distance, bins of
    one pixel). The cortex is the outer depth band where the fraction is about 1; its
    thickness is the depth where the fraction first drops below ``level``. The thickness map
    (slice x sector) is then cleaned: a grey-scale closing over 3 sectors x 3 slices fills
    pits (cortical pores), and the 35th percentile over 7 sectors x ``2 smooth_mm`` removes
    bumps (trabeculae joining the endocortical surface, which would otherwise push the
    boundary into the marrow and bias BV/TV low). The thickness is interpolated around the
    circumference, and the region is everything deeper than thickness + ``margin_mm``.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    envelope : (Z, Y, X) ndarray of bool
        :func:`periosteal_envelope` of ``bone``.
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    n_sectors : int
        Angular sectors per slice.
    level : float
        Bone fraction below which a depth bin is no longer cortex.
    margin_mm : float
        Extra depth (mm) excluded beyond the endocortical boundary, so no cortex leaks in.
    smooth_mm : float
        Half-length (mm) of the percentile filter of the thickness map along z.
    max_cortex_mm : float
        Deepest cortex considered (mm).

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Endocortical region (includes trabecular bone and marrow).
    """
    bone = _as_bone(bone)
    sp = normalize_spacing(spacing)
    env = np.asarray(envelope, dtype=bool)
    if env.shape != bone.shape:
        raise ConfigError(f"envelope shape {env.shape} differs from the bone shape {bone.shape}")
    crop = _bbox_yx(env, 2)
    depth = np.sqrt(_inplane_sq_edt(env[:, crop[0], crop[1]], sp))
    region, _ = _endocortical(
        bone, env, depth, crop, sp, n_sectors=n_sectors, level=level, margin_mm=margin_mm,
        smooth_mm=smooth_mm, max_cortex_mm=max_cortex_mm,
    )
    return region


def _angle_maps(ny: int, nx: int, sp: tuple[float, ...]) -> np.ndarray:
    """Angles (rad) of pixel offsets on a grid twice the crop size; the map for a centre at
    integer pixel (cy, cx) is the view ``[ny - cy : 2 ny - cy, nx - cx : 2 nx - cx]``."""
    dy = (np.arange(2 * ny) - ny) * sp[1]
    dx = (np.arange(2 * nx) - nx) * sp[2]
    return np.arctan2(dy[:, None], dx[None, :]).astype(np.float32)


def _endocortical(
    bone: np.ndarray,
    envelope: np.ndarray,
    depth: np.ndarray,
    crop: tuple[slice, slice],
    sp: tuple[float, ...],
    *,
    n_sectors: int = 24,
    level: float = 0.8,
    margin_mm: float = 0.02,
    smooth_mm: float = 0.1,
    max_cortex_mm: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Endocortical region and mean cortical thickness per slice; ``depth`` (mm) is given on
    the in-plane ``crop``."""
    if n_sectors < 4 or not 0 < level < 1 or margin_mm < 0 or smooth_mm < 0:
        raise ConfigError(
            "n_sectors must be >= 4, level within (0, 1), margin_mm and smooth_mm >= 0; got "
            f"{n_sectors!r}, {level!r}, {margin_mm!r}, {smooth_mm!r}"
        )
    thick, has = _sector_thickness(
        bone, envelope, depth, crop, sp, n_sectors=n_sectors, level=level,
        max_cortex_mm=max_cortex_mm,
    )
    if not has.any():
        return np.zeros(bone.shape, dtype=bool), np.full(bone.shape[0], np.nan)
    filled, thick_mean = _smooth_sector_thickness(thick, has, sp, smooth_mm=smooth_mm)
    region = _region_rows(envelope, depth, crop, filled, sp, margin_mm=margin_mm)
    return region, thick_mean


def _centroids(
    env: np.ndarray, crop: tuple[slice, slice], origin: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Envelope centroid pixel of every slice in crop coordinates.

    The centroid is rounded half-to-even in the coordinates of a frame starting at pixel
    ``origin`` (default: the image's pixel (0, 0)), computed in integers, so any crop or slab
    of a scan rounds exactly as the whole scan does (ties at .5 occur).
    """
    ny, nx = env.shape[1:]
    y0, x0 = crop[0].start or 0, crop[1].start or 0
    oy, ox = (0, 0) if origin is None else origin
    area = np.count_nonzero(env, axis=(1, 2)).astype(np.int64)
    sy = env.sum(axis=2) @ np.arange(ny) + (y0 - oy) * area
    sx = env.sum(axis=1) @ np.arange(nx) + (x0 - ox) * area
    den = np.maximum(area, 1).astype(np.float64)
    cy = np.rint(sy / den).astype(np.intp) + (oy - y0)
    cx = np.rint(sx / den).astype(np.intp) + (ox - x0)
    return cy, cx


def _sector_thickness(
    bone: np.ndarray,
    envelope: np.ndarray,
    depth: np.ndarray,
    crop: tuple[slice, slice],
    sp: tuple[float, ...],
    *,
    n_sectors: int = 24,
    level: float = 0.8,
    max_cortex_mm: float = 1.0,
    origin: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw cortical thickness (mm) per slice and angular sector, NaN in empty sectors, and
    whether each slice has an envelope. Every slice on its own (streamable)."""
    nz = bone.shape[0]
    thick = np.full((nz, n_sectors), np.nan)
    ys, xs = crop
    env = envelope[:, ys, xs]
    if env.size == 0 or not env.any():
        return thick, np.zeros(nz, dtype=bool)
    b = bone[:, ys, xs]
    ny, nx = env.shape[1:]
    h = min(sp[1], sp[2])
    n_bins = int(math.ceil(max_cortex_mm / h)) + 1
    has = np.count_nonzero(env, axis=(1, 2)) > 0
    cy, cx = _centroids(env, crop, origin)
    angles = _angle_maps(ny, nx, sp)
    to_sector = np.float32(n_sectors / (2 * np.pi))
    inv_h = np.float32(1.0 / h)
    for z in np.flatnonzero(has):
        ang = angles[ny - cy[z] : 2 * ny - cy[z], nx - cx[z] : 2 * nx - cx[z]]
        sec = ((ang + np.float32(np.pi)) * to_sector).astype(np.intp) % n_sectors
        # a slice without any background (bone filling the field of view) has infinite
        # depth: beyond the deepest bin
        kb = np.minimum(depth[z] * inv_h, np.float32(n_bins)).astype(np.intp)
        sel = env[z] & (kb < n_bins)
        idx = sec[sel] * n_bins + kb[sel]
        c_env = np.bincount(idx, minlength=n_sectors * n_bins).reshape(n_sectors, n_bins)
        c_bone = np.bincount(idx[b[z][sel]], minlength=n_sectors * n_bins).reshape(
            n_sectors, n_bins
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = c_bone / c_env
        # thickness: depth where the fraction first drops below `level`
        below = (frac < level) & (c_env > 0)
        first = np.where(below.any(axis=1), below.argmax(axis=1), n_bins)
        row = first.astype(np.float64) * h
        row[c_env.sum(axis=1) == 0] = np.nan
        thick[z] = row
    return thick, has


def _smooth_sector_thickness(
    thick: np.ndarray, has: np.ndarray, sp: tuple[float, ...], *, smooth_mm: float = 0.1,
    typical: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cleaned thickness map (slice x sector) and its mean per slice (NaN without envelope).

    Robust smoothing across sectors (circular) and along z; empty sectors take ``typical``
    (default: the median over the slices given). Trabeculae joining the cortex only ever
    thicken it, pores only thin it: a grey closing (3 sectors x 3 slices) fills pits, then a
    low percentile (35th over 7 sectors x 2 smooth_mm) cuts bumps; a grey opening would also
    flatten the thickest, real, part. Slice ``z`` of the result depends on slices within
    ``1 + round(smooth_mm / dz)`` of it only.
    """
    if typical is None:
        typical = float(np.nanmedian(thick[has])) if has.any() else 0.0
    filled = np.where(np.isnan(thick), typical, thick)
    nz_half = int(round(smooth_mm / sp[0]))
    w = 3
    padded = np.concatenate([filled[:, -w:], filled, filled[:, :w]], axis=1)
    padded = ndimage.grey_closing(padded, size=(3, 3), mode="nearest")
    padded = ndimage.percentile_filter(
        padded, 35, size=(2 * nz_half + 1, 2 * w + 1), mode="nearest"
    )
    filled = padded[:, w:-w]
    thick_mean = np.full(thick.shape[0], np.nan)
    thick_mean[has] = filled[has].mean(axis=1)
    return filled, thick_mean


def _region_rows(
    envelope: np.ndarray,
    depth: np.ndarray,
    crop: tuple[slice, slice],
    filled: np.ndarray,
    sp: tuple[float, ...],
    *,
    margin_mm: float = 0.02,
    origin: tuple[int, int] | None = None,
) -> np.ndarray:
    """Endocortical region: envelope deeper than the sector thickness ``filled`` (rows
    aligned with the slices of ``envelope``) + ``margin_mm``, interpolated around the
    circumference."""
    region = np.zeros(envelope.shape, dtype=bool)
    ys, xs = crop
    env = envelope[:, ys, xs]
    if env.size == 0:
        return region
    # the margin keeps partial-volume cortex out, a voxel-scale effect: at fine voxels a
    # fixed 0.02 mm (4 voxels at 5 um) drops the trabeculae fused to the cortex
    margin_mm = min(margin_mm, _ENDO_MARGIN_VOX * min(sp[1], sp[2]))
    n_sectors = filled.shape[1]
    ny, nx = env.shape[1:]
    cy, cx = _centroids(env, crop, origin)
    angles = _angle_maps(ny, nx, sp)
    to_sector = np.float32(n_sectors / (2 * np.pi))
    for z in np.flatnonzero(env.any(axis=(1, 2))):
        ang = angles[ny - cy[z] : 2 * ny - cy[z], nx - cx[z] : 2 * nx - cx[z]]
        u = (ang + np.float32(np.pi)) * to_sector - np.float32(0.5)
        i0 = np.floor(u)
        wgt = u - i0
        i0 = i0.astype(np.intp) % n_sectors
        t_row = (filled[z] + margin_mm).astype(np.float32)
        lim = t_row[i0] * (1.0 - wgt) + t_row[(i0 + 1) % n_sectors] * wgt
        region[z, ys, xs] = env[z] & (depth[z] > lim)
    return region


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
    bone = _as_bone(bone)
    sp = normalize_spacing(spacing)
    _check_distal_end(distal_end, allow_auto=True)
    offset_mm = _length_mm("offset_mm", offset_mm, "a number >= 0", allow_zero=True)
    height_mm = _length_mm("height_mm", height_mm, "a positive number", allow_zero=False)
    nz = bone.shape[0]
    dz = sp[0]
    maps = _envelope_maps(bone, sp, _CLOSING_MM, _MIN_AREA_MM2)
    if not maps.envelope.any():
        raise SegmentationError("no bone cross-section found in the scan")
    prof = _profiles(bone, maps, sp, margin_mm=_MARGIN_MM, far_mm=_FAR_MM)
    if distal_end == "auto":
        end, why = _decide_end(prof, dz)
        logger.info("distal end: %s (%s)", end, why)
    else:
        end = distal_end  # type: ignore[assignment]
    gp = _growth_plate_from_profiles(
        prof, nz, sp, end, _FAR_MM, _MARGIN_MM, bone=bone, maps=maps
    )

    z0, z1 = trabecular_slices(gp.ref_index, end, nz, dz, offset_mm, height_mm)
    region, thick = _endocortical(bone, maps.envelope, maps.depth, maps.crop, sp)
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
