"""The random fields of a sample femur's trabecular bone, kept on coarse grids and upsampled
slab by slab, and their calibration: the sheet and perforation fields of the secondary
spongiosa, the epiphysis's sheet field and the primary spongiosa's columns
(:func:`femur_fields`). Grid spacings and filter sigmas are in voxels unless named ``_mm``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..fields import sheet_field
from .design import (
    PRIMARY_MM,
    SIGMA_E_MM,
    SIGMA_G_MM,
    SIGMA_P_MM,
    VOI_HEIGHT_MM,
    VOI_OFFSET_MM,
    GroupDesign,
    RandomStreams,
)
from .geometry import FemurGeometry

__all__ = [
    "upsample_linear",
    "coarse_noise",
    "upsample_slab",
    "sample_coarse",
    "FemurFields",
    "femur_fields",
]


def upsample_linear(
    a: np.ndarray, shape: tuple[int, ...], factor: int, axes: tuple[int, ...] | None = None
) -> np.ndarray:
    """Linear interpolation of a coarse grid onto a ``factor`` times finer one.

    Coarse sample ``j`` sits at fine coordinate ``(j - 1 + 0.5) * factor - 0.5`` (one padding
    sample in front), so ``a`` needs ``ceil(n / factor) + 2`` samples per axis. Works with
    strided slices (one pair per residue of the fine index), not fancy indexing.

    Parameters
    ----------
    a : ndarray of float32
        Coarse grid.
    shape : tuple of int
        Fine shape (voxels); only the entries of ``axes`` are used.
    factor : int
        Fine voxels per coarse sample.
    axes : tuple of int, optional
        Axes to upsample (default: all).

    Returns
    -------
    ndarray of float32
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


def coarse_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float, factor: int
) -> np.ndarray:
    """Gaussian-filtered white noise (float32) on a ``factor`` times coarser grid than
    ``shape`` (voxels), padded for :func:`upsample_slab` (``ceil(n / factor) + 2`` samples per
    axis). ``sigma_vox`` is the filter sigma in fine voxels."""
    cshape = tuple(math.ceil(n / factor) + 2 for n in shape)
    noise = rng.standard_normal(cshape, dtype=np.float32)
    return ndimage.gaussian_filter(noise, sigma_vox / factor, mode="wrap", truncate=3.0)


def upsample_slab(
    coarse: np.ndarray, k0: int, k1: int, shape_yx: tuple[int, int], factor: int
) -> np.ndarray:
    """Fine slices ``k0..k1-1`` (float32, ``(k1 - k0, *shape_yx)``) of the linear upsampling of
    a :func:`coarse_noise` grid."""
    c = (np.arange(k0, k1, dtype=np.float64) + 0.5) / factor + 0.5
    i0 = np.floor(c).astype(np.intp)
    w = (c - i0).astype(np.float32)[:, None, None]
    lo = coarse[i0]
    part = coarse[i0 + 1] - lo
    part *= w
    part += lo
    return upsample_linear(part, (k1 - k0, *shape_yx), factor, axes=(1, 2))


