"""Mean intercept length line counts (numba kernel).

Prepared arrays in, integer counts out; no validation, no logging. The public wrappers are
:func:`ctmorph.morphometry.anisotropy.anisotropy` and ``anisotropy_chunked``.

Geometry (physical space, mm): voxel ``(i, j, k)`` has its centre at ``(i*dz, j*dy, k*dx)``;
the sampled domain is the box spanned by the voxel centres, ``[0, (N-1)*d]`` per axis, where
the trilinear interpolant needs no extrapolation. For direction number ``d`` with unit vector
``w``, :func:`line_basis` gives ``u0, v0``; they are turned about ``w`` by
``theta = d * GOLDEN_ANGLE`` (``u = cos(theta) u0 + sin(theta) v0``,
``v = cos(theta) v0 - sin(theta) u0``) so that the line grid is never commensurate with a
periodic structure along the grid axes (aliasing). The lines are
``p(s) = c + a*u + b*v + s*w`` with ``c`` the domain centre and
``(a, b) = ((iu - (n_u - 1)/2) * h, (iv - (n_v - 1)/2) * h)`` on a square grid of pitch ``h``
covering the projection of the domain. Each line is clipped to the domain ``[s_in, s_out]``
and sampled at ``s_in + (n + 1/2) * ds`` for ``n < int((s_out - s_in) / ds)``.

Blocks: :func:`mil_counts_window` counts on the same global grid only the samples whose
interpolation cell starts in an owned range of padded z slices, reading a z-window of the
field; windows whose ownership ranges partition z sum to :func:`mil_counts` exactly (the samples
and their positions are computed by the same code, so the counts are the same integers).
:func:`mil_counts` is the one window that owns everything.

Side map: most interpolation cells lie wholly on one side of the level. :func:`cell_sides`
marks, once per window, each cell whose 8 corners are all above ``level + margin`` or all
below ``level - margin``; the line walk reads the phase of a sample in such a cell from the
map instead of interpolating. This never changes a phase (so never a count): see
:func:`cell_sides` for why rounding cannot push the interpolant across the level there.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "GOLDEN_ANGLE",
    "NO_LIMIT",
    "SIDE_MARGIN",
    "cell_sides",
    "line_basis",
    "mil_counts",
    "mil_counts_sides",
    "mil_counts_window",
    "side_margin",
]

#: Rotation (rad) of the line grid about the direction, per direction index.
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

#: Relative safety margin of :func:`cell_sides` (see :func:`side_margin`).
SIDE_MARGIN = 1e-4

#: Corner magnitudes at or beyond this are never marked uniform (no overflow to inf or nan).
_BIG = 1e300

#: :func:`cell_sides` codes.
MIXED, ABOVE, BELOW = 0, 1, 2


@njit(cache=True, nogil=True)
def line_basis(w):  # pragma: no cover - compiled
    """Two unit vectors ``u, v`` completing unit ``w`` to a right-handed orthonormal basis.

    ``u`` is ``w`` crossed with the grid axis least aligned with ``w`` (ties: the first).
    """
    a = 0
    for m in (1, 2):
        if abs(w[m]) < abs(w[a]):
            a = m
    e = np.zeros(3)
    e[a] = 1.0
    u = np.empty(3)
    u[0] = w[1] * e[2] - w[2] * e[1]
    u[1] = w[2] * e[0] - w[0] * e[2]
    u[2] = w[0] * e[1] - w[1] * e[0]
    nu = math.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2])
    for m in range(3):
        u[m] /= nu
    v = np.empty(3)
    v[0] = w[1] * u[2] - w[2] * u[1]
    v[1] = w[2] * u[0] - w[0] * u[2]
    v[2] = w[0] * u[1] - w[1] * u[0]
    return u, v


@njit(cache=True, inline="always")
def _sample(f, z_off, q0, q1, q2):  # pragma: no cover - compiled
    """Trilinear interpolation of the edge-padded field at padded continuous index q >= 0;
    ``f`` holds the padded slices from ``z_off`` on."""
    i0 = int(q0)
    j0 = int(q1)
    k0 = int(q2)
    f0 = q0 - i0
    f1 = q1 - j0
    f2 = q2 - k0
    g0 = 1.0 - f0
    g1 = 1.0 - f1
    g2 = 1.0 - f2
    i0 -= z_off
    c00 = f[i0, j0, k0] * g2 + f[i0, j0, k0 + 1] * f2
    c01 = f[i0, j0 + 1, k0] * g2 + f[i0, j0 + 1, k0 + 1] * f2
    c10 = f[i0 + 1, j0, k0] * g2 + f[i0 + 1, j0, k0 + 1] * f2
    c11 = f[i0 + 1, j0 + 1, k0] * g2 + f[i0 + 1, j0 + 1, k0 + 1] * f2
    return (c00 * g1 + c01 * f1) * g0 + (c10 * g1 + c11 * f1) * f0


@njit(cache=True, nogil=True)
def side_margin(level: float) -> float:
    """Safety margin of :func:`cell_sides` for ``level``: ``SIDE_MARGIN * max(1, |level|)``.

    Parameters
    ----------
    level : float
        Iso-level (field units).

    Returns
    -------
    float
        Margin in field units, many orders above the interpolation's rounding error.
    """
    return SIDE_MARGIN * max(1.0, abs(level))


@njit(cache=True, nogil=True, parallel=True)
def cell_sides(field, level, margin):  # pragma: no cover - compiled
    """Which side of ``level`` each interpolation cell of ``field`` lies on, if it is sure.

    Cell ``(i, j, k)`` has the 8 corners ``field[i:i+2, j:j+2, k:k+2]``. Its code is
    ``ABOVE`` (1) when every corner ``v`` has ``level + margin < v < 1e300``, ``BELOW`` (2)
    when every corner has ``-1e300 < v < level - margin``, else ``MIXED`` (0) (also any nan
    or infinite corner). Returns a ``(W-1, Y-1, X-1)`` uint8 array for a ``(W, Y, X)`` field.

    Why a marked cell's interpolant compares with ``level`` as the code says: :func:`_sample`
    computes ``sum_c v_c W_c (1 + t_c)`` with the weights ``W_c >= 0`` products of one
    ``f`` and one computed ``g = fl(1 - f)`` per axis (``0 <= f < 1``), so
    ``sum_c W_c = prod (g + f)`` lies in ``[(1-u)^3, (1+u)^3]``, and ``|t_c| <= 6u / (1-6u)``
    (6 roundings per corner, fewer with fused multiply-adds; u = 2^-53). If every corner is
    above ``m = level + margin`` the computed value is at least ``m - 10u |m|`` (at least
    ``m (1 - 10u)`` for ``m > 0``; for ``m <= 0`` each term is at least ``m (1 + 7u) W_c``),
    which exceeds ``level`` whenever ``margin > 10u |m|``; symmetrically below. With
    :func:`side_margin` (1e-4 relative) that holds by ten orders of magnitude; subnormal
    underflow adds at most ~1e-322. Bounded corners keep every product and sum finite.
    """
    nw, ny, nx = field.shape
    hi = level + margin
    lo = level - margin
    code = np.empty((nw, ny, nx), dtype=np.uint8)
    for i in prange(nw):
        for j in range(ny):
            for k in range(nx):
                v = field[i, j, k]
                if hi < v < _BIG:
                    code[i, j, k] = ABOVE
                elif -_BIG < v < lo:
                    code[i, j, k] = BELOW
                else:
                    code[i, j, k] = MIXED
    # ABOVE & BELOW == 0 == MIXED: the bitwise AND of the corner codes is the cell's code
    out = np.empty((max(nw - 1, 0), max(ny - 1, 0), max(nx - 1, 0)), dtype=np.uint8)
    for i in prange(nw - 1):
        for j in range(ny - 1):
            for k in range(nx - 1):
                out[i, j, k] = (code[i, j, k] & code[i, j, k + 1]
                                & code[i, j + 1, k] & code[i, j + 1, k + 1]
                                & code[i + 1, j, k] & code[i + 1, j, k + 1]
                                & code[i + 1, j + 1, k] & code[i + 1, j + 1, k + 1])
    return out


@njit(cache=True, inline="always")
def _phase(f, side, z_off, q0, q1, q2, level):  # pragma: no cover - compiled
    """``_sample(f, z_off, q0, q1, q2) > level``, read from the side map when the cell is
    uniform (``side`` indexed like ``f``, cells from padded slice ``z_off`` on)."""
    s = side[int(q0) - z_off, int(q1), int(q2)]
    if s == MIXED:
        return _sample(f, z_off, q0, q1, q2) > level
    return s == ABOVE


@njit(cache=True, inline="always")
def _first_owned(q0, d0, n_s, z):  # pragma: no cover - compiled
    """First sample ``n`` in ``[0, n_s]`` whose padded z index ``int(q0 + n*d0)`` has passed
    ``z``: ``>= z`` when ``d0 >= 0``, ``< z`` when ``d0 < 0`` (a monotone predicate of ``n``,
    evaluated with the very expression the sampling loop uses; bisection)."""
    lo = 0
    hi = n_s
    while lo < hi:
        mid = (lo + hi) // 2
        i = int(q0 + mid * d0)
        if (i >= z) if d0 >= 0.0 else (i < z):
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def _one_direction(field, side, voi, full_voi, spacing, w, h, ds, level, theta,
                   nz, ny, nx, z_off, own0, own1):  # pragma: no cover - compiled
    u0, v0 = line_basis(w)
    ct = math.cos(theta)
    st = math.sin(theta)
    u = ct * u0 + st * v0
    v = ct * v0 - st * u0
    lo = np.empty(3)
    hi = np.empty(3)
    c = np.empty(3)
    ru = 0.0
    rv = 0.0
    for m, n_m in enumerate((nz, ny, nx)):
        lo[m] = 0.0
        hi[m] = (n_m - 1.0) * spacing[m]
        c[m] = 0.5 * (lo[m] + hi[m])
        ru += abs(u[m]) * 0.5 * (hi[m] - lo[m])
        rv += abs(v[m]) * 0.5 * (hi[m] - lo[m])
    n_u = int(math.ceil(2.0 * ru / h))
    n_v = int(math.ceil(2.0 * rv / h))
    # Lines that can hold owned samples: their offsets (a, b) lie in the projection onto
    # (u, v) of the owned part of the domain, z in [(own0 - 1) dz, (own1 - 1) dz] (padded
    # index i = z/dz + 1), plus one line of slack each side.
    zlo = max(lo[0], (own0 - 1.0) * spacing[0])
    zhi = min(hi[0], (own1 - 1.0) * spacing[0])
    if zlo > zhi:
        return 0, 0
    a_lo = np.inf
    a_hi = -np.inf
    b_lo = np.inf
    b_hi = -np.inf
    for corner in range(8):
        pz = (zhi if corner & 1 else zlo) - c[0]
        py = (hi[1] if corner & 2 else lo[1]) - c[1]
        px = (hi[2] if corner & 4 else lo[2]) - c[2]
        a = pz * u[0] + py * u[1] + px * u[2]
        b = pz * v[0] + py * v[1] + px * v[2]
        a_lo = min(a_lo, a)
        a_hi = max(a_hi, a)
        b_lo = min(b_lo, b)
        b_hi = max(b_hi, b)
    iu0 = max(0, int(math.floor(a_lo / h + 0.5 * (n_u - 1))) - 1)
    iu1 = min(n_u, int(math.ceil(a_hi / h + 0.5 * (n_u - 1))) + 2)
    iv0 = max(0, int(math.floor(b_lo / h + 0.5 * (n_v - 1))) - 1)
    iv1 = min(n_v, int(math.ceil(b_hi / h + 0.5 * (n_v - 1))) + 2)
    n_in = 0
    crossings = 0
    p0 = np.empty(3)
    for iu in range(iu0, iu1):
        a = (iu - 0.5 * (n_u - 1)) * h
        for iv in range(iv0, iv1):
            b = (iv - 0.5 * (n_v - 1)) * h
            s_in = -np.inf
            s_out = np.inf
            for m in range(3):
                p0[m] = c[m] + a * u[m] + b * v[m]
                if w[m] != 0.0:
                    t0 = (lo[m] - p0[m]) / w[m]
                    t1 = (hi[m] - p0[m]) / w[m]
                    if t0 > t1:
                        t0, t1 = t1, t0
                    s_in = max(s_in, t0)
                    s_out = min(s_out, t1)
                elif p0[m] < lo[m] or p0[m] >= hi[m]:
                    s_out = -np.inf
            if not s_out > s_in:
                continue
            n_s = int((s_out - s_in) / ds)
            # padded continuous voxel index (voxel centre i at i + 1) of sample 0, increment
            s0 = s_in + 0.5 * ds
            q0 = (p0[0] + s0 * w[0]) / spacing[0] + 1.0
            q1 = (p0[1] + s0 * w[1]) / spacing[1] + 1.0
            q2 = (p0[2] + s0 * w[2]) / spacing[2] + 1.0
            d0 = ds * w[0] / spacing[0]
            d1 = ds * w[1] / spacing[1]
            d2 = ds * w[2] / spacing[2]
            # owned samples: padded z index int(q0 + n*d0) in [own0, own1), an interval of n
            if d0 >= 0.0:
                n_lo = _first_owned(q0, d0, n_s, own0)
                n_hi = _first_owned(q0, d0, n_s, own1)
            else:
                n_lo = _first_owned(q0, d0, n_s, own1)
                n_hi = _first_owned(q0, d0, n_s, own0)
            if n_lo >= n_hi:
                continue
            # the pair (n - 1, n) belongs to the owner of sample n: start from sample n_lo - 1
            n_first = max(n_lo - 1, 0)
            # A sample's phase matters only to a pair with a sample in the VOI: samples whose
            # neighbours are all outside it are not interpolated (the counts are unchanged).
            prev_phase = False
            prev_in = 1
            cur_in = 1
            known = True  # prev_phase holds the previous sample's phase
            for n in range(n_first, n_hi):
                x0 = q0 + n * d0
                x1 = q1 + n * d1
                x2 = q2 + n * d2
                if not full_voi:
                    cur_in = 1 if voi[int(x0 + 0.5) - z_off, int(x1 + 0.5), int(x2 + 0.5)] else 0
                if cur_in or prev_in:
                    phase = _phase(field, side, z_off, x0, x1, x2, level)
                    if not known:
                        m = n - 1
                        prev_phase = _phase(field, side, z_off, q0 + m * d0, q1 + m * d1,
                                            q2 + m * d2, level)
                    if n >= n_lo and phase != prev_phase and n > 0:
                        crossings += prev_in + cur_in
                    prev_phase = phase
                    known = True
                else:
                    known = False
                if n >= n_lo:
                    n_in += cur_in
                prev_in = cur_in
    return n_in, crossings


#: Ownership bound meaning "no limit" for :func:`mil_counts_window`.
NO_LIMIT = 1 << 40


@njit(cache=True, nogil=True)
def mil_counts_window(field, voi, full_voi, spacing, directions, h, ds, level,
                      nz, ny, nx, z_off, own0, own1):  # pragma: no cover - compiled
    """:func:`mil_counts` of the samples one z-window owns, for counting a volume in blocks.

    The line grid and samples are those of the whole ``(nz, ny, nx)`` volume; only samples
    whose padded z index ``int(q0)`` (see :func:`_sample`) lies in ``[own0, own1)`` are
    counted, with the pair (previous sample, sample) that ends at them. Summing the counts of
    windows whose ownership ranges partition the integers gives exactly :func:`mil_counts`.

    Parameters
    ----------
    field, voi : (W, ny+2, nx+2) ndarrays of float32 and uint8, C order
        Padded slices ``z_off .. z_off + W - 1`` of the whole volume's padded field and VOI
        (as :func:`mil_counts` takes them). They must cover the owned samples' slices and the
        previous sample's: padded z in ``[own0 - k, own1 + k)`` clipped to ``[0, nz + 2)``,
        with ``k = int(ds / dz) + 2``.
    nz, ny, nx : int
        Unpadded shape of the whole volume (defines the line grid).
    z_off : int
        Padded z index of ``field[0]`` and ``voi[0]``.
    own0, own1 : int
        Owned padded z range (``-NO_LIMIT``/``NO_LIMIT`` for an open end).

    The other parameters and the returns are those of :func:`mil_counts`. The window's
    :func:`cell_sides` map (margin :func:`side_margin`) is built here, once, and the lines are
    walked by :func:`mil_counts_sides`.
    """
    side = cell_sides(field, level, side_margin(level))
    return mil_counts_sides(field, side, voi, full_voi, spacing, directions, h, ds, level,
                            nz, ny, nx, z_off, own0, own1)


@njit(cache=True, nogil=True, parallel=True)
def mil_counts_sides(field, side, voi, full_voi, spacing, directions, h, ds, level,
                     nz, ny, nx, z_off, own0, own1):  # pragma: no cover - compiled
    """:func:`mil_counts_window` with the field's side map given.

    ``side`` is a ``(W-1, ny+1, nx+1)`` uint8 array: :func:`cell_sides` of ``field`` (with any
    margin that makes its claims true), or zeros (``MIXED`` everywhere: every sample's phase
    is interpolated, the plain walk the map only shortens). The other parameters and the
    returns are those of :func:`mil_counts_window`.
    """
    n = directions.shape[0]
    n_in = np.zeros(n, dtype=np.int64)
    crossings = np.zeros(n, dtype=np.int64)
    for d in prange(n):
        a, b = _one_direction(field, side, voi, full_voi, spacing, directions[d], h, ds, level,
                              d * GOLDEN_ANGLE, nz, ny, nx, z_off, own0, own1)
        n_in[d] = a
        crossings[d] = b
    return n_in, crossings


@njit(cache=True, nogil=True)
def mil_counts(field, voi, full_voi, spacing, directions, h, ds, level):  # pragma: no cover
    """Sampled VOI length and weighted phase-boundary crossings for each direction.

    Parameters
    ----------
    field : (Z+2, Y+2, X+2) ndarray of float32, C order
        Bone indicator (1 bone, 0 marrow), possibly smoothed, padded by one voxel with edge
        values; bone is where the trilinear interpolant exceeds ``level``.
    voi : (Z+2, Y+2, X+2) ndarray of uint8 (0/1), C order
        VOI mask, edge-padded likewise; a sample is in the VOI when its nearest voxel is.
    full_voi : bool
        True when the VOI is the whole volume (``voi`` is then not read).
    spacing : (3,) ndarray of float64
        ``(dz, dy, dx)`` in mm.
    directions : (n, 3) ndarray of float64
        Unit line directions ``(z, y, x)`` in physical space.
    h, ds : float
        Line pitch and sample step in mm.
    level : float
        Iso-level separating bone from marrow.

    Returns
    -------
    n_in : (n,) ndarray of int64
        Samples inside the VOI (sampled length = ``n_in * ds``).
    crossings : (n,) ndarray of int64
        Sum over phase changes between consecutive samples of the number (0, 1, 2) of the two
        samples lying in the VOI, i.e. twice the VOI share of boundary crossings.
    """
    nz = field.shape[0] - 2
    ny = field.shape[1] - 2
    nx = field.shape[2] - 2
    return mil_counts_window(field, voi, full_voi, spacing, directions, h, ds, level,
                             nz, ny, nx, 0, -NO_LIMIT, NO_LIMIT)
