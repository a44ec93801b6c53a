"""Triangle-mesh helpers for surface measures (numba kernels)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["voi_triangle_areas"]


@njit(cache=True, nogil=True, parallel=True)
def voi_triangle_areas(verts, faces, spacing, voi, origin, out):
    """Area of every triangle whose centroid's nearest voxel is a VOI voxel, 0 for the others.

    Parameters
    ----------
    verts : (V, 3) float ndarray
        Vertex positions in voxel index units ``(z, y, x)`` of the meshed array.
    faces : (T, 3) int ndarray
        Vertex indices of each triangle.
    spacing : (3,) float64 ndarray
        Voxel size per axis; areas are in its unit squared.
    voi : (Z, Y, X) bool ndarray
        VOI in image coordinates.
    origin : (3,) int64 ndarray
        Image index of the meshed array's voxel ``(0, 0, 0)``.
    out : (T,) float64 ndarray
        Output areas.
    """
    nz, ny, nx = voi.shape
    for t in prange(faces.shape[0]):
        a = faces[t, 0]
        b = faces[t, 1]
        c = faces[t, 2]
        inside = True
        idx = np.empty(3, np.int64)
        for k in range(3):
            centre = (np.float64(verts[a, k]) + verts[b, k] + verts[c, k]) / 3.0
            idx[k] = int(np.floor(centre + 0.5)) + origin[k]
        if not (0 <= idx[0] < nz and 0 <= idx[1] < ny and 0 <= idx[2] < nx):
            inside = False
        elif not voi[idx[0], idx[1], idx[2]]:
            inside = False
        if not inside:
            out[t] = 0.0
            continue
        e1z = (np.float64(verts[b, 0]) - verts[a, 0]) * spacing[0]
        e1y = (np.float64(verts[b, 1]) - verts[a, 1]) * spacing[1]
        e1x = (np.float64(verts[b, 2]) - verts[a, 2]) * spacing[2]
        e2z = (np.float64(verts[c, 0]) - verts[a, 0]) * spacing[0]
        e2y = (np.float64(verts[c, 1]) - verts[a, 1]) * spacing[1]
        e2x = (np.float64(verts[c, 2]) - verts[a, 2]) * spacing[2]
        cz = e1y * e2x - e1x * e2y
        cy = e1x * e2z - e1z * e2x
        cx = e1z * e2y - e1y * e2z
        out[t] = 0.5 * np.sqrt(cz * cz + cy * cy + cx * cx)
