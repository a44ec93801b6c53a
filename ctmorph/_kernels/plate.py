"""Sums of tile profiles along tilted planes (numba kernel of the growth-plate search).

Prepared arrays in, sums out; no validation, no logging. The public wrapper is
:func:`ctmorph.segment.femur.tiles.surface_sums`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["plane_sums"]


@njit(cache=True, nogil=True, parallel=True)
def plane_sums(bone: np.ndarray, inner: np.ndarray, offsets: np.ndarray, z_start: int,
               out_bone: np.ndarray, out_inner: np.ndarray) -> None:  # pragma: no cover
    """For each surface ``p`` and position ``z0``, sum the tile counts on the surface.

    Parameters
    ----------
    bone, inner : (T, Z) ndarray of int32, C-contiguous
        Per tile and slice: bone pixels and interior pixels (a tile's profile is contiguous,
        so the inner loop reads memory in order).
    offsets : (P, T) ndarray of int64
        Slice offset of each tile on surface ``p``: the surface through slice ``z0`` meets
        tile ``t`` at slice ``z0 + offsets[p, t]``.
    z_start : int
        The first ``z0``; ``out[:, j]`` is for ``z0 = z_start + j``.
    out_bone, out_inner : (P, N) ndarray of int64
        Zeroed by the caller; ``out[p, j]`` = sum over tiles of the counts at slice
        ``z_start + j + offsets[p, t]`` (tiles whose slice falls outside ``0 .. Z - 1`` add
        nothing). Surfaces are processed in parallel, each writing only its own row.
    """
    nt, nz = bone.shape
    n_planes, n_out = out_bone.shape
    for p in prange(n_planes):
        ob = out_bone[p]
        oi = out_inner[p]
        for t in range(nt):
            off = offsets[p, t] + z_start
            lo = max(0, -off)
            hi = min(n_out, nz - off)
            if hi <= lo:
                continue
            b = bone[t, lo + off:hi + off]
            c = inner[t, lo + off:hi + off]
            o1 = ob[lo:hi]
            o2 = oi[lo:hi]
            for j in range(hi - lo):
                o1[j] += b[j]
                o2[j] += c[j]
