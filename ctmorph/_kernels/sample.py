"""Trilinear sampling of a volume at many points (numba kernel of :mod:`ctmorph.render.mesh`).

Prepared arrays in, samples out; no validation. The same values as
``scipy.ndimage.map_coordinates(volume, points.T, order=1, mode="grid-constant")``: a
neighbour outside the volume counts as 0. Points are processed in parallel, each writing only
its own output.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["sample_trilinear"]


@njit(cache=True, nogil=True, parallel=True)
def sample_trilinear(volume, points, out):  # pragma: no cover - compiled
    """Trilinear interpolation of ``volume`` at ``points``.

    Parameters
    ----------
    volume : (Z, Y, X) float32 or float64 ndarray
        Values at the voxel centres (integer coordinates).
    points : (N, 3) float64 ndarray
        Coordinates ``(z, y, x)`` in voxel units.
    out : (N,) float64 ndarray
        Receives the samples (0 beyond one voxel outside the volume).
    """
    nz, ny, nx = volume.shape
    for n in prange(points.shape[0]):
        z, y, x = points[n, 0], points[n, 1], points[n, 2]
        z0 = int(np.floor(z))
        y0 = int(np.floor(y))
        x0 = int(np.floor(x))
        fz, fy, fx = z - z0, y - y0, x - x0
        acc = 0.0
        for dz in range(2):
            iz = z0 + dz
            if iz < 0 or iz >= nz:
                continue
            wz = fz if dz else 1.0 - fz
            for dy in range(2):
                iy = y0 + dy
                if iy < 0 or iy >= ny:
                    continue
                wy = fy if dy else 1.0 - fy
                for dx in range(2):
                    ix = x0 + dx
                    if ix < 0 or ix >= nx:
                        continue
                    wx = fx if dx else 1.0 - fx
                    acc += wz * wy * wx * volume[iz, iy, ix]
        out[n] = acc
