"""The thinning kernel as it was before the parallel isthmus tests: one sequential loop per
step, a full simplicity test of every candidate, marking of the dirty points after the
deletions, a separate compaction, topological numbers grown to their fixpoint. Compiled (no
cache), so that the current kernel can be compared with it bit for bit on volumes too large
for the pure-Python reference in ``test_tbn_chunked.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ctmorph._kernels.skeleton import _FACES, _N18, _N26, CON, OBJ, _dilate6, _dilate26

_INL = 4
_DIRTY = 8


@njit
def t26_fixpoint(nb):
    """T26 (0, 1 or 2 for >= 2) as the kernel computed it before the early exit: grow the
    component of the lowest object bit to its fixpoint, then compare with the object."""
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


@njit
def t6bar_fixpoint(nb):
    """T6bar (0, 1 or 2 for >= 2) as computed before the early exit (fixpoint, then test
    whether the component holds every face seed)."""
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


@njit
def is_simple(nb):
    return t26_fixpoint(nb) == 1 and t6bar_fixpoint(nb) == 1


@njit
def is_isthmus(nb):
    return t26_fixpoint(nb) >= 2 or t6bar_fixpoint(nb) >= 2


@njit
def _load_bits(flat, p, off27):
    """The 27-bit neighbourhood mask by its definition, one bit at a time."""
    nb = 0
    for i in range(27):
        if flat[p + off27[i]] & OBJ:
            nb |= 1 << i
    return nb


@njit
def _border_list(flat, nz, ny, nx, off27, dirs):
    """Freeze the initial isthmuses; list the other unfrozen points with a background face."""
    border = np.empty(flat.size, np.int64)
    n = 0
    for z in range(1, nz - 1):
        for y in range(1, ny - 1):
            for x in range(1, nx - 1):
                p = z * ny * nx + y * nx + x
                if not flat[p] & OBJ or flat[p] & CON:
                    continue
                isborder = False
                for f in range(6):
                    if not flat[p + dirs[f]] & OBJ:
                        isborder = True
                if not isborder:
                    continue
                if is_isthmus(_load_bits(flat, p, off27)):
                    flat[p] |= CON
                    continue
                flat[p] |= _INL
                border[n] = p
                n += 1
    return border, n


@njit
def _sub_iteration(flat, border, nborder, step, off27, cand, dirty):
    """One direction: select, delete with re-check, freeze/extend around, compact. Returns
    ``(nborder, ndel)``."""
    ncand = 0
    for k in range(nborder):
        p = border[k]
        if flat[p + step] & OBJ:
            continue
        if is_simple(_load_bits(flat, p, off27)):
            cand[ncand] = p
            ncand += 1
    ndel = 0
    for k in range(ncand):
        p = cand[k]
        if is_simple(_load_bits(flat, p, off27)):
            flat[p] &= 0xFF ^ OBJ
            cand[ndel] = p
            ndel += 1
    if ndel == 0:
        return nborder, 0
    ndirty = 0
    for k in range(ndel):
        p = cand[k]
        for i in range(27):
            q = p + off27[i]
            v = flat[q]
            if v & OBJ and not v & (CON | _DIRTY):
                flat[q] = v | _DIRTY
                dirty[ndirty] = q
                ndirty += 1
    for k in range(ndirty):
        q = dirty[k]
        v = flat[q] & (0xFF ^ _DIRTY)
        if is_isthmus(_load_bits(flat, q, off27)):
            v |= CON
        elif not v & _INL:
            v |= _INL
            border[nborder] = q
            nborder += 1
        flat[q] = v
    m = 0
    for k in range(nborder):
        p = border[k]
        v = flat[p]
        if v & OBJ and not v & CON:
            border[m] = p
            m += 1
        else:
            flat[p] = v & (0xFF ^ _INL)
    return m, ndel


@njit
def thin_sequential(img):
    """Thin ``img`` (padded uint8, as for :func:`ctmorph._kernels.skeleton.thin`) in place
    with buffers of one entry per voxel; returns the number of passes."""
    nz, ny, nx = img.shape
    flat = img.ravel()
    sz, sy = ny * nx, nx
    off27 = np.empty(27, np.int64)
    for i in range(27):
        off27[i] = (i // 9 - 1) * sz + ((i // 3) % 3 - 1) * sy + (i % 3 - 1)
    dirs = np.array([sz, -sz, sy, -sy, 1, -1], np.int64)
    border, nborder = _border_list(flat, nz, ny, nx, off27, dirs)
    cand = np.empty(flat.size, np.int64)
    dirty = np.empty(flat.size, np.int64)
    passes = 0
    while True:
        passes += 1
        deleted_pass = 0
        for d in range(6):
            nborder, ndel = _sub_iteration(flat, border, nborder, dirs[d], off27, cand, dirty)
            deleted_pass += ndel
        if deleted_pass == 0:
            break
    for p in range(flat.size):
        flat[p] &= OBJ | CON
    return passes
