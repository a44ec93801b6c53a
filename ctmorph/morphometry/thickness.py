"""Euclidean distance transform and local thickness (Hildebrand & Rüegsegger 1997).

Units: every length is in the unit of ``spacing`` (mm throughout ctmorph).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np

from .._kernels.edt import squared_edt
from .._kernels.thickness import (
    containment_table,
    finish_thickness,
    paint_balls,
    ridge_fill,
    ridge_mark,
)
from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing
from .arrays import as_mask

__all__ = ["CONVENTIONS", "distance_transform", "local_thickness"]

#: Local-thickness conventions: ``"corrected"`` (default, an ideal plate of n voxels measures
#: n ± 0.5 voxel) and ``"uncorrected"`` (centre-to-centre, as BoneJ and CTAn report).
CONVENTIONS = ("corrected", "uncorrected")

# Largest squared distance (in units) for the exact table path (radius 512 units): integers
# stay exact in float32 far beyond, and the table (7 float64 per value, 14 MB at the limit) and
# its construction stay cheap. Larger balls take the floating-point path.
EXACT_LIMIT = 2**18
# Otherwise balls are shrunk by this relative amount (in squared radius), well above the
# float32 rounding of the stored squared distances (~2e-7), so the background voxel that
# defines a radius is never painted; voxels closer to the sphere than that are ambiguous anyway.
SHRINK = 1e-6


def unit_weights(spacing: tuple[float, ...]) -> tuple[float, np.ndarray, bool]:
    """Split spacing into a length unit and squared voxel sizes in that unit.

    When the voxel-size ratios are (within 1e-9) fractions with small denominators, the unit is
    chosen so the voxel sizes are whole numbers: every squared distance is then an integer,
    computed exactly, and ties (a voxel exactly on a sphere) are decided exactly whatever the
    rounding of the typed voxel size (0.03/0.01 is 2.9999999999999996 in floating point).
    Returns ``(unit, w2, exact)``.
    """
    s0 = min(spacing)
    fracs = []
    for s in spacing:
        r = s / s0
        f = Fraction(r).limit_denominator(64)
        if abs(float(f) - r) > 1e-9 * r:
            return s0, np.asarray(spacing, dtype=np.float64) ** 2 / s0**2, False
        fracs.append(f)
    den = math.lcm(*(f.denominator for f in fracs))
    w = [int(f * den) for f in fracs]
    if max(w) > 64:
        return s0, np.asarray(spacing, dtype=np.float64) ** 2 / s0**2, False
    return s0 / den, np.asarray(w, dtype=np.float64) ** 2, True


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ConfigError(
            f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, got {convention!r}"
        )


def _squared_edt(mask: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared EDT in the internal unit of ``w2``; also returns the uint8 phase copy (a
    scratch buffer the caller may reuse)."""
    phase = np.ascontiguousarray(mask, dtype=np.uint8)
    if phase is mask or np.shares_memory(phase, mask):
        phase = phase.copy()
    d = np.empty(mask.shape, dtype=np.float32)
    squared_edt(phase, w2, d)
    return d, phase


def distance_transform(mask, *, spacing) -> np.ndarray:
    """Exact Euclidean distance from each phase voxel to the nearest background voxel.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        The phase (True); background is everything else *inside* the image.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Distance in mm between voxel centres; 0 on background, ``inf`` everywhere if the image
        has no background at all.

    Notes
    -----
    Voxels outside the image are not background: the image border is not a surface. Separable
    exact algorithm of Felzenszwalb & Huttenlocher (2012), parallel over image lines.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.ones((1, 1, 5), bool); m[0, 0, 0] = False
    >>> distance_transform(m, spacing=(1, 1, 0.5))[0, 0].tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0]
    """
    mask = as_mask(mask)
    unit, w2, _ = unit_weights(normalize_spacing(spacing))
    d, _ = _squared_edt(mask, w2)
    np.sqrt(d, out=d)
    d *= np.float32(unit)
    return d


