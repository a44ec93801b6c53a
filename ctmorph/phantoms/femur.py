"""Synthetic rat distal femur with per-voxel truth.

:func:`make_femur` builds one distal femur as a Bruker SkyScan 1172 / NRecon 8-bit
reconstruction would show it, with the truth every test needs: a tissue label per voxel, the
growth-plate reference slice and the trabecular VOI 1.0-3.0 mm proximal of it.
:func:`ctmorph.phantoms.sample_study.make_sample_study` writes nine such scans as the sample
study.

Anatomy along the long axis, from the distal end (all lengths in mm)::

    soft tissue | condyles: epiphysis (trabecular bone in a thin shell, wider than the shaft,
    intercondylar notch) | epiphyseal bone plate | growth-plate cartilage (wavy, marrow grey)
    | primary spongiosa (dense, column-like, fading over ~0.3 mm) | secondary spongiosa of the
    metaphysis (group-dependent, inside a cortical tube thickening to ~0.13 mm) | diaphysis
    (empty marrow in the tube)

The secondary spongiosa is a network of sheets around the zero surface of a smooth random
field ``f`` (Gaussian-filtered noise divided by its gradient magnitude, so ``|f|`` is about the
distance to the surface and the sheets have nearly uniform thickness): bone where
``|f| < T·w``. A finer random field gives the perforation weight ``w`` (0 in a group-dependent
fraction of the space, ramping to 1). The groups differ in cell size (OVX: fewer trabeculae,
lower Tb.N, higher Tb.Sp), perforation and, through the calibration, slightly in thickness
(Tb.Th about 0.075 mm sham, 0.06 mm OVX), as in the ovariectomised rat. ``T`` follows a design
BV/TV profile along the bone (rising behind the primary spongiosa, falling through the VOI, zero
in the diaphysis), calibrated against the empirical distribution of ``|f| / w`` inside the design
VOI, so the truth BV/TV there is the group target (30 % sham, 18 % OVX+Exos, 10 % OVX) within
about one percentage point.

Grey values are those of an 8-bit NRecon export (air 10, soft tissue 60, marrow 64, cartilage
68, trabecular bone 200, cortical bone 215), blurred by a Gaussian of ``blur_vox`` voxels
(partial volume) with additive noise of SD ``noise_sd``. The noise is drawn as windows at random
offsets into a pool of normal deviates (cheap and deterministic). The sample study writes the
femurs with the CS window under which marrow (64) means 0 and trabecular bone (200) 1.15 g/cm³
HA in :data:`ctmorph.phantoms.rods.DEFAULT_HA_MODEL`
(:data:`~ctmorph.phantoms.sample_study.STUDY_DENSITY`), the model of its phantom scans. All
sizes are in mm, so the femur looks the same at any voxel size; the cross-section scales with
the slice size (shaft 0.84 of the field of view) so small test femurs still fit.

Departures from the ideal scan, each with its truth (all off by default, and then the arrays
are exactly those of the ideal femur): the bone axis tilted from the slice normal (the truth
rotates with it), the bone shifted off centre or across the field-of-view edge, a partly
bridged growth plate, bright specks, ring artefacts, round-ROI zeros outside the
reconstruction circle and 16-bit output (see :func:`make_femur`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .fields import (
    ring_profile,
    rotation_taking_z_to,
    round_roi_zeros,
    sheet_field,
    smoothstep,
    speck_positions,
)

__all__ = [
    "GROUPS",
    "LABELS",
    "FemurPhantom",
    "VoiTruth",
    "GREY",
    "MARROW",
    "TRAB",
    "make_femur",
]

logger = logging.getLogger(__name__)

#: Tissue labels of :attr:`FemurPhantom.labels`.
LABELS: dict[str, int] = {
    "air": 0,
    "soft_tissue": 1,
    "marrow": 2,
    "cartilage": 3,
    "trabecular": 4,
    "cortical": 5,
}
_AIR, _SOFT, MARROW, _CART, TRAB, _CORT = range(6)
# 8-bit grey level of each label before blur and noise (NRecon 8-bit export of a rat femur).
GREY = np.array([10.0, 60.0, 64.0, 68.0, 200.0, 215.0], dtype=np.float32)


@dataclass(frozen=True)
class _GroupDesign:
    bv_tv: float  # mean BV/TV of the secondary spongiosa in the truth VOI (fraction)
    cell_mm: float  # filter sigma of the sheet field: sheets ~4.4 cell_mm apart on a line
    perforated: float  # fraction of the sheets removed by perforations (w = 0)
    epiphysis_bv_tv: float  # BV/TV of the epiphyseal trabecular bone (fraction)
    folder: str  # folder-safe name stem


#: Group designs; keys are the group labels used in ``groups.csv``. Lower BV/TV comes mostly
#: from fewer, perforated trabeculae (lower Tb.N, higher Tb.Sp) and a little from thinner ones.
GROUPS: dict[str, _GroupDesign] = {
    "sham": _GroupDesign(0.30, cell_mm=0.115, perforated=0.05, epiphysis_bv_tv=0.40,
                         folder="sham"),
    "OVX+Exos": _GroupDesign(0.18, cell_mm=0.15, perforated=0.15, epiphysis_bv_tv=0.36,
                             folder="OVXExos"),
    "OVX": _GroupDesign(0.10, cell_mm=0.20, perforated=0.30, epiphysis_bv_tv=0.33,
                        folder="OVX"),
}

# Geometry constants (mm unless stated).
_TIP_MM = 0.02  # soft tissue before the condyles start
_CAP_MM = 0.20  # rounding of the condyle ends
_EPI_SHELL_MM = 0.045  # epiphyseal shell and end cap
_RING_MM = 0.04  # perichondrial bony ring at the growth plate
_CORTEX_MM = (0.05, 0.14, 0.6)  # metaphyseal cortex: at the plate, far value, e-folding length
_EPI_PLATE_MM = 0.025  # epiphyseal bone plate on the distal face of the cartilage
_PRIMARY_MM = 0.30  # primary spongiosa fades to nothing over this distance
_PRIMARY_BV_TV = 0.50  # primary spongiosa density at the chondro-osseous junction
_SIGMA_G_MM = 0.06  # perforation field
_SIGMA_E_MM = 0.09  # epiphyseal trabecular field (same in every group)
_SIGMA_P_MM = (0.045, 0.016)  # primary spongiosa field (z, in-plane): longitudinal columns
_SIGMA_WAVE_MM = 0.12  # growth-plate surface undulation
_VOI_OFFSET_MM, _VOI_HEIGHT_MM = 1.0, 2.0


@dataclass(frozen=True)
class VoiTruth:
    """The design trabecular VOI of a phantom (array indices along z, ``[z0, z1)``).

    Attributes
    ----------
    z0, z1 : int
        Slice range of the VOI: ``offset_mm`` .. ``offset_mm + height_mm`` proximal of the truth
        reference slice (clipped to the scan; see ``complete``).
    offset_mm, height_mm : float
        VOI placement in mm.
    complete : bool
        False when the scan ends before the VOI does.
    bv_tv : float
        BV/TV (fraction) of :attr:`FemurPhantom.bone_truth` in the true endocortical region of
        the VOI slices (NaN when the VOI is empty).
    bv_tv_design : float
        Design target (fraction) the field was calibrated to.
    """

    z0: int
    z1: int
    offset_mm: float
    height_mm: float
    complete: bool
    bv_tv: float
    bv_tv_design: float


@dataclass(frozen=True, eq=False)
class FemurPhantom:
    """A synthetic rat distal femur with its truth.

    Attributes
    ----------
    grey : (Z, Y, X) ndarray of uint8 or uint16
        Reconstructed grey values (8-bit: air ~10, soft tissue/marrow/cartilage ~60-68, bone
        ~200-215, Gaussian partial-volume blur, additive noise; 16-bit: the same × 257).
    bone_truth : (Z, Y, X) ndarray of bool
        Trabecular and cortical bone before blur and noise.
    labels : (Z, Y, X) ndarray of uint8
        Tissue class per voxel, see :data:`LABELS`.
    ref_index : int
        Truth reference slice (array index): the first slice, moving proximally from the distal
        end, that holds no growth-plate cartilage. For a tilted bone (``axis_tilt_deg``), the
        slice holding the truth reference point on the bone axis (``params['ref_point_mm']``).
    distal_end : {'first', 'last'}
        Which end of the array (slice 0 or slice Z-1) is distal.
    voxel_um : float
        Isotropic voxel size in µm.
    voi_truth : VoiTruth
        The design VOI and its truth BV/TV.
    params : dict
        Design parameters (group, seed, geometry in mm, BV/TV targets, departures). Always
        ``axis_direction_zyx`` (unit vector of the bone axis from distal to proximal in array
        order) and ``ref_point_mm`` (the truth reference point on the axis, (z, y, x) in mm
        from the centre of voxel 0), so reference errors can be measured along the axis.
    voi_mask_array : (Z, Y, X) ndarray of bool or None
        Truth VOI of a tilted bone in the scan frame (None: the VOI is the endocortical truth
        of slices ``voi_truth.z0 .. z1 - 1``); use :meth:`voi_mask`.
    """

    grey: np.ndarray
    bone_truth: np.ndarray
    labels: np.ndarray
    ref_index: int
    distal_end: Literal["first", "last"]
    voxel_um: float
    voi_truth: VoiTruth
    params: dict[str, Any] = field(default_factory=dict)
    voi_mask_array: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size ``(dz, dy, dx)`` in mm."""
        v = self.voxel_um / 1000.0
        return (v, v, v)

    @property
    def cortex_truth(self) -> np.ndarray:
        """(Z, Y, X) bool: cortical bone (shell, ring and metaphyseal/diaphyseal cortex)."""
        return self.labels == _CORT

    @property
    def endocortical_truth(self) -> np.ndarray:
        """(Z, Y, X) bool: everything inside the endocortical surface (marrow, cartilage and
        trabecular bone)."""
        return (self.labels >= MARROW) & (self.labels <= TRAB)

    def voi_mask(self) -> np.ndarray:
        """(Z, Y, X) bool: the true endocortical region restricted to the truth VOI slices
        (for a tilted bone: to the slab perpendicular to its axis, in the scan frame)."""
        if self.voi_mask_array is not None:
            return self.voi_mask_array.copy()
        out = np.zeros(self.labels.shape, dtype=bool)
        z0, z1 = self.voi_truth.z0, self.voi_truth.z1
        out[z0:z1] = self.endocortical_truth[z0:z1]
        return out


