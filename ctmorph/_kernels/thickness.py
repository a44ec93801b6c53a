"""Exact local thickness from a squared distance map (numba kernels).

Hildebrand & Rüegsegger (1997, J. Microsc. 185:67-75): every phase voxel ``p`` with distance
``d_p`` to the background is the centre of the open ball ``S_p = {q : |q - p| < d_p}``; the
local thickness at ``q`` is ``max 2·d_p`` over the balls containing ``q``.

Exact fast evaluation in three steps:

1. Ridge: drop every centre whose ball lies inside a 26-neighbour's ball
   (``|p - p'| + d_p <= d_p'``); such a ball never sets a maximum, and containment strictly
   increases the radius, so every dropped ball is inside a kept one.
2. The kept centres are stored slice by slice, each slice sorted by decreasing radius.
3. Painting: the output is split into z-slices dealt round-robin to the threads; a thread visits
   every ball crossing its slices and writes only its own slices (disjoint writes, and ``max`` is
   order-independent, so the result does not depend on the thread count).

All lengths are in the caller's unit (the squared voxel sizes ``w2``); the maps hold squared
radii ``d²`` until :func:`finish_thickness` turns them into diameters.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["ridge_mark", "ridge_fill", "paint_balls", "finish_thickness"]

# Relative slack on the containment test. Floating-point error of the test is ~1e-16; a true
# non-containment closer than 1e-12 cannot occur for integer or dyadic squared voxel sizes
# (the gap is then bounded below by ~1 / (4·d), d in voxels), so no ball is dropped wrongly.
_REL_TOL = 1e-12


@njit(cache=True)
def _neighbourhood(w2):
    """The 26 neighbour offsets and their lengths ``δ`` and ``δ²``."""
    offs = np.empty((26, 3), np.int64)
    delta = np.empty(26, np.float64)
    delta2 = np.empty(26, np.float64)
    n = 0
    for a in range(-1, 2):
        for b in range(-1, 2):
            for c in range(-1, 2):
                if a == 0 and b == 0 and c == 0:
                    continue
                offs[n, 0] = a
                offs[n, 1] = b
                offs[n, 2] = c
                delta2[n] = w2[0] * a * a + w2[1] * b * b + w2[2] * c * c
                delta[n] = np.sqrt(delta2[n])
                n += 1
    return offs, delta, delta2


@njit(cache=True)
def _is_ridge(d, z, y, x, offs, delta, delta2):
    nz, ny, nx = d.shape
    dd = np.float64(d[z, y, x])
    dp = np.sqrt(dd)
    for n in range(26):
        zn = z + offs[n, 0]
        yn = y + offs[n, 1]
        xn = x + offs[n, 2]
        if zn < 0 or zn >= nz or yn < 0 or yn >= ny or xn < 0 or xn >= nx:
            continue
        dn = np.float64(d[zn, yn, xn])
        if dn <= dd:
            continue
        # ball(p) ⊂ ball(p')  <=>  d_p + δ <= d_p'  <=>  (d_p + δ)² <= d_p'²
        need = dd + 2.0 * dp * delta[n] + delta2[n]
        if dn >= need * (1.0 - _REL_TOL):
            return False
    return True


@njit(cache=True, parallel=True)
def ridge_mark(d, w2, flag, counts):
    """Mark the kept ball centres: ``flag`` (uint8, same shape as ``d``) is set to 1 on them and
    0 elsewhere; ``counts[z]`` (int64, length Z) receives their number per z-slice.

    ``d`` is the squared distance map (0 off the phase, finite on it).
    """
    nz, ny, nx = d.shape
    offs, delta, delta2 = _neighbourhood(w2)
    for z in prange(nz):
        c = 0
        for y in range(ny):
            for x in range(nx):
                keep = d[z, y, x] > 0 and _is_ridge(d, z, y, x, offs, delta, delta2)
                flag[z, y, x] = 1 if keep else 0
                c += 1 if keep else 0
        counts[z] = c


@njit(cache=True, parallel=True)
def ridge_fill(d, flag, offsets, ry, rx, rd):
    """Store the marked centres of slice ``z`` at ``offsets[z]:offsets[z + 1]`` (y, x and
    ``d²``), each slice sorted by decreasing ``d²``."""
    nz, ny, nx = d.shape
    for z in prange(nz):
        i = offsets[z]
        for y in range(ny):
            for x in range(nx):
                if flag[z, y, x]:
                    ry[i] = y
                    rx[i] = x
                    rd[i] = d[z, y, x]
                    i += 1
        a = offsets[z]
        b = offsets[z + 1]
        if b - a > 1:
            order = np.argsort(-rd[a:b])
            ty = ry[a:b][order]
            tx = rx[a:b][order]
            td = rd[a:b][order]
            ry[a:b] = ty
            rx[a:b] = tx
            rd[a:b] = td


@njit(cache=True)
def _paint_slice(z, offsets, ry, rx, rd, w2, rz, box, out):
    z0, y0, y1, x0, x1 = box[0], box[2], box[3], box[4], box[5]
    nzc = offsets.size - 1
    wz2 = w2[0]
    wy2 = w2[1]
    wx2 = w2[2]
    for zc in range(max(0, z - rz), min(nzc, z + rz + 1)):
        k = z - zc
        dz2 = wz2 * k * k
        for i in range(offsets[zc], offsets[zc + 1]):
            dd = np.float64(rd[i])
            if dd <= dz2:
                break  # the slice is sorted by decreasing radius
            val = rd[i]
            rem = dd - dz2
            yc = ry[i]
            xc = rx[i]
            ky = int(np.sqrt(rem / wy2)) + 1
            for yy in range(max(y0, yc - ky), min(y1, yc + ky + 1)):
                b = yy - yc
                rem2 = rem - wy2 * b * b
                if rem2 <= 0.0:
                    continue
                # largest c with wx2·c² < rem2 (exact integer test after a float guess)
                c = int(np.sqrt(rem2 / wx2))
                while c > 0 and wx2 * c * c >= rem2:
                    c -= 1
                while wx2 * (c + 1) * (c + 1) < rem2:
                    c += 1
                xa = max(x0, xc - c)
                xb = min(x1, xc + c + 1)
                oz = z - z0
                oy = yy - y0
                for xx in range(xa, xb):
                    if out[oz, oy, xx - x0] < val:
                        out[oz, oy, xx - x0] = val


@njit(cache=True, parallel=True)
def paint_balls(offsets, ry, rx, rd, w2, box, out):
    """Paint ``max d²`` of the open balls into ``out`` (float32, zero-initialised).

    ``box`` = ``(z0, z1, y0, y1, x0, x1)`` is the output region in image coordinates; ``out`` has
    shape ``(z1 - z0, y1 - y0, x1 - x0)``. Balls are clipped to the box.
    """
    if rd.size == 0:
        return
    dmax = np.float64(rd.max())
    rz = int(np.sqrt(dmax / w2[0])) + 1
    ntasks = get_num_threads()
    for t in prange(ntasks):
        for z in range(box[0] + t, box[1], ntasks):
            _paint_slice(z, offsets, ry, rx, rd, w2, rz, box, out)


@njit(cache=True, parallel=True)
def finish_thickness(out, scale, offset):
    """In place: ``d²`` → ``2·sqrt(d²)·scale - offset`` where painted, 0 elsewhere."""
    nz, ny, nx = out.shape
    for z in prange(nz):
        for y in range(ny):
            for x in range(nx):
                v = out[z, y, x]
                if v > 0:
                    out[z, y, x] = 2.0 * np.sqrt(np.float64(v)) * scale - offset
