"""Exact local thickness from a squared distance map (numba kernels).

Hildebrand & Rüegsegger (1997, J. Microsc. 185:67-75): every phase voxel ``p`` with distance
``d_p`` to the background is the centre of the open ball ``S_p = {q : |q - p| < d_p}``; the
local thickness at ``q`` is ``max 2·d_p`` over the balls containing ``q``.

Exact fast evaluation in three steps:

1. Ridge: drop every centre whose ball (as a set of voxels) lies inside the ball of one of its
   26 neighbours. The neighbour's radius is then strictly larger, so following containments
   always ends at a kept ball that contains the dropped one and has a larger value: no maximum
   is lost. With integer squared voxel sizes the test is the exact discrete one, through a
   table ``M[D, class]`` = largest squared distance from the neighbour to a voxel of the ball
   ``{v : |v|² < D}`` (Rémy & Thiel 2002 use the same idea for the discrete medial axis);
   otherwise the sufficient geometric test ``d_p + |p - p'| <= d_p'``.
2. The kept centres are stored slice by slice, each slice sorted by decreasing radius.
3. Painting: the output is split into z-slices dealt round-robin to the threads; a thread visits
   every ball crossing its slices and writes only its own slices (disjoint writes, and ``max`` is
   order-independent, so the result does not depend on the thread count). Each ball is painted
   as x-spans whose half-widths are updated incrementally row by row.

All lengths are in the caller's unit (the squared voxel sizes ``w2``); the maps hold squared
radii ``d²`` until :func:`finish_thickness` turns them into diameters.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "containment_table",
    "ridge_mark",
    "ridge_fill",
    "paint_balls",
    "finish_thickness",
    "masked_stats",
]

# Safety margin of the geometric containment test: a ball is dropped only when it is inside
# the neighbour's ball with this relative room to spare, far above floating-point error.
_REL_TOL = 1e-9


@njit(cache=True, nogil=True)
def containment_table(w2, dmax, table):
    """Fill ``table`` (float64, shape ``(dmax + 1, 7)``) for integer squared voxel sizes ``w2``.

    ``table[D, k]`` is ``max |v + δ_k|²`` over integer ``v >= 0`` with ``|v|² < D``, where
    ``δ_k`` has components ``((k + 1) >> 2 & 1, (k + 1) >> 1 & 1, (k + 1) & 1)``: the largest
    squared distance from a neighbour at offset ``±δ_k`` to a voxel of the open ball of squared
    radius ``D`` (by symmetry the octant ``v >= 0`` suffices). ``-1`` when the ball is empty.
    """
    best = np.full((dmax + 1, 7), -1.0)
    ra = int(np.sqrt(dmax / w2[0])) + 1
    rb = int(np.sqrt(dmax / w2[1])) + 1
    rc = int(np.sqrt(dmax / w2[2])) + 1
    for a in range(ra + 1):
        na = w2[0] * a * a
        if na >= dmax:
            break
        for b in range(rb + 1):
            nab = na + w2[1] * b * b
            if nab >= dmax:
                break
            for c in range(rc + 1):
                n = nab + w2[2] * c * c
                if n >= dmax:
                    break
                i = int(n)
                for k in range(7):
                    da = ((k + 1) >> 2) & 1
                    db = ((k + 1) >> 1) & 1
                    dc = (k + 1) & 1
                    m = (w2[0] * (a + da) * (a + da) + w2[1] * (b + db) * (b + db)
                         + w2[2] * (c + dc) * (c + dc))
                    if m > best[i, k]:
                        best[i, k] = m
    # table[D] = max of best[n] over n < D
    for k in range(7):
        run = -1.0
        for dd in range(dmax + 1):
            table[dd, k] = run
            if best[dd, k] > run:
                run = best[dd, k]


@njit(cache=True, nogil=True)
def _neighbourhood(w2):
    """The 26 neighbour offsets (faces first, then edges, then corners: the likeliest
    containing balls first), their lengths ``δ`` and ``δ²``, and their table class."""
    offs = np.empty((26, 3), np.int64)
    delta = np.empty(26, np.float64)
    delta2 = np.empty(26, np.float64)
    cls = np.empty(26, np.int64)
    n = 0
    for nonzero in range(1, 4):
        for a in range(-1, 2):
            for b in range(-1, 2):
                for c in range(-1, 2):
                    if abs(a) + abs(b) + abs(c) != nonzero:
                        continue
                    offs[n, 0] = a
                    offs[n, 1] = b
                    offs[n, 2] = c
                    delta2[n] = w2[0] * a * a + w2[1] * b * b + w2[2] * c * c
                    delta[n] = np.sqrt(delta2[n])
                    cls[n] = 4 * abs(a) + 2 * abs(b) + abs(c) - 1
                    n += 1
    return offs, delta, delta2, cls


@njit(cache=True, nogil=True)
def _is_ridge(d1, i, z, y, x, shape, offs, foff, delta, cls, table, inv_s):
    """Whether the ball at flat index ``i`` = ``(z, y, x)`` is in no neighbour's ball."""
    nz, ny, nx = shape
    dd = np.float64(d1[i])
    exact = table.shape[0] > 0
    interior = 0 < z < nz - 1 and 0 < y < ny - 1 and 0 < x < nx - 1
    di = int(dd) if exact else 0
    dp = 0.0 if exact else np.sqrt(dd)
    for n in range(26):
        if not interior:
            zn = z + offs[n, 0]
            yn = y + offs[n, 1]
            xn = x + offs[n, 2]
            if zn < 0 or zn >= nz or yn < 0 or yn >= ny or xn < 0 or xn >= nx:
                continue
        dn = np.float64(d1[i + foff[n]])
        if exact:
            # every voxel of ball(p) is strictly inside ball(p')
            if dn > table[di, cls[n]]:
                return False
        elif dn > dd:
            # painted balls have radius s·d (see paint_balls):
            # s·d_p + δ <= s·d_p'  <=>  (d_p + δ/s)² <= d_p'²
            need = dp + delta[n] * inv_s
            if dn >= need * need * (1.0 + _REL_TOL):
                return False
    return True


