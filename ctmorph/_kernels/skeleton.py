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
from numba import njit, prange

__all__ = ["OBJ", "CON", "thin", "t26", "t6bar", "is_simple", "is_isthmus"]

OBJ = 1  # object voxel
CON = 2  # constrained (frozen): never deleted
_INL = 4  # in the border list
_DIRTY = 8  # next to a point deleted in this sub-iteration
_DEL = 16  # deleted in this sub-iteration
# complements within a byte (``~`` of a Python int is negative)
_NOT_OBJ = 0xFF ^ OBJ
_NOT_INL = 0xFF ^ _INL
_NOT_DIRTY = 0xFF ^ _DIRTY
_NOT_DEL = 0xFF ^ _DEL


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


@njit(cache=True, nogil=True)
def _dilate26(m):
    m = m | ((m & _X_LO) << 1) | ((m & _X_HI) >> 1)
    m = m | ((m & _Y_LO) << 3) | ((m & _Y_HI) >> 3)
    return m | ((m & _Z_LO) << 9) | ((m & _Z_HI) >> 9)


@njit(cache=True, nogil=True)
def _dilate6(m):
    return (m | ((m & _X_LO) << 1) | ((m & _X_HI) >> 1) | ((m & _Y_LO) << 3)
            | ((m & _Y_HI) >> 3) | ((m & _Z_LO) << 9) | ((m & _Z_HI) >> 9))


@njit(cache=True, nogil=True)
def t26(nb):
    """0, 1 or 2 (meaning >= 2) 26-components of object in N26*(p)."""
    obj = nb & _N26
    if obj == 0:
        return 0
    comp = obj & -obj
    while comp != obj:  # all of it reached: one component (the fixpoint would be ``obj``)
        grown = _dilate26(comp) & obj
        if grown == comp:
            return 2
        comp = grown
    return 1


@njit(cache=True, nogil=True)
def t6bar(nb):
    """0, 1 or 2 (meaning >= 2) 6-components of background in N18(p) 6-adjacent to p."""
    bg = ~nb & _N18
    seeds = bg & _FACES
    if seeds == 0:
        return 0
    comp = seeds & -seeds
    while seeds & ~comp:  # all seeds reached: one component (it only grows)
        grown = _dilate6(comp) & bg
        if grown == comp:
            return 2
        comp = grown
    return 1


@njit(cache=True, nogil=True)
def _load(flat, p, off27):
    """The 27-bit neighbourhood mask of ``p`` (``OBJ`` bits), gathered row by row (three
    consecutive bytes each) without branches (``OBJ`` is bit 0)."""
    nb = 0
    for r in range(9):
        q = p + off27[3 * r + 1]
        row = (flat[q - 1] & OBJ) | ((flat[q] & OBJ) << 1) | ((flat[q + 1] & OBJ) << 2)
        nb |= np.int64(row) << (3 * r)
    return nb


@njit(cache=True, nogil=True)
def is_simple(nb):
    return t26(nb) == 1 and t6bar(nb) == 1


@njit(cache=True, nogil=True)
def is_isthmus(nb):
    return t26(nb) >= 2 or t6bar(nb) >= 2


@njit(cache=True, nogil=True)
def _grown(buf, n):
    """A copy of ``buf[:n]`` in a buffer of the same dtype with room for at least twice as
    many entries (and more than ``n``)."""
    out = np.empty(max(2 * buf.size, n + 1, 64), buf.dtype)
    out[:n] = buf[:n]
    return out


@njit(cache=True, nogil=True)
def _delete(flat, border, nborder, step, off27, cand, dirty):
    """One sub-iteration's deletions, in border-list order (see the notes in :func:`thin`).

    Deletes the border points with background on the side ``step`` at the start of the
    sub-iteration that are simple when their turn comes, lists them in ``cand`` and marks them
    ``_DEL``. On each deletion the object points around it that are neither frozen nor yet
    listed are marked ``_DIRTY`` and listed in ``dirty`` (later-deleted ones included: the
    caller skips them). On the way the list drops the points deleted or frozen in the
    sub-iteration before, keeping its order. Returns ``(nborder, cand, ndel, dirty, ndirty)``
    (buffers possibly grown).
    """
    ndel = 0
    ndirty = 0
    m = 0
    for k in range(nborder):
        p = border[k]
        v = flat[p]
        if (v & (OBJ | CON)) != OBJ:  # deleted or frozen before: leaves the list
            flat[p] = v & _NOT_INL
            continue
        border[m] = p
        m += 1
        if flat[p + step] & (OBJ | _DEL):  # object at the start of the sub-iteration
            continue
        if v & _DIRTY:  # a neighbour went in this sub-iteration: re-check on the image now
            if not is_simple(_load(flat, p, off27)):
                continue
        elif not flat[p - step] & OBJ and not _load(flat, p, off27) & _N26:
            continue  # isolated point (T26 = 0), the only non-simple border point
        flat[p] = (v & _NOT_OBJ) | _DEL
        if ndel == cand.size:
            cand = _grown(cand, ndel)
        cand[ndel] = p
        ndel += 1
        if dirty.size - ndirty < 27:  # room for all 27 writes (one growth always suffices)
            dirty = _grown(dirty, ndirty)
        for i in range(27):  # branch-free: the next entry only advances for a new point
            q = p + off27[i]
            w = flat[q]
            fresh = (w & (OBJ | CON | _DIRTY)) == OBJ
            flat[q] = w | (_DIRTY * fresh)
            dirty[ndirty] = q
            ndirty += fresh
    return m, cand, ndel, dirty, ndirty


