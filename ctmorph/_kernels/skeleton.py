"""Topology-preserving medial-surface thinning (numba kernel).

Sequential directional thinning (six sub-iterations per pass, one per face direction, as in
Lee, Kashyap & Chu 1994): border points that are *simple* at the start of a sub-iteration are
deleted one by one, re-checked on the current image, so the topology of the object is kept. The
end condition is *isthmus persistence*, in the spirit of Bertrand & Couprie's isthmus-based
thinning, simplified: a point that is at some stage a 1-D isthmus (``T26 >= 2``, its object
neighbourhood falls apart: a curve point) or a 2-D isthmus (``T6bar >= 2``, its background
neighbourhood falls apart: a sheet point) is frozen for good. Plates therefore thin
to their mid-surface and rods to their mid-line, which is what the mid-axes of Hildebrand's
direct Tb.N (1999) are; a curve-only skeleton would collapse plates to lines.

Digital topology: object 26-connected, background 6-connected. A point ``p`` is simple iff
``T26(p) = 1`` (one 26-component of object in ``N26*(p)``) and ``T6bar(p) = 1`` (one 6-component
of background in ``N18(p)`` that is 6-adjacent to ``p``) (Bertrand & Malandain 1994).

The caller passes the object padded by one voxel on every side; the pad is never a candidate
(only the interior is thinned) and its value (background 0, or frozen object ``OBJ | CON``)
says what the outside of the image is.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["OBJ", "CON", "thin", "t26", "t6bar", "is_simple", "is_isthmus"]

OBJ = 1  # object voxel
CON = 2  # constrained (frozen): never deleted
_INL = 4  # in the border list
_DIRTY = 8  # next to a point deleted in this sub-iteration
# complements within a byte (``~`` of a Python int is negative)
_NOT_OBJ = 0xFF ^ OBJ
_NOT_INL = 0xFF ^ _INL
_NOT_DIRTY = 0xFF ^ _DIRTY


# Bit ``i = 9(a+1) + 3(b+1) + (c+1)`` of a neighbourhood mask is the voxel at offset
# (a, b, c) = (dz, dy, dx); the centre is bit 13. Masks of the positions that may shift by +1 or
# -1 along an axis without leaving the 3×3×3 cube:
_X_LO = sum(1 << i for i in range(27) if i % 3 != 2)  # c <= 0: may move to c + 1
_X_HI = sum(1 << i for i in range(27) if i % 3 != 0)  # c >= 0: may move to c - 1
_Y_LO = sum(1 << i for i in range(27) if (i // 3) % 3 != 2)
_Y_HI = sum(1 << i for i in range(27) if (i // 3) % 3 != 0)
_Z_LO = sum(1 << i for i in range(27) if i // 9 != 2)
_Z_HI = sum(1 << i for i in range(27) if i // 9 != 0)
_CENTRE = 1 << 13
_N26 = ((1 << 27) - 1) & ~_CENTRE
_N18 = sum(1 << i for i in range(27)
           if i != 13 and abs(i // 9 - 1) + abs((i // 3) % 3 - 1) + abs(i % 3 - 1) <= 2)
_FACES = sum(1 << i for i in (4, 10, 12, 14, 16, 22))


@njit(cache=True)
def _dilate26(m):
    m = m | ((m & _X_LO) << 1) | ((m & _X_HI) >> 1)
    m = m | ((m & _Y_LO) << 3) | ((m & _Y_HI) >> 3)
    return m | ((m & _Z_LO) << 9) | ((m & _Z_HI) >> 9)


@njit(cache=True)
def _dilate6(m):
    return (m | ((m & _X_LO) << 1) | ((m & _X_HI) >> 1) | ((m & _Y_LO) << 3)
            | ((m & _Y_HI) >> 3) | ((m & _Z_LO) << 9) | ((m & _Z_HI) >> 9))


@njit(cache=True)
def t26(nb):
    """0, 1 or 2 (meaning >= 2) 26-components of object in N26*(p)."""
    obj = nb & _N26
    if obj == 0:
        return 0
    comp = obj & -obj
    while True:
        grown = _dilate26(comp) & obj
        if grown == comp:
            break
        comp = grown
    return 1 if comp == obj else 2


@njit(cache=True)
def t6bar(nb):
    """0, 1 or 2 (meaning >= 2) 6-components of background in N18(p) 6-adjacent to p."""
    bg = ~nb & _N18
    seeds = bg & _FACES
    if seeds == 0:
        return 0
    comp = seeds & -seeds
    while True:
        grown = _dilate6(comp) & bg
        if grown == comp:
            break
        comp = grown
    return 1 if seeds & ~comp == 0 else 2


@njit(cache=True)
def _load(flat, p, off27):
    nb = 0
    for i in range(27):
        if flat[p + off27[i]] & OBJ:
            nb |= 1 << i
    return nb


@njit(cache=True)
def is_simple(nb):
    return t26(nb) == 1 and t6bar(nb) == 1


@njit(cache=True)
def is_isthmus(nb):
    return t26(nb) >= 2 or t6bar(nb) >= 2


@njit(cache=True)
def _grown(buf, n):
    """A copy of ``buf[:n]`` in a buffer of the same dtype with room for at least twice as
    many entries (and more than ``n``)."""
    out = np.empty(max(2 * buf.size, n + 1, 64), buf.dtype)
    out[:n] = buf[:n]
    return out


@njit(cache=True)
def thin(img, border, cand, dirty, presize=True):
    """Thin ``img`` in place (C-contiguous uint8, padded as described in the module notes).

    ``border``, ``cand`` and ``dirty`` are the initial work buffers (1-D, C-contiguous, int32
    or int64 wide enough for flat indices of ``img``; any length, even 0). With ``presize``
    (default), buffers shorter than the first border list are first replaced by fresh ones of
    its length (pages never written cost no memory); any buffer that fills up is replaced by
    a copy twice as large. Memory thus follows the number of border points (the object's
    surface), not of object voxels. ``presize=False`` only grows (for tests of the growth
    path). On return the ``OBJ`` bit marks the skeleton. Returns the number of passes made.
    """
    nz, ny, nx = img.shape
    flat = img.ravel()
    sz = ny * nx
    sy = nx
    off27 = np.empty(27, np.int64)
    for i in range(27):
        off27[i] = (i // 9 - 1) * sz + ((i // 3) % 3 - 1) * sy + (i % 3 - 1)
    dirs = np.array([sz, -sz, sy, -sy, 1, -1], np.int64)  # background on that side

    # Size the work buffers for the first border list (an upper bound: the unfrozen object
    # points with a background face neighbour). Fresh buffers cost no memory until written, so
    # only the entries used become resident; later growth copies, which is rare.
    nfirst = 0
    for z in range(1, nz - 1 if presize else 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                p = z * sz + y * sy + x
                if flat[p] & OBJ and not flat[p] & CON:
                    for f in range(6):
                        if not flat[p + dirs[f]] & OBJ:
                            nfirst += 1
                            break
    if border.size < nfirst:
        border = np.empty(nfirst, border.dtype)
    if cand.size < nfirst:
        cand = np.empty(nfirst, cand.dtype)
    if dirty.size < nfirst:
        dirty = np.empty(nfirst, dirty.dtype)

    # Border list: unfrozen object points with a background face neighbour.
    nborder = 0
    for z in range(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                p = z * sz + y * sy + x
                if not flat[p] & OBJ or flat[p] & CON:
                    continue
                isborder = False
                for f in range(6):
                    if not flat[p + dirs[f]] & OBJ:
                        isborder = True
                if not isborder:
                    continue
                if is_isthmus(_load(flat, p, off27)):
                    flat[p] |= CON
                    continue
                flat[p] |= _INL
                if nborder == border.size:
                    border = _grown(border, nborder)
                border[nborder] = p
                nborder += 1

    passes = 0
    while True:
        passes += 1
        deleted_pass = 0
        for d in range(6):
            step = dirs[d]
            ncand = 0
            for k in range(nborder):
                p = border[k]
                if flat[p + step] & OBJ:
                    continue
                if is_simple(_load(flat, p, off27)):
                    if ncand == cand.size:
                        cand = _grown(cand, ncand)
                    cand[ncand] = p
                    ncand += 1
            # Sequential deletion, re-checking simplicity on the current image.
            ndel = 0
            for k in range(ncand):
                p = cand[k]
                if is_simple(_load(flat, p, off27)):
                    flat[p] &= _NOT_OBJ
                    cand[ndel] = p
                    ndel += 1
            if ndel == 0:
                continue
            deleted_pass += ndel
            # Freeze new isthmuses and extend the border list around the deleted points
            # (each affected point once).
            ndirty = 0
            for k in range(ndel):
                p = cand[k]
                for i in range(27):
                    q = p + off27[i]
                    v = flat[q]
                    if v & OBJ and not v & (CON | _DIRTY):
                        flat[q] = v | _DIRTY
                        if ndirty == dirty.size:
                            dirty = _grown(dirty, ndirty)
                        dirty[ndirty] = q
                        ndirty += 1
            for k in range(ndirty):
                q = dirty[k]
                v = flat[q] & _NOT_DIRTY
                if is_isthmus(_load(flat, q, off27)):
                    v |= CON
                elif not v & _INL:
                    v |= _INL
                    if nborder == border.size:
                        border = _grown(border, nborder)
                    border[nborder] = q
                    nborder += 1
                flat[q] = v
            # Compact: keep unfrozen object points.
            m = 0
            for k in range(nborder):
                p = border[k]
                v = flat[p]
                if v & OBJ and not v & CON:
                    border[m] = p
                    m += 1
                else:
                    flat[p] = v & _NOT_INL
            nborder = m
        if deleted_pass == 0:
            break
    for p in range(flat.size):
        flat[p] &= OBJ | CON
    return passes