def ridges(d: np.ndarray, flag: np.ndarray, w2: np.ndarray, table: np.ndarray,
            shrink: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ball centres that no other ball contains, from the squared EDT ``d``: per-slice
    ``offsets`` into their ``y``, ``x`` and squared radius arrays (``flag``, uint8 of
    ``d``'s shape, is overwritten as scratch)."""
    counts = np.empty(d.shape[0], dtype=np.int64)
    ridge_mark(d, w2, table, shrink, flag, counts)
    offsets = np.zeros(d.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    n = int(offsets[-1])
    ry = np.empty(n, dtype=np.int32)
    rx = np.empty(n, dtype=np.int32)
    rd = np.empty(n, dtype=np.float32)
    ridge_fill(d, flag, offsets, ry, rx, rd)
    return offsets, ry, rx, rd


def containment(w2: np.ndarray, dmax: float, exact: bool) -> tuple[np.ndarray, float]:
    """How a ball is tested for containment in a larger one, for squared distances up to
    ``dmax`` (internal units): with integer squared distances (``exact``, exact in float32)
    below :data:`EXACT_LIMIT` the exact discrete table of
    :func:`~ctmorph._kernels.thickness.containment_table` and no shrink; otherwise an empty
    table and radii shrunk by :data:`SHRINK`. Returns ``(table, shrink)``."""
    if exact and dmax < EXACT_LIMIT:
        table = np.empty((int(dmax) + 1, 7), dtype=np.float64)
        containment_table(w2, int(dmax), table)
        return table, 1.0
    return np.empty((0, 7), dtype=np.float64), 1.0 - SHRINK


def thickness_map(mask: np.ndarray, spacing: tuple[float, ...], convention: str,
                   box: tuple[int, int, int, int, int, int] | None = None) -> np.ndarray:
    """Local thickness of a validated mask (phase present, background present) over ``box``
    = ``(z0, z1, y0, y1, x0, x1)`` (default: the whole image); returns the box's map."""
    unit, w2, exact = unit_weights(spacing)
    d, flag = _squared_edt(mask, w2)
    table, shrink = containment(w2, float(d.max()), exact)
    offsets, ry, rx, rd = ridges(d, flag, w2, table, shrink)
    del d, flag
    if box is None:
        box = (0, mask.shape[0], 0, mask.shape[1], 0, mask.shape[2])
    z0, z1, y0, y1, x0, x1 = box
    out = np.zeros((z1 - z0, y1 - y0, x1 - x0), dtype=np.float32)
    paint_balls(offsets, ry, rx, rd, w2, shrink, np.asarray(box, dtype=np.int64), out,
                numba.get_num_threads())
    offset = 0.5 * float(np.mean(spacing)) if convention == "corrected" else 0.0
    finish_thickness(out, unit, offset)
    return out


def local_thickness(mask, *, spacing, convention: str = "corrected") -> np.ndarray:
    """Local thickness of a phase: diameter of the largest ball inside it containing each voxel.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        The phase (bone for Tb.Th, marrow for Tb.Sp). Balls are limited only by the other
        voxels of the image (background), never by the image border.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    convention : {"corrected", "uncorrected"}
        ``"uncorrected"``: ``τ(q) = max 2·d_p`` over the balls containing ``q``, the
        centre-to-centre convention of BoneJ and CTAn. ``"corrected"`` (default):
        ``τ - h/2`` with ``h`` the mean voxel size, see Notes.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Local thickness in the unit of ``spacing`` (mm) on the phase, 0 elsewhere.

    Raises
    ------
    ConfigError
        Bad ``mask``, ``spacing`` or ``convention``.
    SegmentationError
        The phase fills the whole volume (no background: thickness undefined).

    Notes
    -----
    Hildebrand & Rüegsegger (1997, J. Microsc. 185:67-75). ``d_p`` is the exact Euclidean
    distance from voxel centre ``p`` to the nearest background voxel centre and
    ``S_p = {q : |q - p| < d_p}`` (open ball, physical distances), so ``τ(q)`` is the largest
    ``2·d_p`` with ``q ∈ S_p``. The result is exact (it equals the brute-force definition voxel
    for voxel); the fast path drops balls contained in a neighbour's ball and paints the rest,
    in parallel over output slices. Memory: about 9 bytes per voxel (float32 squared distances,
    a uint8 scratch copy, the float32 output) plus 12 bytes per kept ball centre.

    Why ``- h/2``: distances run between voxel *centres*, so an ideal plate of ``n`` voxels gets
    ``2·d = n + 1`` for odd ``n`` (centre voxel at ``(n + 1)/2`` voxels from the background) and
    ``n`` for even ``n``; the uncorrected value is ``n + 1`` or ``n``. With centres on voxel
    centres the measured value can only jump by a whole voxel between parities, so no offset
    makes both exact; subtracting half a voxel is the only constant that keeps both within
    ±0.5 voxel (odd: ``n + 0.5``, even: ``n - 0.5``), unbiased on average over both parities.
    With anisotropic voxels ``h/2`` is an average: a
    plate normal to an axis of voxel size ``d`` reads ``(n + 1)·d - h/2`` (odd ``n``) or
    ``n·d - h/2`` (even ``n``).

    Curved objects read lower than their diameter: the largest ball centred on a voxel centre
    inside a voxelised sphere misses its far side by the offset between the sphere's centre and
    the nearest voxel centre (up to √3/2 voxel), about -1.5 voxel on average for the corrected
    convention (-1 voxel uncorrected); thin rods are slightly overestimated where they cross.

    Examples
    --------
    >>> import numpy as np
    >>> plate = np.zeros((9, 4, 4), bool); plate[3:6] = True    # 3 voxels thick
    >>> float(local_thickness(plate, spacing=1.0).max())
    3.5
    >>> float(local_thickness(plate, spacing=1.0, convention="uncorrected").max())
    4.0
    """
    check_convention(convention)
    mask = as_mask(mask)
    sp = normalize_spacing(spacing)
    n = np.count_nonzero(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.float32)
    if n == mask.size:
        raise SegmentationError(
            "local thickness undefined: the phase fills the whole volume (no background voxel)"
        )
    return thickness_map(mask, sp, convention)