def sample_coarse(
    coarse: np.ndarray, factor: int, k: np.ndarray, y: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Values of the upsampled field at fine voxel coordinates ``(k, y, x)`` (trilinear, like
    :func:`upsample_slab`)."""
    coords = [(np.asarray(v, dtype=np.float64) + 0.5) / factor + 0.5 for v in (k, y, x)]
    return ndimage.map_coordinates(coarse, coords, order=1, mode="nearest")


@dataclass(eq=False)
class FemurFields:
    """The random fields of a sample femur on their coarse grids, and the look-up tables that
    turn a design BV/TV into their thresholds.

    Attributes
    ----------
    f_coarse, f_fac : ndarray, int
        Sheet field of the secondary spongiosa (``|f|`` about the distance to the sheet, in
        voxels) and its coarsening factor.
    g_coarse, g_fac : ndarray, int
        Perforation field and its coarsening factor.
    g_lo, g_scale : float32
        Perforation weight ``w = clip((g - g_lo) * g_scale, 0, 1)``.
    prob, u_lut : ndarray
        BV/TV (fraction) and the threshold of ``|f| / w`` giving it in the design VOI.
    e_coarse, e_fac, k_ea : ndarray, int, int
        Epiphyseal sheet field, its coarsening factor and the slices it covers (``0..k_ea-1``).
    t_epi : float
        Threshold of the epiphyseal ``|f|`` giving the group's epiphyseal BV/TV.
    k_pa, k_pb, p_field, p_lut : int, int, ndarray, ndarray
        Primary spongiosa: slices ``k_pa..k_pb-1``, its field there (full resolution) and the
        threshold giving each BV/TV of ``prob``.
    ref_mm_est : float
        Estimated reference (mm from the distal end): the most proximal cartilage.
    """

    f_coarse: np.ndarray
    f_fac: int
    g_coarse: np.ndarray
    g_fac: int
    g_lo: np.float32
    g_scale: np.float32
    prob: np.ndarray
    u_lut: np.ndarray
    e_coarse: np.ndarray
    e_fac: int
    k_ea: int
    t_epi: float
    k_pa: int
    k_pb: int
    p_field: np.ndarray
    p_lut: np.ndarray
    ref_mm_est: float


def femur_fields(design: GroupDesign, shape: tuple[int, int, int], vox: float,
                 geometry: FemurGeometry, streams: RandomStreams) -> FemurFields:
    """The secondary spongiosa's sheet and perforation fields calibrated inside the design
    VOI, the epiphysis's field and threshold, the primary spongiosa's field.

    Parameters
    ----------
    design : GroupDesign
        Trabecular design of the femur's group.
    shape : (int, int, int)
        Volume shape ``(Z, Y, X)`` in voxels.
    vox : float
        Voxel size in mm.
    geometry : FemurGeometry
        Cross-section and growth plate (where the VOI and the spongiosae lie).
    streams : RandomStreams
        Draws from ``sheets``, ``perforation``, ``primary``, ``calibration`` and ``epiphysis``.

    Returns
    -------
    FemurFields
    """
    nz, ny, nx = shape
    rho, r_shaft = geometry.rho, geometry.r_shaft
    s_dist, s_prox = geometry.s_dist, geometry.s_prox
    rng_q = streams.calibration
    f_fac = max(2, int(design.cell_mm / vox // 6))  # coarse grid: >= 6 voxels per sigma
    g_fac = 3
    f_coarse = sheet_field(coarse_noise(streams.sheets, (nz, ny, nx), design.cell_mm / vox,
                                        f_fac))
    g_coarse = coarse_noise(streams.perforation, (nz, ny, nx), SIGMA_G_MM / vox, g_fac)
    g_q = np.quantile(g_coarse, [design.perforated, 0.5, 0.8413])
    g_lo, g_scale = np.float32(g_q[0]), np.float32(1.0 / (0.3 * float(g_q[2] - g_q[1])))
    # w = clip((g - g_lo) * g_scale, 0, 1): 0 in perforations, ramping to 1 over 0.3 SD of g

    # calibration of |f| / w inside the design VOI (random fields of this scale still vary
    # between regions; calibrating where the VOI is hits the target)
    ref_mm_est = float(s_prox.max())
    vk = (
        ref_mm_est + VOI_OFFSET_MM + (VOI_HEIGHT_MM * rng_q.random(300_000))
    ) / vox - 0.5
    vk = np.clip(vk, 0, nz - 1)
    inner = np.flatnonzero(rho.ravel() < 0.8 * r_shaft.ravel())
    pix = inner[rng_q.integers(0, inner.size, vk.size)]
    vy, vx = pix // nx, pix % nx
    fs = np.abs(sample_coarse(f_coarse, f_fac, vk, vy, vx))
    ws = np.clip((sample_coarse(g_coarse, g_fac, vk, vy, vx) - g_lo) * g_scale, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        u_sample = np.where(ws > 0, fs / np.maximum(ws, 1e-12), np.inf)
    prob = np.linspace(0.0, 0.95, 191)
    u_sorted = np.sort(u_sample)
    u_lut = u_sorted[np.minimum((prob * u_sorted.size).astype(np.intp), u_sorted.size - 1)]
    # epiphysis: its own sheet field (the same in every group), no perforations
    k_ea = min(nz, int(math.ceil(float(s_dist.max()) / vox)) + 1)
    e_fac = max(2, int(SIGMA_E_MM / vox // 6))
    e_coarse = sheet_field(coarse_noise(streams.epiphysis, (k_ea, ny, nx), SIGMA_E_MM / vox,
                                        e_fac))
    ek = rng_q.integers(0, k_ea, 100_000)
    ep = inner[rng_q.integers(0, inner.size, ek.size)]
    es = np.abs(sample_coarse(e_coarse, e_fac, ek, ep // nx, ep % nx))
    t_epi = float(np.quantile(es, design.epiphysis_bv_tv))

    # primary spongiosa: a slab of column-like field just proximal of the cartilage
    k_pa = max(0, int(math.floor(float(s_prox.min()) / vox)) - 1)
    k_pb = min(nz, int(math.ceil((float(s_prox.max()) + PRIMARY_MM) / vox)) + 1)
    sig_p = (SIGMA_P_MM[0] / vox, SIGMA_P_MM[1] / vox, SIGMA_P_MM[1] / vox)
    p_field = ndimage.gaussian_filter(
        streams.primary.standard_normal((k_pb - k_pa, ny, nx), dtype=np.float32), sig_p,
        mode="wrap", truncate=3.0,
    )
    p_sorted = np.sort(p_field.ravel()[rng_q.integers(0, p_field.size, 200_000)])
    p_lut = p_sorted[np.minimum(((1.0 - prob) * p_sorted.size).astype(np.intp),
                                p_sorted.size - 1)]

    return FemurFields(
        f_coarse=f_coarse, f_fac=f_fac, g_coarse=g_coarse, g_fac=g_fac, g_lo=g_lo,
        g_scale=g_scale, prob=prob, u_lut=u_lut, e_coarse=e_coarse, e_fac=e_fac, k_ea=k_ea,
        t_epi=t_epi, k_pa=k_pa, k_pb=k_pb, p_field=p_field, p_lut=p_lut, ref_mm_est=ref_mm_est,
    )
