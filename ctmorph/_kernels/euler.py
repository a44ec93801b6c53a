"""2x2x2 configuration counts for the Euler characteristic (numba kernels).

Prepared arrays in, integer histograms out; no validation, no logging. The public wrapper is
:func:`ctmorph.morphometry.connectivity.connectivity`.

A *vertex* of the voxel lattice is the common corner of a 2x2x2 block of voxels. The block at
origin ``(i, j, k)`` is encoded as the 8-bit configuration

    ``code = sum(2 ** (4*dz + 2*dy + dx) for dz, dy, dx in {0,1}^3 if vol[i+dz, j+dy, k+dx])``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["euler_lut8", "config_histograms"]


def euler_lut8() -> np.ndarray:
    """Eight times the Euler contribution of one vertex, for each of the 256 configurations.

    Foreground voxels are closed unit cubes (so foreground is 26-connected and background
    6-connected). Every cell of the cubical complex that touches a lattice vertex is shared by
    the blocks around it: a half-edge counts 1/2 (an edge has two end vertices), a quarter
    face 1/4, an octant cube 1/8. The vertex contribution is therefore
    ``V - E/2 + F/4 - C/8`` and ``8 * delta`` is an integer:

    ``8*delta = 8*[any voxel] - 4*(present half-edges) + 2*(present quarter faces) - (voxels)``.

    Returns
    -------
    (256,) ndarray of int64
        Summing ``lut[code]`` over all vertices of a zero-padded volume gives ``8 * chi``.
    """
    lut = np.zeros(256, dtype=np.int64)
    bits = [(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]
    for code in range(256):
        on = [bits[b] for b in range(8) if code >> b & 1]
        if not on:
            continue
        n_edges = 0
        for axis in range(3):  # half-edge from the vertex along +/- axis
            for side in (0, 1):
                n_edges += any(v[axis] == side for v in on)
        n_faces = 0
        for a in range(3):  # quarter face spanned by axes a < b, quadrant (sa, sb)
            for b in range(a + 1, 3):
                for sa in (0, 1):
                    for sb in (0, 1):
                        n_faces += any(v[a] == sa and v[b] == sb for v in on)
        lut[code] = 8 - 4 * n_edges + 2 * n_faces - len(on)
    return lut


@njit(cache=True, nogil=True, parallel=True)
def config_histograms(bone, voi, n_chunks):  # pragma: no cover - compiled
    """Histograms of 2x2x2 configurations over every vertex of a once-padded volume.

    Parameters
    ----------
    bone, voi : (Z+2, Y+2, X+2) ndarray of uint8 (0/1), C order
        Bone and VOI masks padded by one voxel of zeros on every side.
    n_chunks : int
        Number of z slabs processed in parallel (does not change the result).

    Returns
    -------
    masked : (256,) ndarray of int64
        Counts of the configurations of ``bone & voi`` over all ``(Z+1)(Y+1)(X+1)`` vertices
        (the zero padding makes this the complete vertex set of the masked object).
    weighted : (9, 256) ndarray of int64
        ``weighted[n, code]``: vertices whose 8 voxels all lie inside the original image,
        by configuration ``code`` of ``bone`` (context included) and number ``n`` of those
        voxels in the VOI.
    """
    zp, yp, xp = bone.shape
    nz = zp - 1  # vertex planes
    partial_m = np.zeros((n_chunks, 256), dtype=np.int64)
    partial_w = np.zeros((n_chunks, 9, 256), dtype=np.int64)
    for c in prange(n_chunks):
        z0 = c * nz // n_chunks
        z1 = (c + 1) * nz // n_chunks
        for i in range(z0, z1):
            inner_i = i >= 1 and i <= zp - 3
            for j in range(yp - 1):
                inner_ij = inner_i and j >= 1 and j <= yp - 3
                for k in range(xp - 1):
                    code_b = 0
                    code_m = 0
                    n_voi = 0
                    for b in range(8):
                        dz = b >> 2
                        dy = (b >> 1) & 1
                        dx = b & 1
                        bb = bone[i + dz, j + dy, k + dx]
                        vv = voi[i + dz, j + dy, k + dx]
                        if bb:
                            code_b |= 1 << b
                            if vv:
                                code_m |= 1 << b
                        n_voi += vv
                    partial_m[c, code_m] += 1
                    if inner_ij and k >= 1 and k <= xp - 3 and n_voi > 0:
                        partial_w[c, n_voi, code_b] += 1
    masked = np.zeros(256, dtype=np.int64)
    weighted = np.zeros((9, 256), dtype=np.int64)
    for c in range(n_chunks):
        for code in range(256):
            masked[code] += partial_m[c, code]
            for n in range(9):
                weighted[n, code] += partial_w[c, n, code]
    return masked, weighted