@njit(cache=True, nogil=True, parallel=True)
def ridge_mark(d, w2, table, shrink, flag, counts):
    """Mark the kept ball centres: ``flag`` (uint8, same shape as ``d``) is set to 1 on them and
    0 elsewhere; ``counts[z]`` (int64, length Z) receives their number per z-slice.

    ``d`` (C-contiguous) is the squared distance map (0 off the phase, finite on it). ``table``
    is the :func:`containment_table` for integer ``w2`` (``d`` then holds exact integers), or
    an empty ``(0, 7)`` array to use the geometric test on balls of squared radius
    ``shrink·d`` (as painted by :func:`paint_balls`).
    """
    nz, ny, nx = d.shape
    shape = (nz, ny, nx)
    offs, delta, delta2, cls = _neighbourhood(w2)
    foff = offs[:, 0] * (ny * nx) + offs[:, 1] * nx + offs[:, 2]
    inv_s = 1.0 / np.sqrt(shrink)
    d1 = d.ravel()
    f1 = flag.ravel()
    for z in prange(nz):
        c = 0
        for y in range(ny):
            i = (z * ny + y) * nx
            for x in range(nx):
                keep = d1[i] > 0 and _is_ridge(d1, i, z, y, x, shape, offs, foff, delta, cls,
                                               table, inv_s)
                f1[i] = 1 if keep else 0
                c += 1 if keep else 0
                i += 1
        counts[z] = c


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True)
def _paint_row(out, oz, oy, xa, xb, val):
    # iterate over a slice view from 0: the index is provably non-negative, so numba emits no
    # wrap-around test and LLVM vectorises the max
    seg = out[oz, oy, xa:xb]
    for j in range(seg.size):
        v = seg[j]
        seg[j] = v if v > val else val


