"""A shaded-ready surface of a segmented bone: marching cubes of the smoothed mask, normals
from the smoothed image's gradient, ambient occlusion from the volume.

Coordinates are ``(z, y, x)`` in mm, voxel ``(0, 0, 0)``'s centre at the origin.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes

from .._kernels.sample import sample_trilinear
from ..errors import ConfigError
from ..spacing import normalize_spacing

__all__ = ["BoneMesh", "CutPlane", "bone_mesh"]

logger = logging.getLogger(__name__)

#: Occupancy seen at distance sigma outside a flat surface of a smoothed half-space
#: (Φ(-1)): ambient occlusion is scaled so that such an open flat surface is unoccluded.
_FLAT_OCCUPANCY = 0.5 * math.erfc(1.0 / math.sqrt(2.0))


@dataclass(frozen=True)
class CutPlane:
    """A plane that removes the half-space its normal points into (a cut-away).

    Attributes
    ----------
    point_mm : (float, float, float)
        A point of the plane, ``(z, y, x)`` in mm (voxel ``(0, 0, 0)``'s centre at 0).
    normal : (float, float, float)
        Direction ``(z, y, x)`` of the removed side (need not be unit length).
    """

    point_mm: tuple[float, float, float]
    normal: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class BoneMesh:
    """A triangle surface with per-vertex shading inputs.

    Attributes
    ----------
    vertices : (V, 3) ndarray of float64
        Positions ``(z, y, x)`` in mm.
    faces : (T, 3) ndarray of int64
        Vertex indices of each triangle.
    normals : (V, 3) ndarray of float64
        Outward unit normals ``(z, y, x)``: minus the normalised gradient of the smoothed
        indicator (a smooth surface, not the voxel staircase).
    ao : (V,) ndarray of float64
        Ambient-occlusion factor in [0, 1]: 1 on an open surface, lower where the volume
        around the vertex is occupied (deep in the structure).
    highlight : (V,) ndarray of float64
        1 where the vertex lies in the ``highlight`` mask, else 0 (all 1 without a mask).
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    ao: np.ndarray
    highlight: np.ndarray


def _cut_field(field: np.ndarray, spacing: tuple[float, ...], pad: int,
               cut: CutPlane) -> np.ndarray:
    """``min(field, ramp)``, the ramp 1 on the kept side and 0.5 on the plane.

    The ramp falls by 1 per voxel (the smallest voxel size) across the plane, so solid bone
    (field > 0.5) ends exactly at the plane: the surface closes there with a flat cap whose
    gradient is the plane's normal.
    """
    n = np.asarray(cut.normal, dtype=np.float64)
    norm = float(np.linalg.norm(n))
    if not (math.isfinite(norm) and norm > 0):
        raise ConfigError(f"cut normal must be a non-zero vector (z, y, x), got {cut.normal!r}")
    n = n / norm
    p = np.asarray(cut.point_mm, dtype=np.float64)
    axes = [(np.arange(s, dtype=np.float64) - pad) * sp for s, sp in zip(field.shape, spacing,
                                                                        strict=True)]
    dist = ((axes[0][:, None, None] - p[0]) * n[0] + (axes[1][None, :, None] - p[1]) * n[1]
            + (axes[2][None, None, :] - p[2]) * n[2]) / min(spacing)
    ramp = np.clip(0.5 - dist, 0.0, 1.0).astype(np.float32)
    return np.minimum(field, ramp)


def _smoothed(indicator: np.ndarray, sigma: float, spacing: tuple[float, ...], pad: int,
              cut: CutPlane | None) -> np.ndarray:
    """The indicator smoothed at ``sigma`` voxels, then cut."""
    field = ndimage.gaussian_filter(indicator, sigma, mode="constant", cval=0.0) \
        if sigma > 0 else indicator
    return field if cut is None else _cut_field(field, spacing, pad, cut)


def _sample(volume: np.ndarray, points_vox: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at ``(N, 3)`` voxel coordinates (0 outside)."""
    out = np.empty(len(points_vox))
    sample_trilinear(np.ascontiguousarray(volume),
                     np.ascontiguousarray(points_vox, dtype=np.float64), out)
    return out


def _normals(field: np.ndarray, verts_vox: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Outward unit normals: minus the central-difference gradient (per mm) of the trilinear
    field at the vertices, one voxel either side."""
    grad = np.empty_like(verts_vox)
    for k in range(3):
        step = np.zeros(3)
        step[k] = 1.0
        grad[:, k] = (_sample(field, verts_vox + step) - _sample(field, verts_vox - step)) \
            / (2.0 * spacing[k])
    norm = np.linalg.norm(grad, axis=1, keepdims=True)
    normals = -grad / np.where(norm > 0, norm, 1.0)
    return normals


def _ambient_occlusion(field: np.ndarray, verts_vox: np.ndarray, normals: np.ndarray,
                       spacing: np.ndarray, ao_radii_mm: Sequence[float]) -> np.ndarray:
    """Obscurance: 1 - occupancy of the volume smoothed at each radius, sampled one radius
    outside the surface along the normal, scaled so that an open flat surface is 1; the mean
    over the radii."""
    ao = np.zeros(len(verts_vox))
    for radius in ao_radii_mm:
        sigma = [radius / s for s in spacing]
        occ = ndimage.gaussian_filter(field, sigma, mode="constant", cval=0.0, truncate=3.0)
        probe = verts_vox + normals * (radius / spacing)
        occupied = _sample(occ, probe)
        ao += np.clip((1.0 - occupied) / (1.0 - _FLAT_OCCUPANCY), 0.0, 1.0)
    return ao / len(ao_radii_mm)


def _highlight_flags(highlight: np.ndarray, verts_vox: np.ndarray, normals: np.ndarray,
                     spacing: np.ndarray) -> np.ndarray:
    """1 where the voxel half a voxel inside the surface from the vertex is in ``highlight``."""
    inside = verts_vox - 0.5 * normals * (min(spacing) / spacing)
    idx = np.rint(inside).astype(np.int64)
    for k in range(3):
        np.clip(idx[:, k], 0, highlight.shape[k] - 1, out=idx[:, k])
    return highlight[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float64)


def _check_masks(mask: np.ndarray, highlight: np.ndarray | None) -> None:
    if mask.ndim != 3:
        raise ConfigError(f"mask must be a 3-D (z, y, x) array, got shape {mask.shape}")
    if not mask.any():
        raise ConfigError("mask holds no bone voxel: nothing to render")
    if highlight is not None and highlight.shape != mask.shape:
        raise ConfigError(f"highlight must have the mask's shape {mask.shape}, "
                          f"got {highlight.shape}")


def bone_mesh(
    mask: np.ndarray,
    spacing: float | Sequence[float],
    *,
    smooth_vox: float = 0.8,
    normal_smooth_vox: float = 1.5,
    ao: bool = True,
    ao_radii_mm: Sequence[float] | None = None,
    highlight: np.ndarray | None = None,
    cut: CutPlane | None = None,
    step_size: int = 1,
) -> BoneMesh:
    """Surface of a bone mask with smooth normals and ambient occlusion.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        Bone voxels.
    spacing : float or (dz, dy, dx)
        Voxel size in mm.
    smooth_vox : float
        Gaussian sigma (voxels) applied to the 0/1 indicator before meshing at level 0.5: it
        removes the voxel staircase while keeping the surface where the mask's boundary is
        (a ball of radius r moves inward by about ``smooth_vox² / r`` voxels).
    normal_smooth_vox : float
        Gaussian sigma (voxels) of the image whose gradient gives the normals: larger than
        ``smooth_vox`` so that the terraces a gently sloping voxel surface leaves after light
        smoothing do not show as ripples in the shading.
    ao : bool
        Compute ambient occlusion (else all vertices get 1).
    ao_radii_mm : sequence of float, optional
        Scales (mm) of the occupancy that darkens a vertex; default 3 and 8 voxels of the
        smallest voxel size (a trabecular neighbourhood and the structure around it).
    highlight : (Z, Y, X) ndarray of bool, optional
        Region (e.g. the trabecular VOI) whose surface is flagged for colour.
    cut : CutPlane, optional
        Remove the volume beyond this plane; the bone's cut face is closed (capped) by a flat
        surface on the plane.
    step_size : int
        Marching-cubes step in voxels (1: full resolution; 2 gives about 4 times fewer
        triangles for large volumes).

    Returns
    -------
    BoneMesh
        Vertices in mm, faces, outward normals, ambient occlusion and highlight flags.

    Raises
    ------
    ConfigError
        For a mask that is not 3-D or is empty, a highlight of another shape, a zero cut
        normal or a cut that removes all bone.

    Notes
    -----
    Marching cubes (Lewiner et al. 2003, :func:`skimage.measure.marching_cubes`) on the
    smoothed indicator. Ambient occlusion is an obscurance estimate (Zhukov et al. 1998) read
    from the volume instead of by ray casting: the occupancy of the indicator smoothed at a
    larger scale, sampled outside the surface along the normal.
    """
    mask = np.asarray(mask)
    _check_masks(mask, highlight)
    sp = np.asarray(normalize_spacing(spacing), dtype=np.float64)
    radii = tuple(ao_radii_mm) if ao_radii_mm is not None else (3 * sp.min(), 8 * sp.min())
    # pad with empty space so the surface closes at the volume's border
    pad = int(math.ceil(3 * max(smooth_vox, normal_smooth_vox))) + 2
    indicator = np.pad(mask.astype(np.float32), pad)
    field = _smoothed(indicator, smooth_vox, tuple(sp), pad, cut)
    normal_field = _smoothed(indicator, normal_smooth_vox, tuple(sp), pad, cut)
    del indicator
    if field.max() <= 0.5:
        raise ConfigError("no bone left to render (cut plane or smoothing removed it all)")
    verts, faces, _, _ = marching_cubes(field, 0.5, step_size=step_size,
                                        allow_degenerate=False)
    verts_vox = verts.astype(np.float64)
    normals = _normals(normal_field, verts_vox, sp)
    if ao:
        occ = _ambient_occlusion(field, verts_vox, normals, sp, radii)
    else:
        occ = np.ones(len(verts_vox))
    if highlight is not None:
        flags = _highlight_flags(np.pad(np.asarray(highlight, dtype=bool), pad), verts_vox,
                                 normals, sp)
    else:
        flags = np.ones(len(verts_vox))
    logger.debug("bone mesh: %d vertices, %d triangles", len(verts_vox), len(faces))
    return BoneMesh(vertices=(verts_vox - pad) * sp, faces=faces.astype(np.int64),
                    normals=normals, ao=occ, highlight=flags)
