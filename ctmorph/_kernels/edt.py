"""Exact squared Euclidean distance transform (numba kernels).

Separable algorithm of Felzenszwalb & Huttenlocher (2012, "Distance transforms of sampled
functions", Theory of Computing 8:415-428): one 1-D pass along x (nearest background voxel on the
line), then along y and z the lower envelope of the parabolas ``f(q) + w2·(p - q)²``. Lines are
gathered slice by slice into a transposed buffer so every envelope runs on contiguous memory.

Conventions (prepared by the caller, nothing is checked here):

- ``phase`` is a C-contiguous ``(Z, Y, X)`` uint8 array, nonzero = phase, 0 = background.
- ``w2`` holds the squared voxel sizes ``(wz², wy², wx²)`` in the caller's length unit; the output
  is the squared distance in that unit, float32.
- Voxels outside the image are not background: a phase voxel with no background anywhere in the
  image keeps ``+inf``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["squared_edt", "squared_edt_inplane"]

_INF = np.inf


@njit(cache=True, nogil=True)
def _envelope_1d(f, n, w2, v, num, den, h, out):
    """Lower envelope of parabolas ``f[q] + w2 (p - q)²`` sampled at ``p = 0..n-1``.

    ``f`` (float64, length ``n``) may contain ``inf`` (no parabola there); ``v`` (int64) and
    ``num``, ``den``, ``h`` (float64) are work buffers of length ``n + 1``. Writes the minimum
    to ``out[:n]``. The intersection abscissae are kept as fractions ``num / den`` (``den > 0``)
    and compared by cross-multiplication: no division, and with integer ``f`` and ``w2`` every
    comparison is exact.
    """
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        hq = fq + w2 * q * q
        sn = -_INF
        sd = 1.0
        while k >= 0:
            sn = hq - h[k]
            sd = 2.0 * w2 * (q - v[k])
            # drop parabola k if the new one takes over before parabola k does
            if sn * den[k] <= num[k] * sd:
                k -= 1
            else:
                break
        if k < 0:
            sn = -_INF
            sd = 1.0
        k += 1
        v[k] = q
        num[k] = sn
        den[k] = sd
        h[k] = hq
    if k < 0:
        for q in range(n):
            out[q] = _INF
        return
    num[k + 1] = _INF
    den[k + 1] = 1.0
    j = 0
    for q in range(n):
        while num[j + 1] < q * den[j + 1]:
            j += 1
        a = v[j]
        out[q] = f[a] + w2 * (q - a) * (q - a)


@njit(cache=True, nogil=True, parallel=True)
def _pass_x(phase, wx2, d):
    nz, ny, nx = phase.shape
    for z in prange(nz):
        for y in range(ny):
            # Forward and backward scans: distance (in voxels) to the nearest background voxel
            # on this line, inf when there is none.
            last = -1
            for x in range(nx):
                if phase[z, y, x] == 0:
                    last = x
                    d[z, y, x] = 0.0
                elif last >= 0:
                    d[z, y, x] = x - last
                else:
                    d[z, y, x] = _INF
            last = -1
            for x in range(nx - 1, -1, -1):
                if phase[z, y, x] == 0:
                    last = x
                elif last >= 0:
                    k = last - x
                    if d[z, y, x] > k:
                        d[z, y, x] = k
            for x in range(nx):
                k = d[z, y, x]
                if k != _INF:
                    d[z, y, x] = wx2 * k * k


@njit(cache=True, nogil=True)
def _lines(buf, w2, f, out, v, num, den, h):
    """Envelope of every row of ``buf`` (float32, lines × n), in place."""
    nl, n = buf.shape
    for i in range(nl):
        allzero = True
        for q in range(n):
            f[q] = buf[i, q]
            if f[q] != 0.0:
                allzero = False
        if allzero:
            continue
        _envelope_1d(f, n, w2, v, num, den, h, out)
        for q in range(n):
            buf[i, q] = out[q]


@njit(cache=True, nogil=True, parallel=True)
def _pass_y(d, wy2):
    nz, ny, nx = d.shape
    for z in prange(nz):
        buf = np.empty((nx, ny), np.float32)  # the slice transposed: one image column per row
        f = np.empty(ny, np.float64)
        out = np.empty(ny, np.float64)
        v = np.empty(ny + 1, np.int64)
        num = np.empty(ny + 1, np.float64)
        den = np.empty(ny + 1, np.float64)
        h = np.empty(ny + 1, np.float64)
        for y in range(ny):
            for x in range(nx):
                buf[x, y] = d[z, y, x]
        _lines(buf, wy2, f, out, v, num, den, h)
        for y in range(ny):
            for x in range(nx):
                d[z, y, x] = buf[x, y]


@njit(cache=True, nogil=True, parallel=True)
def _pass_z(d, wz2):
    nz, ny, nx = d.shape
    for y in prange(ny):
        buf = np.empty((nx, nz), np.float32)  # the (z, x) plane transposed
        f = np.empty(nz, np.float64)
        out = np.empty(nz, np.float64)
        v = np.empty(nz + 1, np.int64)
        num = np.empty(nz + 1, np.float64)
        den = np.empty(nz + 1, np.float64)
        h = np.empty(nz + 1, np.float64)
        for z in range(nz):
            for x in range(nx):
                buf[x, z] = d[z, y, x]
        _lines(buf, wz2, f, out, v, num, den, h)
        for z in range(nz):
            for x in range(nx):
                d[z, y, x] = buf[x, z]


@njit(cache=True, nogil=True)
def squared_edt(phase, w2, d):
    """Squared distance from each phase voxel centre to the nearest background voxel centre.

    Parameters
    ----------
    phase : (Z, Y, X) uint8 ndarray, C-contiguous
        Nonzero for the phase, 0 for background.
    w2 : (3,) float64 ndarray
        Squared voxel sizes ``(wz², wy², wx²)``.
    d : (Z, Y, X) float32 ndarray, C-contiguous
        Output: squared distances (0 on background, ``inf`` if the image has no background).
    """
    squared_edt_inplane(phase, w2, d)
    if d.shape[0] > 1:
        _pass_z(d, w2[0])


@njit(cache=True, nogil=True)
def squared_edt_inplane(phase, w2, d):
    """:func:`squared_edt` of each z-slice on its own (``w2[0]`` is not used): the x and y
    passes only. Slices without background keep ``+inf``."""
    _pass_x(phase, w2[2], d)
    if d.shape[1] > 1:
        _pass_y(d, w2[1])
