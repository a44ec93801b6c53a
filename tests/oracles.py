"""Slow, obviously correct reference implementations for the kernel tests.

Each follows the written definition directly, with no cleverness beyond numpy vectorisation:
small volumes only.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

# Voxel sizes whose squares and sums are exact in binary floating point: the brute-force
# oracles (float64, mm) and the kernels (float32, internal unit) must then agree to the last
# bit and take the same side of every "voxel exactly on the sphere" tie.
EXACT_SPACINGS = [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.5, 0.25, 0.375)]


def _centres(shape, spacing):
    """Physical coordinates (mm) of every voxel centre, shape (N, 3), C order."""
    grids = np.meshgrid(*(np.arange(s) * float(d) for s, d in zip(shape, spacing, strict=True)),
                        indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def squared_edt(mask, spacing):
    """Squared distance (mm²) from each True voxel centre to the nearest False voxel centre
    inside the image; 0 on False voxels, inf everywhere when the image has no False voxel."""
    mask = np.asarray(mask, bool)
    pts = _centres(mask.shape, spacing)
    flat = mask.ravel()
    bg = pts[~flat]
    out = np.zeros(mask.size, np.float64)
    if bg.size == 0:
        out[flat] = np.inf
        return out.reshape(mask.shape)
    idx = np.flatnonzero(flat)
    for start in range(0, idx.size, 512):
        chunk = idx[start:start + 512]
        out[chunk] = cdist(pts[chunk], bg, "sqeuclidean").min(axis=1)
    return out.reshape(mask.shape)


def local_thickness(mask, spacing, convention="uncorrected"):
    """Local thickness by the definition: for every phase voxel p with squared distance D_p to
    the background, every voxel centre q with |q - p|² < D_p gets max(τ(q), 2·sqrt(D_p)).

    Only the voxels in the box of half-width ceil(sqrt(D_p) / spacing) around p are tested,
    which holds every q with |q - p| < sqrt(D_p). ``"corrected"`` subtracts half the mean
    voxel size on the phase.
    """
    mask = np.asarray(mask, bool)
    spacing = np.asarray(spacing, np.float64)
    d2 = squared_edt(mask, spacing)
    tau = np.zeros(mask.shape, np.float64)
    for p in zip(*np.nonzero(mask), strict=True):
        dp2 = d2[p]
        half = np.ceil(np.sqrt(dp2) / spacing).astype(int)
        lo = np.maximum(np.asarray(p) - half, 0)
        hi = np.minimum(np.asarray(p) + half + 1, mask.shape)
        axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
        gz, gy, gx = np.meshgrid(*axes, indexing="ij")
        q2 = (((gz - p[0]) * spacing[0]) ** 2 + ((gy - p[1]) * spacing[1]) ** 2
              + ((gx - p[2]) * spacing[2]) ** 2)
        box = tau[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        np.maximum(box, np.where(q2 < dp2, 2.0 * np.sqrt(dp2), 0.0), out=box)
    if convention == "corrected":
        tau[mask] -= 0.5 * float(np.mean(spacing))
    return tau


def topological_numbers(cube):
    """(T26, T6bar) of the centre of a (3, 3, 3) boolean neighbourhood, by labelling.

    T26: 26-connected components of object in the 26-neighbourhood minus the centre.
    T6bar: 6-connected components of background in the 18-neighbourhood minus the centre that
    contain one of the six face neighbours (Bertrand & Malandain 1994).
    """
    from scipy import ndimage

    cube = np.asarray(cube, bool).copy()
    cube[1, 1, 1] = False
    _, t26 = ndimage.label(cube, structure=np.ones((3, 3, 3)))
    offsets = np.abs(np.indices((3, 3, 3)) - 1).sum(axis=0)
    n18 = (offsets >= 1) & (offsets <= 2)
    labels, _ = ndimage.label(~cube & n18, structure=ndimage.generate_binary_structure(3, 1))
    faces = labels[offsets == 1]
    return t26, len(set(faces[faces > 0].tolist()))


def bone_surface(bone, voi, spacing):
    """Marching-cubes area (mm²) of the triangles whose centroid's nearest voxel is in the VOI,
    on the whole image padded by edge replication (no cropping)."""
    from skimage.measure import marching_cubes

    padded = np.pad(np.asarray(bone, np.float32), 1, mode="edge")
    verts, faces, _, _ = marching_cubes(padded, level=0.5)
    tri = verts[faces].astype(np.float64)  # voxel units of the padded image
    nearest = np.floor(tri.mean(axis=1) + 0.5).astype(int) - 1
    ok = np.all((nearest >= 0) & (nearest < np.asarray(bone.shape)), axis=1)
    keep = np.zeros(len(tri), bool)
    keep[ok] = voi[tuple(nearest[ok].T)]
    tri = tri[keep] * np.asarray(spacing, np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return 0.5 * np.linalg.norm(cross, axis=1).sum()