@njit(cache=True, nogil=True)
def _paint_slice(z, offsets, ry, rx, rd, w2, shrink, rz, box, out):
    z0, y0, y1, x0, x1 = box[0], box[2], box[3], box[4], box[5]
    nzc = offsets.size - 1
    wz2 = w2[0]
    wy2 = w2[1]
    wx2 = w2[2]
    oz = z - z0
    for zc in range(max(0, z - rz), min(nzc, z + rz + 1)):
        k = z - zc
        dz2 = wz2 * k * k
        for i in range(offsets[zc], offsets[zc + 1]):
            dd = np.float64(rd[i]) * shrink
            if dd <= dz2:
                break  # the slice is sorted by decreasing radius
            val = rd[i]
            rem = dd - dz2
            yc = ry[i]
            xc = rx[i]
            # half-width of the centre row: largest c with wx2·c² < rem
            c = int(np.sqrt(rem / wx2))
            while c > 0 and wx2 * c * c >= rem:
                c -= 1
            while wx2 * (c + 1) * (c + 1) < rem:
                c += 1
            b = 0
            while True:
                rem2 = rem - wy2 * b * b
                if rem2 <= 0.0:
                    break
                if yc + b >= y1 and yc - b < y0:
                    break
                while c > 0 and wx2 * c * c >= rem2:
                    c -= 1
                xa = max(x0, xc - c) - x0
                xb = min(x1, xc + c + 1) - x0
                if xa < xb:
                    yy = yc + b
                    if y0 <= yy < y1:
                        _paint_row(out, oz, yy - y0, xa, xb, val)
                    yy = yc - b
                    if b > 0 and y0 <= yy < y1:
                        _paint_row(out, oz, yy - y0, xa, xb, val)
                b += 1


@njit(cache=True, nogil=True, parallel=True)
def paint_balls(offsets, ry, rx, rd, w2, shrink, box, out, ntasks):
    """Paint ``max d²`` of the open balls into ``out`` (float32, zero-initialised).

    The ball of a centre with squared distance ``D`` is ``{q : |q - p|² < shrink·D}``: use
    ``shrink = 1`` when ``D`` and ``w2`` are exact integers, slightly below 1 otherwise, so the
    background voxel that defined ``D`` stays outside despite the float32 rounding of ``D``.

    ``box`` = ``(z0, z1, y0, y1, x0, x1)`` is the output region in image coordinates; ``out`` has
    shape ``(z1 - z0, y1 - y0, x1 - x0)``. Balls are clipped to the box. Output z-slices are
    dealt round-robin to ``ntasks`` tasks (use the number of threads).
    """
    if rd.size == 0:
        return
    dmax = np.float64(rd.max())
    rz = int(np.sqrt(dmax / w2[0])) + 1
    for t in prange(ntasks):
        for z in range(box[0] + t, box[1], ntasks):
            _paint_slice(z, offsets, ry, rx, rd, w2, shrink, rz, box, out)


@njit(cache=True, nogil=True, parallel=True)
def finish_thickness(out, scale, offset):
    """In place: ``d²`` → ``2·sqrt(d²)·scale - offset`` where painted, 0 elsewhere."""
    nz, ny, nx = out.shape
    for z in prange(nz):
        for y in range(ny):
            for x in range(nx):
                v = out[z, y, x]
                if v > 0:
                    out[z, y, x] = 2.0 * np.sqrt(np.float64(v)) * scale - offset


@njit(cache=True, nogil=True)
def masked_stats(values, sel):
    """``(count, mean, population SD, max)`` of ``values`` where ``sel`` is True, accumulated
    sequentially in float64 (deterministic; two passes for an accurate SD)."""
    n = 0
    total = 0.0
    vmax = -np.inf
    v1 = values.ravel()
    s1 = sel.ravel()
    for i in range(v1.size):
        if s1[i]:
            v = np.float64(v1[i])
            n += 1
            total += v
            if v > vmax:
                vmax = v
    if n == 0:
        return 0, np.nan, np.nan, np.nan
    mean = total / n
    ss = 0.0
    for i in range(v1.size):
        if s1[i]:
            dv = np.float64(v1[i]) - mean
            ss += dv * dv
    return n, mean, np.sqrt(ss / n), vmax
