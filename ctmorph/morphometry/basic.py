"""Volumes and surface of a segmented VOI: TV, BV, BS (mm³ and mm²).

Also holds the small input helpers the other morphometry modules share (mask validation).
"""

from __future__ import annotations

import numpy as np

from .._kernels.mesh import voi_triangle_areas
from ..errors import ConfigError
from ..spacing import normalize_spacing

__all__ = [
    "as_mask",
    "bounding_box",
    "crop",
    "voxel_volume",
    "tissue_volume",
    "bone_volume",
    "bone_surface",
]

# Voxels meshed at a time by bone_surface (bounds the marching-cubes memory).
_CHUNK_VOXELS = 2**20


def as_mask(mask, name: str = "mask", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``mask`` as a 3-D boolean array (no copy when it already is one).

    Parameters
    ----------
    mask : (Z, Y, X) array_like of bool or integer
        Nonzero means inside. Floating-point arrays are refused (a grey image passed by mistake).
    name : str
        Argument name used in error messages.
    shape : tuple of int, optional
        Required shape (to check that a VOI matches its image).

    Raises
    ------
    ConfigError
        If the array is not 3-D, has a non-integer dtype, or the wrong shape.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ConfigError(f"{name} must be a 3-D (Z, Y, X) array, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(
                f"{name} must be a boolean (or 0/1 integer) array, got dtype {arr.dtype}; "
                "threshold grey images first"
            )
        arr = arr != 0
    if shape is not None and arr.shape != tuple(shape):
        raise ConfigError(f"{name} has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """``(z0, z1, y0, y1, x0, x1)``: the smallest box (half-open) holding every True voxel of a
    non-empty 3-D mask."""
    box: list[int] = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        box += [int(idx[0]), int(idx[-1]) + 1]
    return tuple(box)  # type: ignore[return-value]


def crop(a: np.ndarray, box: tuple[int, int, int, int, int, int]) -> np.ndarray:
    """View of ``a`` inside ``box`` (as returned by :func:`bounding_box`)."""
    z0, z1, y0, y1, x0, x1 = box
    return a[z0:z1, y0:y1, x0:x1]


def voxel_volume(spacing) -> float:
    """Volume of one voxel in mm³ for ``spacing = (dz, dy, dx)`` in mm."""
    dz, dy, dx = normalize_spacing(spacing)
    return dz * dy * dx


def tissue_volume(voi, *, spacing) -> float:
    """TV: number of VOI voxels × voxel volume (mm³).

    Parameters
    ----------
    voi : (Z, Y, X) ndarray of bool
        Volume of interest.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    """
    voi = as_mask(voi, "voi")
    return float(np.count_nonzero(voi)) * voxel_volume(spacing)


def bone_volume(bone, voi=None, *, spacing) -> float:
    """BV: number of bone voxels inside the VOI × voxel volume (mm³).

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone.
    voi : (Z, Y, X) ndarray of bool, optional
        Volume of interest (default: the whole image).
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    """
    bone = as_mask(bone, "bone")
    if voi is None:
        n = np.count_nonzero(bone)
    else:
        n = np.count_nonzero(bone & as_mask(voi, "voi", bone.shape))
    return float(n) * voxel_volume(spacing)


def bone_surface(bone, voi=None, *, spacing) -> float:
    """BS: marching-cubes surface area of the bone inside the VOI (mm²).

    The isosurface at level 0.5 of the binary bone image is computed with
    :func:`skimage.measure.marching_cubes` (Lorensen & Cline 1987) on the bone padded by edge
    replication, so the image border creates no surface. A triangle belongs to the VOI when the
    voxel nearest to its centroid is a VOI voxel; faces cut by the VOI wall therefore never
    appear (only the bone/marrow interface counts).

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone, including context around the VOI.
    voi : (Z, Y, X) ndarray of bool, optional
        Volume of interest (default: the whole image).
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.

    Returns
    -------
    float
        Surface area in mm².

    Notes
    -----
    On a binary image the surface is a faceted staircase: exact for axis-aligned faces, an
    overestimate of a few per cent for oblique and curved ones.
    """
    from skimage.measure import marching_cubes

    bone = as_mask(bone, "bone")
    sp = np.asarray(normalize_spacing(spacing), dtype=np.float64)
    voi = np.ones(bone.shape, bool) if voi is None else as_mask(voi, "voi", bone.shape)
    if not voi.any():
        return 0.0
    # Only cubes with a VOI corner can hold a VOI triangle: crop to the VOI box ± 1 voxel, and
    # mesh it in z-chunks (each chunk keeps the triangles whose nearest voxel slice it owns;
    # marching cubes triangulates each cube from its 8 corners only, so chunks add up exactly).
    z0, z1, y0, y1, x0, x1 = bounding_box(voi)
    ys = slice(max(y0 - 1, 0), min(y1 + 1, bone.shape[1]))
    xs = slice(max(x0 - 1, 0), min(x1 + 1, bone.shape[2]))
    step = max(8, _CHUNK_VOXELS // ((ys.stop - ys.start) * (xs.stop - xs.start)))
    total = 0.0
    for zs in range(z0, z1, step):
        ze = min(zs + step, z1)
        lo = max(zs - 1, 0)
        crop = np.pad(bone[lo:min(ze + 1, bone.shape[0]), ys, xs], 1, mode="edge")
        crop = crop.astype(np.float32)
        if crop.min() == crop.max():
            continue
        # mesh in voxel units (exact half-voxel vertices), spacing applied in float64 afterwards
        verts, faces, _, _ = marching_cubes(crop, level=0.5)
        del crop
        areas = np.empty(len(faces), dtype=np.float64)
        origin = np.array([lo - 1 - zs, ys.start - 1, xs.start - 1], dtype=np.int64)
        voi_triangle_areas(verts, faces, sp, voi[zs:ze], origin, areas)
        total += float(areas.sum())
    return total