# --------------------------------------------------------------------------------------------
# helpers


def _upsample_linear(
    a: np.ndarray, shape: tuple[int, ...], factor: int, axes: tuple[int, ...] | None = None
) -> np.ndarray:
    """Linear interpolation of a coarse grid onto a ``factor`` times finer one.

    Coarse sample ``j`` sits at fine coordinate ``(j - 1 + 0.5) * factor - 0.5`` (one padding
    sample in front), so ``a`` needs ``ceil(n / factor) + 2`` samples per axis. Works with
    strided slices (one pair per residue of the fine index), not fancy indexing.
    """
    out = a
    for axis in sorted(range(a.ndim) if axes is None else axes, reverse=True):
        n = shape[axis]
        new_shape = list(out.shape)
        new_shape[axis] = n
        res = np.empty(new_shape, dtype=np.float32)
        for r in range(factor):
            m = len(range(r, n, factor))
            pos = (r + 0.5) / factor + 0.5  # coarse coordinate of fine index r (plus pad)
            i0 = int(math.floor(pos))
            w = np.float32(pos - i0)
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            dst = [slice(None)] * out.ndim
            lo[axis] = slice(i0, i0 + m)
            hi[axis] = slice(i0 + 1, i0 + 1 + m)
            dst[axis] = slice(r, n, factor)
            a_lo = out[tuple(lo)]
            tmp = out[tuple(hi)] - a_lo
            tmp *= w
            tmp += a_lo
            res[tuple(dst)] = tmp
        out = res
    return out


def _coarse_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float, factor: int
) -> np.ndarray:
    """Gaussian-filtered white noise (float32) on a ``factor`` times coarser grid, padded for
    :func:`_upsample_slab` (``ceil(n / factor) + 2`` samples per axis). ``sigma_vox`` is the
    filter sigma in fine voxels."""
    cshape = tuple(math.ceil(n / factor) + 2 for n in shape)
    noise = rng.standard_normal(cshape, dtype=np.float32)
    return ndimage.gaussian_filter(noise, sigma_vox / factor, mode="wrap", truncate=3.0)


