"""Volumes and surface of a segmented VOI: TV, BV, BS (mm³ and mm²)."""

from __future__ import annotations

import numpy as np

from .._kernels.mesh import voi_triangle_areas
from ..errors import SegmentationError
from ..spacing import normalize_spacing
from .arrays import as_mask, check_chunk_slices
from .zsource import ArraySource, block_ranges, chunk_slices_for

__all__ = [
    "voxel_volume",
    "tissue_volume",
    "bone_volume",
    "bone_surface",
    "bone_surface_chunked",
]

# Voxels meshed at a time by bone_surface (bounds the marching-cubes memory).
_CHUNK_VOXELS = 2**20


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
        Surface area in mm²; 0 when the VOI is empty.

    Notes
    -----
    On a binary image the surface is a faceted staircase: exact for axis-aligned faces, an
    overestimate of a few per cent for oblique and curved ones. Computed by
    :func:`bone_surface_chunked` on the arrays in one block (same result).
    """
    bone = as_mask(bone, "bone")
    sp = normalize_spacing(spacing)
    src = ArraySource(bone, None if voi is None else as_mask(voi, "voi", bone.shape))
    return bone_surface_chunked(src, spacing=sp)


def surface_layout(box: tuple[int, int, int, int, int, int], shape: tuple[int, ...],
                    chunk_slices: int | None) -> tuple[slice, slice, int, int]:
    """In-plane crop (VOI box ± 1 voxel, clipped), mesh step and read step of BS.

    The mesh step is ``max(8, _CHUNK_VOXELS // plane)`` slices, lowered to ``chunk_slices``
    when that is smaller; the read step is the largest multiple of the mesh step not above
    ``chunk_slices`` (at least one mesh step; default: about
    :data:`~ctmorph.morphometry.zsource.DEFAULT_BLOCK_VOXELS` voxels), so the meshes, and
    hence the float sums, do not depend on the read step."""
    _, _, y0, y1, x0, x1 = box
    ys = slice(max(y0 - 1, 0), min(y1 + 1, shape[1]))
    xs = slice(max(x0 - 1, 0), min(x1 + 1, shape[2]))
    mstep = max(8, _CHUNK_VOXELS // ((ys.stop - ys.start) * (xs.stop - xs.start)))
    if chunk_slices is None:
        chunk_slices = max(mstep, chunk_slices_for(shape))
    mstep = min(mstep, chunk_slices)
    return ys, xs, mstep, max(1, chunk_slices // mstep) * mstep


def block_surface_sums(bone: np.ndarray, lo: int, voi: np.ndarray, zs: int, ze: int,
                        mstep: int, sp: np.ndarray, nz: int) -> list[float]:
    """Marching-cubes VOI areas (mm²) of slices ``[zs, ze)``, one sum per mesh chunk of
    ``mstep`` slices starting at ``zs``.

    ``bone`` holds image slices ``[lo, lo + len)`` ⊇ ``[zs - 1, ze + 1)`` ∩ ``[0, nz)`` and
    ``voi`` slices ``[zs, ze)``, both cropped in-plane to the same box (VOI box ± 1 voxel,
    clipped to the image; ``nz`` is the image's slice count). Only cubes with a VOI corner can
    hold a VOI triangle, and marching cubes triangulates each cube from its 8 corners, so the
    chunks add up exactly: each keeps the triangles whose nearest voxel slice it owns."""
    from skimage.measure import marching_cubes

    sums: list[float] = []
    for cs in range(zs, ze, mstep):
        ce = min(cs + mstep, ze)
        a = max(cs - 1, 0)
        field = np.pad(bone[a - lo:min(ce + 1, nz) - lo], 1, mode="edge").astype(np.float32)
        if field.min() == field.max():
            continue
        # mesh in voxel units (exact half-voxel vertices), spacing applied in float64 afterwards
        verts, faces, _, _ = marching_cubes(field, level=0.5)
        del field
        areas = np.empty(len(faces), dtype=np.float64)
        origin = np.array([a - 1 - cs, -1, -1], dtype=np.int64)
        voi_triangle_areas(verts, faces, sp, np.ascontiguousarray(voi[cs - zs:ce - zs]),
                           origin, areas)
        sums.append(float(areas.sum()))
    return sums


def bone_surface_chunked(src, *, spacing, chunk_slices: int | None = None) -> float:
    """BS of a :class:`~ctmorph.morphometry.zsource.ZSource`, read in z-blocks (mm²).

    Equals :func:`bone_surface` of the source's bone and VOI: the same triangles, summed per
    mesh chunk in another order only when ``chunk_slices`` is below the mesh chunk
    (``max(8, 2**20 // plane)`` slices of the VOI box ± 1; then relative differences ~1e-15).

    Parameters
    ----------
    src : ZSource
        Bone and VOI (the marrow space is not used).
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    chunk_slices : int, optional
        Slices per block read (default :func:`~ctmorph.morphometry.zsource.chunk_slices_for`,
        at least one mesh chunk); each read adds one slice on either side.

    Returns
    -------
    float
        Surface area in mm²; 0 when the VOI is empty.

    Raises
    ------
    ConfigError
        Bad spacing or ``chunk_slices``.

    Notes
    -----
    Memory: one block of ``chunk_slices + 2`` slices as read from the source, its in-plane crop,
    and the mesh of at most ``max(8, 2**20 // plane)`` slices (~1 M voxels).
    """
    sp = np.asarray(normalize_spacing(spacing), dtype=np.float64)
    chunk_slices = check_chunk_slices(chunk_slices)
    shape = tuple(int(s) for s in src.shape)
    try:
        box = src.voi_box()
    except SegmentationError:
        return 0.0  # like bone_surface: an empty VOI has no surface
    ys, xs, mstep, rstep = surface_layout(box, shape, chunk_slices)
    nz = shape[0]
    total = 0.0
    for zs, ze in block_ranges(box[0], box[1], rstep):
        lo, hi = max(zs - 1, 0), min(ze + 1, nz)
        blk = src.read(lo, hi)
        bone = blk.bone[:, ys, xs]
        voi = blk.voi[zs - lo:ze - lo, ys, xs]
        del blk
        for s in block_surface_sums(bone, lo, voi, zs, ze, mstep, sp, nz):
            total += s
    return total