@njit(cache=True, nogil=True, parallel=True)
def _isthmus_flags(flat, dirty, ndirty, off27, flag):
    """``flag[k] = 1`` where ``dirty[k]`` is an object point and an isthmus, else 0. Reads
    the ``OBJ`` bits only: the entries are independent."""
    for k in prange(ndirty):
        q = dirty[k]
        flag[k] = 1 if flat[q] & OBJ and is_isthmus(_load(flat, q, off27)) else 0


@njit(cache=True, nogil=True)
def _flags_for(flag, n):
    """``flag`` if it holds ``n`` entries, else a fresh uint8 buffer that does (contents
    undefined: every entry used is written before it is read)."""
    if flag.size >= n:
        return flag
    return np.empty(max(2 * flag.size, n, 64), np.uint8)


@njit(cache=True, nogil=True)
def _update(flat, dirty, ndirty, flag, border, nborder, dels, ndel):
    """Clear ``_DIRTY`` and ``_DEL``; freeze the flagged isthmuses and append the other
    object points not yet in the border list to it, in ``dirty`` order. Returns the border
    buffer and count."""
    for k in range(ndel):
        flat[dels[k]] &= _NOT_DEL
    for k in range(ndirty):
        q = dirty[k]
        v = flat[q] & _NOT_DIRTY
        if v & OBJ:  # deleted after it was listed: nothing to do
            if flag[k]:
                v |= CON
            elif not v & _INL:
                v |= _INL
                if nborder == border.size:
                    border = _grown(border, nborder)
                border[nborder] = q
                nborder += 1
        flat[q] = v
    return border, nborder


@njit(cache=True, nogil=True)
def _first_border(flat, nz, ny, nx, off27, dirs, border):
    """Freeze the isthmuses among the unfrozen object points with a background face
    neighbour and list the others (``_INL``) in scan order. Returns the buffer and the count."""
    sz, sy = ny * nx, nx
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
    return border, nborder


@njit(cache=True, nogil=True)
def _count_first(flat, nz, ny, nx, dirs):
    """Number of unfrozen object points with a background face neighbour (the size of the
    first border list)."""
    sz, sy = ny * nx, nx
    n = 0
    for z in range(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                p = z * sz + y * sy + x
                if flat[p] & OBJ and not flat[p] & CON:
                    for f in range(6):
                        if not flat[p + dirs[f]] & OBJ:
                            n += 1
                            break
    return n


@njit(cache=True, nogil=True)
def thin(img, border, cand, dirty, presize=True):
    """Thin ``img`` in place (C-contiguous uint8, padded as described in the module notes).

    ``border``, ``cand`` and ``dirty`` are the initial work buffers (1-D, C-contiguous, int32
    or int64 wide enough for flat indices of ``img``; any length, even 0). With ``presize``
    (default), buffers shorter than the first border list are first replaced by fresh ones of
    its length (pages never written cost no memory); any buffer that fills up is replaced by
    a copy twice as large. Memory thus follows the number of border points (the object's
    surface), not of object voxels (plus one byte of flags per dirty entry).
    ``presize=False`` only grows (for tests of the growth path). On return the ``OBJ`` bit
    marks the skeleton. Returns the number of passes made.

    Notes
    -----
    Each sub-iteration (direction ``step``) takes the border points with background on the
    side ``step`` that are simple at its start, in border-list order, and deletes each one
    that is still simple on the current image; the points around the deleted ones are then
    tested for isthmuses on the final image (frozen if so, else added to the border list) and
    the list drops what was deleted or frozen. Three exact shortcuts of that definition:

    * At the start of a sub-iteration every border point is an unfrozen object point that is
      not an isthmus of the current image (it was tested when listed, and again after every
      sub-iteration in which a neighbour went), so ``T26 <= 1`` and ``T6bar <= 1``; with
      background on the side ``step``, ``T6bar = 1``. Such a point is simple iff ``T26 != 0``,
      i.e. it has an object 26-neighbour: no full test at selection.
    * The neighbours of each deleted point are marked ``_DIRTY`` at once. A candidate without
      the mark has the neighbourhood it had at the start, so it is still simple: only marked
      candidates are re-tested (a marked one had an object neighbour at the start, so it was
      a candidate; background at the start on the side ``step`` means neither ``OBJ`` nor
      ``_DEL``). Listing the marked points in marking order (dropping those deleted later)
      gives the same list, in the same order, as marking after the deletions.
    * The isthmus tests only read ``OBJ`` bits, which the border-list updates never change:
      they run in parallel into per-entry flags (disjoint writes), then the updates are
      applied sequentially in list order. The result does not depend on the thread count.

    The border list is compacted during the next sub-iteration's scan instead of after each
    one (the same entries in the same order).
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
    nfirst = _count_first(flat, nz, ny, nx, dirs) if presize else 0
    if border.size < nfirst:
        border = np.empty(nfirst, border.dtype)
    if cand.size < nfirst:
        cand = np.empty(nfirst, cand.dtype)
    if dirty.size < nfirst:
        dirty = np.empty(nfirst, dirty.dtype)
    flag = np.empty(nfirst, np.uint8)

    border, nborder = _first_border(flat, nz, ny, nx, off27, dirs, border)
    passes = 0
    while True:
        passes += 1
        deleted_pass = 0
        for d in range(6):
            nborder, cand, ndel, dirty, ndirty = _delete(flat, border, nborder, dirs[d], off27,
                                                         cand, dirty)
            if ndel == 0:
                continue
            deleted_pass += ndel
            # Freeze new isthmuses and extend the border list around the deleted points.
            flag = _flags_for(flag, ndirty)
            _isthmus_flags(flat, dirty, ndirty, off27, flag)
            border, nborder = _update(flat, dirty, ndirty, flag, border, nborder, cand, ndel)
        if deleted_pass == 0:
            break
    for p in range(flat.size):
        flat[p] &= OBJ | CON
    return passes