def _upsample_slab(
    coarse: np.ndarray, k0: int, k1: int, shape_yx: tuple[int, int], factor: int
) -> np.ndarray:
    """Fine slices ``k0..k1-1`` of the linear upsampling of a :func:`_coarse_noise` grid."""
    c = (np.arange(k0, k1, dtype=np.float64) + 0.5) / factor + 0.5
    i0 = np.floor(c).astype(np.intp)
    w = (c - i0).astype(np.float32)[:, None, None]
    lo = coarse[i0]
    part = coarse[i0 + 1] - lo
    part *= w
    part += lo
    return _upsample_linear(part, (k1 - k0, *shape_yx), factor, axes=(1, 2))


def _sample_coarse(
    coarse: np.ndarray, factor: int, k: np.ndarray, y: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Values of the upsampled field at fine voxel coordinates (trilinear, like
    :func:`_upsample_slab`)."""
    coords = [(np.asarray(v, dtype=np.float64) + 0.5) / factor + 0.5 for v in (k, y, x)]
    return ndimage.map_coordinates(coarse, coords, order=1, mode="nearest")


# --------------------------------------------------------------------------------------------
# departures from the ideal scan (tilt, bridges, rings, specks)


def _check_departures(
    tilt_deg: float, offset: tuple[float, float], bridged: float, specks: int, rings: int,
    ring_amplitude: float, bit_depth: int, voi_offset: float, voi_height: float,
) -> None:
    if not (math.isfinite(tilt_deg) and 0 <= abs(tilt_deg) <= 15):
        raise ConfigError(f"axis_tilt_deg must be within -15..15 degrees, got {tilt_deg!r}")
    if len(offset) != 2 or not all(math.isfinite(float(v)) for v in offset):
        raise ConfigError(f"center_offset_mm must be two finite numbers (mm), got {offset!r}")
    if not 0 <= bridged <= 0.5:
        raise ConfigError(f"plate_bridged_fraction must be within 0..0.5, got {bridged!r}")
    if specks < 0 or rings < 0 or not ring_amplitude >= 0:
        raise ConfigError(
            f"specks, rings and ring_amplitude must be >= 0, got {specks!r}, {rings!r}, "
            f"{ring_amplitude!r}"
        )
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if not (voi_offset >= 0 and voi_height > 0):
        raise ConfigError(
            f"voi_offset_mm must be >= 0 and voi_height_mm > 0 (mm), got {voi_offset!r}, "
            f"{voi_height!r}"
        )


def _tilt_volume(
    lab_df: np.ndarray, voi_b: np.ndarray, tilt_deg: float, azimuth_deg: float, ref_k: int,
    axis_yx: tuple[float, float], vox: float, distal_first: bool,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Rotate the distal-first labels and truth VOI of an untilted femur about the volume
    centre so the bone axis makes ``tilt_deg`` with the slice normal.

    Nearest-neighbour sampling of the untilted volume at rotated coordinates (labels stay
    labels; beyond the volume the edge values continue: air, soft tissue, the shaft). Returns
    the truth record (reference slice, axis, reference point), the rotated labels and the
    rotated VOI mask (both distal first).
    """
    t, a = math.radians(tilt_deg), math.radians(azimuth_deg)
    u = np.array([math.cos(t), math.sin(t) * math.sin(a), math.sin(t) * math.cos(a)])
    rot = rotation_taking_z_to(u)
    c = (np.array(lab_df.shape, dtype=np.float64) - 1.0) / 2.0
    # scan index p -> untilted index c + R^T (p - c)
    matrix, offset = rot.T, c - rot.T @ c
    rotated = ndimage.affine_transform(lab_df, matrix, offset=offset, order=0, mode="nearest",
                                       output=np.uint8)
    voi = ndimage.affine_transform(voi_b, matrix, offset=offset, order=0, mode="constant",
                                   cval=0, output=np.uint8).astype(bool)
    p_ref = c + rot @ (np.array([ref_k, axis_yx[0], axis_yx[1]]) - c)
    nz = lab_df.shape[0]
    z_ref = int(np.clip(round(float(p_ref[0])), 0, nz - 1))
    if not distal_first:
        p_ref[0] = nz - 1 - p_ref[0]
        u = u * np.array([-1.0, 1.0, 1.0])
    record = {
        "ref_index": z_ref if distal_first else nz - 1 - z_ref,
        "axis_direction_zyx": [float(v) for v in u],
        "ref_point_mm": [float(v) * vox for v in p_ref],
    }
    return record, rotated, voi


def _plate_bridges(
    rng: np.random.Generator, rho: np.ndarray, r_shaft: np.ndarray, vox: float, fraction: float
) -> np.ndarray:
    """(Y, X) bool: discs (0.04-0.1 mm across) covering ``fraction`` of the plate's interior
    (pixels within 0.85 of the shaft radius), where bone bridges the cartilage."""
    inside = rho < 0.85 * r_shaft
    n_in = int(np.count_nonzero(inside))
    out = np.zeros(rho.shape, dtype=bool)
    if n_in == 0:
        return out
    cand = np.flatnonzero(inside.ravel())
    ny, nx = rho.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    for _ in range(10_000):
        if np.count_nonzero(out & inside) >= fraction * n_in:
            break
        k = int(cand[rng.integers(0, cand.size)])
        cy, cx = divmod(k, nx)
        r = 0.5 * float(rng.uniform(0.04, 0.10)) / vox
        ri = int(math.ceil(r))
        ys, xs = slice(max(0, cy - ri), cy + ri + 1), slice(max(0, cx - ri), cx + ri + 1)
        out[ys, xs] |= (yy[ys, xs] - cy) ** 2 + (xx[ys, xs] - cx) ** 2 <= r * r
    return out


# --------------------------------------------------------------------------------------------
# the femur


def make_femur(
    *,
    group: str = "sham",
    seed: int = 0,
    voxel_um: float = 9.0,
    shape_yx: tuple[int, int] = (256, 256),
    length_mm: float = 4.2,
    distal_first: bool = True,
    plate_unevenness_mm: float = 0.04,
    plate_thickness_mm: float = 0.15,
    plate_tilt_deg: float = 0.0,
    epiphysis_mm: float = 0.75,
    bv_tv: float | None = None,
    bone_width_mm: float | None = None,
    blur_vox: float = 0.7,
    noise_sd: float = 6.0,
    axis_tilt_deg: float = 0.0,
    axis_azimuth_deg: float = 0.0,
    center_offset_mm: tuple[float, float] = (0.0, 0.0),
    plate_bridged_fraction: float = 0.0,
    specks: int = 0,
    rings: int = 0,
    ring_amplitude: float = 40.0,
    round_roi: bool = False,
    bit_depth: int = 8,
    voi_offset_mm: float = _VOI_OFFSET_MM,
    voi_height_mm: float = _VOI_HEIGHT_MM,
) -> FemurPhantom:
    """Build a synthetic rat distal femur scan (deterministic for a given ``seed``).

    Parameters
    ----------
    group : {'sham', 'OVX+Exos', 'OVX'}
        Sets the metaphyseal BV/TV (30 / 18 / 10 % in the truth VOI), the fraction of
        perforated trabeculae, the trabecular spacing and the epiphyseal density.
    seed : int
        Seed of every random choice; the same seed gives identical arrays.
    voxel_um : float
        Isotropic voxel size in µm.
    shape_yx : (int, int)
        Slice size in pixels. The shaft is 0.84 of the field of view wide by default (1.94 mm
        at 256 px of 9 µm) and the condyles 8 % wider.
    length_mm : float
        Scanned length along the bone in mm (number of slices = round(length / voxel)).
    distal_first : bool
        True: slice 0 is distal (``distal_end='first'``); False: the stack is reversed.
    plate_unevenness_mm : float
        Largest deviation (mm) of the wavy growth-plate mid-surface from its mean plane.
    plate_thickness_mm : float
        Cartilage thickness along the bone axis (mm).
    plate_tilt_deg : float
        Tilt of the growth plate about the y axis (degrees).
    epiphysis_mm : float
        Distance (mm) from the condyle tips to the mean distal surface of the cartilage.
    bv_tv : float, optional
        Override of the group's metaphyseal BV/TV target (fraction, 0.02-0.6).
    bone_width_mm : float, optional
        Mediolateral periosteal width of the shaft in mm (default 0.84 of the field of view).
    blur_vox : float
        Partial-volume Gaussian blur sigma in voxels.
    noise_sd : float
        Additive noise SD in grey values.
    axis_tilt_deg : float
        Angle (degrees, 0-15) between the bone's long axis and the slice normal. The whole
        bone (and the soft tissue around it) is rotated about the centre of the volume: the
        labels of the untilted femur are sampled (nearest) at rotated coordinates, then blur
        and noise are applied in the scan frame. The truth rotates with it: ``ref_index`` is
        the slice of the truth reference point on the bone axis, ``params['ref_point_mm']``
        that point, ``params['axis_direction_zyx']`` the axis (distal to proximal, array
        order), and :meth:`FemurPhantom.voi_mask` the rotated truth VOI (slices perpendicular
        to the bone axis).
    axis_azimuth_deg : float
        In-plane direction (degrees from +x towards +y) towards which the proximal end leans.
    center_offset_mm : (float, float)
        Shift (y, x) in mm of the bone axis from the image centre (a bone touching or crossing
        the field-of-view edge).
    plate_bridged_fraction : float
        Fraction (0-0.5) of the growth-plate area where bone bridges across the cartilage
        (discs of 0.04-0.1 mm diameter through the whole cartilage thickness).
    specks : int
        Number of bright specks (isolated cubes of 1-3 voxels, grey 200-255) in air and soft
        tissue, at least 4 voxels from bone.
    rings : int
        Number of ring artefacts: concentric rings about the image centre (the rotation
        centre), about 1.6 voxels wide, the same in every slice.
    ring_amplitude : float
        Largest ring amplitude in 8-bit grey values (signs alternate at random).
    round_roi : bool
        NRecon ``ON_ROUND`` reconstruction: grey exactly 0 outside the circle inscribed in the
        slice (no data), at least 1 inside.
    bit_depth : {8, 16}
        8: uint8 grey; 16: uint16 grey under the same CS window (8-bit grey × 65535 / 255,
        rounded after noise, so finer quantisation).
    voi_offset_mm, voi_height_mm : float
        Placement of the truth VOI (mm proximal of the truth reference, and length). The
        trabecular design (BV/TV profile) always follows the standard 1.0-3.0 mm VOI.

    Returns
    -------
    FemurPhantom
    """
    if group not in GROUPS:
        raise ConfigError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    design = GROUPS[group]
    target = design.bv_tv if bv_tv is None else float(bv_tv)
    if not 0.02 <= target <= 0.6:
        raise ConfigError(f"bv_tv must be within 0.02..0.6 (fraction), got {bv_tv!r}")
    if not (math.isfinite(voxel_um) and voxel_um > 0):
        raise ConfigError(f"voxel_um must be positive (µm), got {voxel_um!r}")
    ny, nx = (int(s) for s in shape_yx)
    if ny < 32 or nx < 32:
        raise ConfigError(f"shape_yx must be at least 32 x 32 pixels, got {shape_yx!r}")
    if plate_unevenness_mm < 0 or plate_thickness_mm <= 0 or epiphysis_mm <= _CAP_MM:
        raise ConfigError(
            "plate_unevenness_mm must be >= 0, plate_thickness_mm > 0 and epiphysis_mm > "
            f"{_CAP_MM} mm"
        )
    _check_departures(
        axis_tilt_deg, center_offset_mm, plate_bridged_fraction, specks, rings, ring_amplitude,
        bit_depth, voi_offset_mm, voi_height_mm,
    )
    t_start = time.perf_counter()
    vox = voxel_um / 1000.0
    nz = int(round(length_mm / vox))
    plate_mid = _TIP_MM + epiphysis_mm + plate_thickness_mm / 2.0
    if nz * vox < plate_mid + plate_thickness_mm + 0.2:
        raise ConfigError(f"length_mm={length_mm} is too short to hold the growth plate")
    ss = np.random.SeedSequence(seed)
    rng_f, rng_g, rng_p, rng_wave, rng_geo, rng_noise, rng_q, rng_e = (
        np.random.default_rng(s) for s in ss.spawn(8)
    )

    # ---- in-plane geometry (pixel centres, mm, origin at the image centre)
    width = 0.84 * min(nx, ny) * vox if bone_width_mm is None else float(bone_width_mm)
    a_shaft = width / 2.0  # mediolateral (x) semi-axis
    b_shaft = 0.86 * a_shaft  # anteroposterior (y)
    yy = (np.arange(ny, dtype=np.float32) - (ny - 1) / 2.0) * np.float32(vox)
    xx = (np.arange(nx, dtype=np.float32) - (nx - 1) / 2.0) * np.float32(vox)
    shift_y, shift_x = (float(v) for v in center_offset_mm)
    if shift_y or shift_x:  # (no arithmetic at all by default: identical arrays)
        yy = yy - np.float32(shift_y)
        xx = xx - np.float32(shift_x)
    ygrid, xgrid = np.meshgrid(yy, xx, indexing="ij")
    rho = np.hypot(ygrid, xgrid)
    theta = np.arctan2(ygrid, xgrid)
    cos2, sin2 = np.cos(theta) ** 2, np.sin(theta) ** 2
    phase = rng_geo.uniform(0.0, 2.0 * np.pi, 2)
    cort_var = 1.0 + 0.15 * np.cos(theta - phase[0]) + 0.08 * np.cos(2.0 * theta - phase[1])
    # posterior intercondylar notch: a Gaussian dent in the radius around theta = +90 deg
    dth = np.angle(np.exp(1j * (theta - np.pi / 2.0))).astype(np.float32)
    notch_w = 0.28
    bump = np.exp(-((dth / notch_w) ** 2))
    dbump = np.abs(2.0 * dth / notch_w**2 * bump)  # |d bump / d theta|
    soft = (xgrid / (0.48 * nx * vox)) ** 2 + (ygrid / (0.46 * ny * vox)) ** 2 <= 1.0
    base = np.where(soft, np.uint8(_SOFT), np.uint8(_AIR))

    # ---- growth plate surfaces (distance from the distal end of the scan, mm)
    wave = ndimage.gaussian_filter(
        rng_wave.standard_normal((ny, nx)).astype(np.float32), _SIGMA_WAVE_MM / vox, mode="wrap"
    )
    r_shaft = 1.0 / np.sqrt(cos2 / a_shaft**2 + sin2 / b_shaft**2)
    wave /= max(float(np.abs(wave[rho < 0.8 * r_shaft]).max()), 1e-12)
    mid = plate_mid + plate_unevenness_mm * wave + math.tan(math.radians(plate_tilt_deg)) * xgrid
    s_dist = (mid - plate_thickness_mm / 2.0).astype(np.float32)  # cartilage starts
    s_prox = (mid + plate_thickness_mm / 2.0).astype(np.float32)  # cartilage ends
    s_epi = s_dist - np.float32(_EPI_PLATE_MM)  # epiphyseal bone plate starts
    # departures draw from their own stream, so the default femur is unchanged
    rng_dep = np.random.default_rng(np.random.SeedSequence([seed, 0x6465]))
    bridges = (
        _plate_bridges(rng_dep, rho, r_shaft, vox, plate_bridged_fraction)
        if plate_bridged_fraction > 0 else None
    )

    geo_cache: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {}

    def outer_radius(d: float) -> tuple[np.ndarray, np.ndarray]:
        """Periosteal radius (mm) per pixel direction at distance d, and the factor turning a
        normal wall thickness into a radial one (the notch walls are oblique)."""
        cond = 1.0 + 0.08 * (1.0 - smoothstep((d - plate_mid) / 1.0)) if d > plate_mid else 1.08
        depth = 0.22 * (1.0 - smoothstep((d - _TIP_MM - 0.35) / 0.2))
        key = (round(float(cond), 5), round(float(depth), 5))
        if key not in geo_cache:
            a = a_shaft * key[0]
            b = b_shaft * (1.0 + 0.6 * (key[0] - 1.0))
            r_ell = 1.0 / np.sqrt(cos2 / a**2 + sin2 / b**2)
            r = r_ell * (1.0 - key[1] * bump)
            slope = key[1] * dbump / np.maximum(1.0 - key[1] * bump, 1e-3)
            geo_cache.clear()
            geo_cache[key] = (r, cort_var * np.sqrt(1.0 + slope**2))
        return geo_cache[key]

    def cortex_thickness(d: float) -> float:
        if d < plate_mid - plate_thickness_mm:
            return _EPI_SHELL_MM
        s = d - plate_mid
        if s < plate_thickness_mm:
            return _RING_MM
        t0, t1, lam = _CORTEX_MM
        return t0 + (t1 - t0) * (1.0 - math.exp(-(s - plate_thickness_mm) / lam))

    # ---- random fields, kept on their coarse grids and upsampled slab by slab
    fl = _femur_fields(design, (nz, ny, nx), vox, rho, r_shaft, s_dist, s_prox,
                       rng_f, rng_g, rng_p, rng_q, rng_e)
    ref_mm_est = fl.ref_mm_est
    scan_end = nz * vox
    taper = min(_VOI_OFFSET_MM + _VOI_HEIGHT_MM + 0.03, scan_end - ref_mm_est - 0.15)

    def secondary_bv_tv(s: float) -> float:
        """Design BV/TV of the secondary spongiosa at s mm proximal of the reference: rises
        behind the primary spongiosa, then falls linearly through the VOI (mean = target)."""
        if s <= _VOI_OFFSET_MM:
            g = 0.7 + 0.45 * float(smoothstep(max(s, 0.0) / _VOI_OFFSET_MM))
        else:
            g = 1.15 - 0.3 * (s - _VOI_OFFSET_MM) / _VOI_HEIGHT_MM
        g *= 1.0 - float(smoothstep((s - taper) / 0.1))
        return target * g

    # ---- labels, slab by slab
    labels = _femur_labels(fl, (nz, ny, nx), vox, distal_first, base, rho, s_dist, s_prox, s_epi,
                           bridges, outer_radius, cortex_thickness, secondary_bv_tv)

    ref_k, ref_index, z0, z1, complete, bone_truth, bv_truth, tilt, voi_mask_array = \
        _voi_truth(labels, distal_first, vox, voi_offset_mm, voi_height_mm, axis_tilt_deg,
                   axis_azimuth_deg, shift_y, shift_x)

    # ---- grey values: levels, partial-volume blur, noise, 8-bit (slab by slab with a halo)
    grey = _femur_grey(labels, distal_first, rng_dep, rng_noise, rings=rings,
                       ring_amplitude=ring_amplitude, specks=specks, round_roi=round_roi,
                       blur_vox=blur_vox, noise_sd=noise_sd, bit_depth=bit_depth)

    voi = VoiTruth(
        z0=z0, z1=z1, offset_mm=float(voi_offset_mm), height_mm=float(voi_height_mm),
        complete=complete,
        bv_tv=bv_truth, bv_tv_design=target,
    )
    params: dict[str, Any] = {
        "group": group,
        "seed": int(seed),
        "voxel_um": float(voxel_um),
        "shape": [nz, ny, nx],
        "length_mm": nz * vox,
        "distal_first": bool(distal_first),
        "bv_tv_design": target,
        "bv_tv_truth_voi": bv_truth,
        "cell_mm": design.cell_mm,
        "perforated_fraction": design.perforated,
        "epiphysis_bv_tv": design.epiphysis_bv_tv,
        "epiphysis_mm": epiphysis_mm,
        "plate_thickness_mm": plate_thickness_mm,
        "plate_unevenness_mm": plate_unevenness_mm,
        "plate_tilt_deg": plate_tilt_deg,
        "plate_mid_mm_from_distal": plate_mid,
        "ref_mm_from_distal": ref_k * vox,
        "bone_width_mm": width,
        "blur_vox": blur_vox,
        "noise_sd": noise_sd,
        "axis_tilt_deg": float(axis_tilt_deg),
        "axis_azimuth_deg": float(axis_azimuth_deg),
        "center_offset_mm": [shift_y, shift_x],
        "plate_bridged_fraction": float(plate_bridged_fraction),
        "specks": int(specks),
        "rings": int(rings),
        "ring_amplitude": float(ring_amplitude),
        "round_roi": bool(round_roi),
        "bit_depth": int(bit_depth),
        **tilt,
    }
    logger.debug(
        "femur %s seed %d: %d slices, ref %d, VOI BV/TV %.3f (design %.3f) in %.2f s",
        group, seed, nz, ref_index, bv_truth, target, time.perf_counter() - t_start,
    )
    return FemurPhantom(
        grey=grey,
        bone_truth=bone_truth,
        labels=labels,
        ref_index=ref_index,
        distal_end="first" if distal_first else "last",
        voxel_um=float(voxel_um),
        voi_truth=voi,
        params=params,
        voi_mask_array=voi_mask_array,
    )


@dataclass
class _Fields:
    """The random fields of a sample femur on their coarse grids, and the look-up tables that
    turn a design BV/TV into their thresholds."""

    f_coarse: Any
    f_fac: Any
    g_coarse: Any
    g_fac: Any
    g_lo: Any
    g_scale: Any
    prob: Any
    u_lut: Any
    e_coarse: Any
    e_fac: Any
    k_ea: Any
    t_epi: Any
    k_pa: Any
    k_pb: Any
    p_field: Any
    p_lut: Any
    ref_mm_est: Any


def _femur_fields(design: _GroupDesign, shape: tuple[int, int, int], vox: float,
                  rho: np.ndarray, r_shaft: np.ndarray, s_dist: np.ndarray, s_prox: np.ndarray,
                  rng_f: np.random.Generator, rng_g: np.random.Generator,
                  rng_p: np.random.Generator, rng_q: np.random.Generator,
                  rng_e: np.random.Generator) -> _Fields:
    """The secondary spongiosa's sheet and perforation fields calibrated inside the design
    VOI, the epiphysis's field and threshold, the primary spongiosa's field."""
    nz, ny, nx = shape
    f_fac = max(2, int(design.cell_mm / vox // 6))  # coarse grid: >= 6 voxels per sigma
    g_fac = 3
    f_coarse = sheet_field(_coarse_noise(rng_f, (nz, ny, nx), design.cell_mm / vox, f_fac))
    g_coarse = _coarse_noise(rng_g, (nz, ny, nx), _SIGMA_G_MM / vox, g_fac)
    g_q = np.quantile(g_coarse, [design.perforated, 0.5, 0.8413])
    g_lo, g_scale = np.float32(g_q[0]), np.float32(1.0 / (0.3 * float(g_q[2] - g_q[1])))
    # w = clip((g - g_lo) * g_scale, 0, 1): 0 in perforations, ramping to 1 over 0.3 SD of g

    # calibration of |f| / w inside the design VOI (random fields of this scale still vary
    # between regions; calibrating where the VOI is hits the target)
    ref_mm_est = float(s_prox.max())
    vk = (
        ref_mm_est + _VOI_OFFSET_MM + (_VOI_HEIGHT_MM * rng_q.random(300_000))
    ) / vox - 0.5
    vk = np.clip(vk, 0, nz - 1)
    inner = np.flatnonzero(rho.ravel() < 0.8 * r_shaft.ravel())
    pix = inner[rng_q.integers(0, inner.size, vk.size)]
    vy, vx = pix // nx, pix % nx
    fs = np.abs(_sample_coarse(f_coarse, f_fac, vk, vy, vx))
    ws = np.clip((_sample_coarse(g_coarse, g_fac, vk, vy, vx) - g_lo) * g_scale, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        u_sample = np.where(ws > 0, fs / np.maximum(ws, 1e-12), np.inf)
    prob = np.linspace(0.0, 0.95, 191)
    u_sorted = np.sort(u_sample)
    u_lut = u_sorted[np.minimum((prob * u_sorted.size).astype(np.intp), u_sorted.size - 1)]
    # epiphysis: its own sheet field (the same in every group), no perforations
    k_ea = min(nz, int(math.ceil(float(s_dist.max()) / vox)) + 1)
    e_fac = max(2, int(_SIGMA_E_MM / vox // 6))
    e_coarse = sheet_field(_coarse_noise(rng_e, (k_ea, ny, nx), _SIGMA_E_MM / vox, e_fac))
    ek = rng_q.integers(0, k_ea, 100_000)
    ep = inner[rng_q.integers(0, inner.size, ek.size)]
    es = np.abs(_sample_coarse(e_coarse, e_fac, ek, ep // nx, ep % nx))
    t_epi = float(np.quantile(es, design.epiphysis_bv_tv))

    # primary spongiosa: a slab of column-like field just proximal of the cartilage
    k_pa = max(0, int(math.floor(float(s_prox.min()) / vox)) - 1)
    k_pb = min(nz, int(math.ceil((float(s_prox.max()) + _PRIMARY_MM) / vox)) + 1)
    sig_p = (_SIGMA_P_MM[0] / vox, _SIGMA_P_MM[1] / vox, _SIGMA_P_MM[1] / vox)
    p_field = ndimage.gaussian_filter(
        rng_p.standard_normal((k_pb - k_pa, ny, nx), dtype=np.float32), sig_p, mode="wrap",
        truncate=3.0,
    )
    p_sorted = np.sort(p_field.ravel()[rng_q.integers(0, p_field.size, 200_000)])
    p_lut = p_sorted[np.minimum(((1.0 - prob) * p_sorted.size).astype(np.intp),
                                p_sorted.size - 1)]

    return _Fields(
        f_coarse=f_coarse,
        f_fac=f_fac,
        g_coarse=g_coarse,
        g_fac=g_fac,
        g_lo=g_lo,
        g_scale=g_scale,
        prob=prob,
        u_lut=u_lut,
        e_coarse=e_coarse,
        e_fac=e_fac,
        k_ea=k_ea,
        t_epi=t_epi,
        k_pa=k_pa,
        k_pb=k_pb,
        p_field=p_field,
        p_lut=p_lut,
        ref_mm_est=ref_mm_est,
    )


def _femur_labels(fl: _Fields, shape: tuple[int, int, int], vox: float, distal_first: bool,
                  base: np.ndarray, rho: np.ndarray, s_dist: np.ndarray, s_prox: np.ndarray,
                  s_epi: np.ndarray, bridges: np.ndarray | None,
                  outer_radius: Any, cortex_thickness: Any, secondary_bv_tv: Any) -> np.ndarray:
    """The label volume, slab by slab (``k`` = distance index from the distal end)."""
    nz, ny, nx = shape
    f_coarse = fl.f_coarse
    f_fac = fl.f_fac
    g_coarse = fl.g_coarse
    g_fac = fl.g_fac
    g_lo = fl.g_lo
    g_scale = fl.g_scale
    prob = fl.prob
    u_lut = fl.u_lut
    e_coarse = fl.e_coarse
    e_fac = fl.e_fac
    k_ea = fl.k_ea
    t_epi = fl.t_epi
    k_pa = fl.k_pa
    k_pb = fl.k_pb
    p_field = fl.p_field
    p_lut = fl.p_lut
    ref_mm_est = fl.ref_mm_est
    def out_index(k: int) -> int:
        return k if distal_first else nz - 1 - k

    labels = np.empty((nz, ny, nx), dtype=np.uint8)
    slab = 16
    for k0 in range(0, nz, slab):
        k1 = min(nz, k0 + slab)
        f_slab = np.abs(_upsample_slab(f_coarse, k0, k1, (ny, nx), f_fac))
        w_slab = _upsample_slab(g_coarse, k0, k1, (ny, nx), g_fac)
        w_slab -= g_lo
        w_slab *= g_scale
        np.clip(w_slab, 0.0, 1.0, out=w_slab)
        if k0 < k_ea:
            e_slab = np.abs(_upsample_slab(e_coarse, k0, min(k1, k_ea), (ny, nx), e_fac))
        for k in range(k0, k1):
            d = (k + 0.5) * vox
            lab = labels[out_index(k)]
            lab[...] = base
            if d < _TIP_MM:
                continue
            r_out, wall = outer_radius(d)
            x_cap = (d - _TIP_MM) / _CAP_MM
            q_cap = math.sqrt(max(0.0, 1.0 - (1.0 - x_cap) ** 2)) if x_cap < 1.0 else 1.0
            env = rho <= r_out * q_cap
            endo = rho < (r_out - cortex_thickness(d) * wall) * q_cap
            if x_cap < 1.0:
                # end cap: the vertical distance below the rounded surface must exceed the shell
                qn = np.minimum(rho / r_out, 1.0)
                below = (d - _TIP_MM) - _CAP_MM * (1.0 - np.sqrt(1.0 - qn**2))
                endo &= below > _EPI_SHELL_MM
            np.copyto(lab, np.uint8(_CORT), where=env)
            np.copyto(lab, np.uint8(MARROW), where=endo)
            fk = f_slab[k - k0]
            if d < float(s_prox.max()):
                cart = endo & (d >= s_dist) & (d < s_prox)
                np.copyto(lab, np.uint8(_CART), where=cart)
                if bridges is not None:
                    np.copyto(lab, np.uint8(TRAB), where=cart & bridges)
                ek_ = e_slab[k - k0] if k < k_ea else np.full_like(fk, np.inf)
                epi_bone = endo & (d < s_dist) & ((ek_ < t_epi) | (d >= s_epi))
                np.copyto(lab, np.uint8(TRAB), where=epi_bone)
            if d >= float(s_prox.min()):
                meta = endo & (d >= s_prox)
                t_s = float(np.interp(secondary_bv_tv(d - ref_mm_est), prob, u_lut))
                bone = fk < t_s * w_slab[k - k0]
                if k_pa <= k < k_pb:
                    dprime = d - s_prox
                    rho_p = _PRIMARY_BV_TV * (1.0 - np.clip(dprime / _PRIMARY_MM, 0.0, 1.0)) ** 2
                    thr_p = np.interp(rho_p, prob, p_lut)
                    thr_p[rho_p <= 0] = np.inf
                    bone |= p_field[k - k_pa] > thr_p
                np.copyto(lab, np.uint8(TRAB), where=meta & bone)
    return labels


def _voi_truth(labels: np.ndarray, distal_first: bool, vox: float, voi_offset_mm: float,
               voi_height_mm: float, axis_tilt_deg: float, axis_azimuth_deg: float,
               shift_y: float, shift_x: float):
    """The reference (first slice past the cartilage) and the truth VOI of a labelled femur;
    with an axis tilt the labels are rotated in place and the VOI is a mask. Returns the
    reference's distance index from the distal end, its array index, the VOI slices, whether
    the VOI is complete, the bone truth, the VOI's BV/TV, the tilt record and the VOI mask."""
    nz, ny, nx = labels.shape
    has_cart = np.flatnonzero((labels == _CART).any(axis=(1, 2)))
    last_cart = int(has_cart.max()) if distal_first else nz - 1 - int(has_cart.min())
    ref_k = last_cart + 1
    n_off = int(round(voi_offset_mm / vox))
    n_h = int(round(voi_height_mm / vox))
    v0, v1 = ref_k + n_off, ref_k + n_off + n_h
    complete = v1 <= nz
    v0, v1 = min(v0, nz), min(v1, nz)
    voi_mask_array = None
    tilt: dict[str, Any] = {}
    if axis_tilt_deg != 0:
        lab_df = labels if distal_first else labels[::-1]
        voi_b = np.zeros(labels.shape, dtype=np.uint8)
        part = lab_df[v0:v1]
        voi_b[v0:v1] = (part >= MARROW) & (part <= TRAB)
        axis_yx = ((ny - 1) / 2.0 + shift_y / vox, (nx - 1) / 2.0 + shift_x / vox)
        tilt, rotated, voi_df = _tilt_volume(
            lab_df, voi_b, axis_tilt_deg, axis_azimuth_deg, ref_k, axis_yx, vox, distal_first
        )
        lab_df[...] = rotated
        del rotated, voi_b
        voi_mask_array = voi_df if distal_first else np.ascontiguousarray(voi_df[::-1])
        del voi_df
        ref_index = tilt.pop("ref_index")
        zs = np.flatnonzero(voi_mask_array.any(axis=(1, 2)))
        z0, z1 = (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, 0)
        bone_truth = labels >= TRAB
        tv = int(np.count_nonzero(voi_mask_array))
        bv_truth = (float(np.count_nonzero(bone_truth & voi_mask_array) / tv) if tv
                    else float("nan"))
    else:
        ay, ax = shift_y / vox + (ny - 1) / 2.0, shift_x / vox + (nx - 1) / 2.0
        tilt = {
            "axis_direction_zyx": [1.0 if distal_first else -1.0, 0.0, 0.0],
            "ref_point_mm": [(ref_k if distal_first else nz - 1 - ref_k) * vox, ay * vox,
                             ax * vox],
        }
        if distal_first:
            ref_index, z0, z1 = ref_k, v0, v1
        else:
            ref_index, z0, z1 = nz - 1 - ref_k, nz - v1, nz - v0
        bone_truth = labels >= TRAB
        lab_voi = labels[z0:z1]
        endo_voi = (lab_voi >= MARROW) & (lab_voi <= TRAB)
        tv = int(np.count_nonzero(endo_voi))
        bv_truth = float(np.count_nonzero(lab_voi == TRAB) / tv) if tv else float("nan")

    return ref_k, ref_index, z0, z1, complete, bone_truth, bv_truth, tilt, voi_mask_array


def _femur_grey(labels: np.ndarray, distal_first: bool, rng_dep: np.random.Generator,
                rng_noise: np.random.Generator, *, rings: int, ring_amplitude: float,
                specks: int, round_roi: bool, blur_vox: float, noise_sd: float,
                bit_depth: int) -> np.ndarray:
    """The reconstruction of a labelled femur: grey levels, partial-volume blur, noise, rings,
    specks, bit depth and round-ROI zeros (chunks run from the distal end in both stack
    orders, so a proximal-first femur is exactly the reversed distal-first one)."""
    nz, ny, nx = labels.shape
    gmax = 255.0 if bit_depth == 8 else 65535.0
    grey = np.empty((nz, ny, nx), dtype=np.uint8 if bit_depth == 8 else np.uint16)
    rings_grey = ring_profile(rng_dep, ny, nx, rings, ring_amplitude) if rings else None
    speck_list = (speck_positions(rng_dep, labels if distal_first else labels[::-1], specks,
                                  round_roi, below=_SOFT, z_margin=0, tries=200)
                  if specks else [])
    halo = int(math.ceil(3.0 * blur_vox)) if blur_vox > 0 else 0
    chunk = 32
    # White noise: windows at random offsets into a pool of normal deviates two chunks long
    # (drawing 30 M deviates per scan would dominate the run time).
    n_chunk = chunk * ny * nx
    pool = np.float32(noise_sd) * rng_noise.standard_normal(2 * n_chunk, dtype=np.float32)
    # chunks run from the distal end in both stack orders, so a proximal-first femur is
    # exactly the reversed distal-first one
    lab_df = labels if distal_first else labels[::-1]
    grey_df = grey if distal_first else grey[::-1]
    for z0c in range(0, nz, chunk):
        z1c = min(nz, z0c + chunk)
        a, b = max(0, z0c - halo), min(nz, z1c + halo)
        g = GREY[lab_df[a:b]]
        if blur_vox > 0:
            ndimage.gaussian_filter(g, blur_vox, mode="nearest", truncate=3.0, output=g)
        g = g[z0c - a : z1c - a]
        if noise_sd > 0:
            off = int(rng_noise.integers(0, pool.size - g.size + 1))
            g += pool[off : off + g.size].reshape(g.shape)
        if rings_grey is not None:
            g += rings_grey
        for zs_, ys_, xs_, size, level in speck_list:
            if z0c <= zs_ < z1c:
                g[zs_ - z0c : zs_ - z0c + size, ys_ : ys_ + size, xs_ : xs_ + size] = level
        if bit_depth != 8:
            g *= np.float32(gmax / 255.0)
        np.rint(g, out=g)
        np.clip(g, 0.0, gmax, out=g)
        grey_df[z0c:z1c] = g
    if round_roi:
        round_roi_zeros(grey)

    return grey

