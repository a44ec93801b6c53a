"""Local thickness of volumes larger than memory: z-chunks with exact halos.

:func:`thickness_stats_chunked` (Tb.Th / Tb.Sp of a huge VOI) and :func:`write_local_thickness`
(the map into a memmap, a ``.npy`` file or a zarr-like store) stream the volume chunk by chunk
and need no Dask; :func:`local_thickness_chunked` returns the map as a lazy Dask array (needs
``pip install 'ctmorph[distributed]'``). Every result equals
:func:`~ctmorph.morphometry.local_thickness` of the whole volume voxel for voxel.

Units: every length is in the unit of ``spacing`` (mm throughout ctmorph).

Why a halo makes it exact
-------------------------
Write ``d_p`` for the distance from phase voxel ``p`` to the nearest background voxel of the
*whole* image and ``R = max d_p``. The thickness at ``q`` is the largest ``2·d_p`` over the
balls ``|q - p| < d_p`` containing ``q``, so only centres with ``|z_p - z_q|·dz < R`` matter:
at most ``K`` slices away, ``K`` the largest integer with ``(K·dz)² < R²``. Their ``d_p`` is
exact when computed on a block that holds their nearest background voxel, which lies at most
``M`` slices away, ``M`` the largest integer with ``(M·dz)² <= R²`` (``K <= M``). Hence an
output chunk ``[z0, z1)`` is exact when computed from the block ``[z0 - H, z1 + H)`` (clipped to
the image; a clipped side is the true image border, which is no surface in either case) with a
halo ``H >= K + M``, painting only the balls centred in ``[z0 - K, z1 + K)``. The distances of
every other block voxel may be too large (their background can be outside the block), so they
are zeroed before the ridge step and never painted; a ball dropped by the ridge step is then
always inside a kept ball of the painted zone, as in the whole-volume kernel. The chunk cuts are
therefore interior context, never surfaces, exactly like the VOI wall (docs/DESIGN.md §4).

``R`` is measured first (pass 1, a chunked distance transform): the distance at ``p`` computed on
a block is at least the true one, and equal to it when it is at most the distance from ``p`` to
the nearest voxel outside the block; a chunk whose check fails is redone with a doubled halo.
With commensurate voxel sizes (ratios of small integers, the usual case) all squared distances
are exact integers and the result is bitwise identical to the whole-volume map; otherwise
(floating-point path) the margins of the checks cover float32 rounding and the result agrees to
float32 rounding (in practice bitwise too).

Memory: two passes over the chunks. The first writes the exact squared distances (blocks of
``c + 2·M`` slices) to an unnamed temporary file; the second reads each chunk's ``c + 2·K``
slices back a few at a time, keeps the ridge balls (12 bytes per centre) and paints the chunk:
about 5 bytes per voxel of ``c + 2·max(K, M)`` slices. :func:`local_thickness_chunked` (Dask
tasks) reads blocks of ``c + 2·H`` slices, ``H ≈ 2·R/dz``: use chunks of a few ``R/dz``.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np

from .._atomic import atomic_path
from .._kernels.edt import squared_edt
from .._kernels.thickness import finish_thickness, masked_stats, paint_balls
from ..errors import ConfigError, SegmentationError
from ..spacing import normalize_spacing
from .arrays import check_chunk_slices
from .thickness import check_convention, containment, ridges, thickness_map, unit_weights

__all__ = [
    "ThicknessHalo",
    "ThicknessStats",
    "local_thickness_chunked",
    "thickness_stats_chunked",
    "thickness_halo",
    "write_local_thickness",
]

logger = logging.getLogger(__name__)

#: What to tell a user who asked for a Dask array without Dask installed.
INSTALL_HINT = "pip install 'ctmorph[distributed]'"
# Default chunk size (voxels) when the input gives none: 64 Mi voxels, ~0.6 GB of work memory.
_CHUNK_VOXELS = 2**26
# First halo (slices) of the distance pass when none is given; doubled until exact.
_FIRST_HALO = 16
# Relative margin of the exactness checks on the floating-point path (float32 rounding of the
# stored squared distances is ~6e-8; the margin is well above it).
_FLOAT_MARGIN = 1e-6


@dataclass(frozen=True)
class ThicknessHalo:
    """The halo that makes chunked local thickness exact (see the module notes).

    Attributes
    ----------
    radius : float
        ``R``: largest distance from a phase voxel to the background, in the unit of
        ``spacing`` (mm); the radius of the largest inscribed ball. 0 when there is no phase.
    centre_slices : int
        ``K``: slices between a voxel and the farthest ball centre that can contain it.
    background_slices : int
        ``M``: slices between a ball centre and the farthest background voxel that can set it.
    halo : int
        Slices of context loaded on each side of a chunk (``>= K + M``).
    bounds : tuple of int
        Chunk boundaries along z: chunk ``i`` is ``bounds[i]:bounds[i + 1]``.
    n_phase : int
        Number of phase voxels in the volume.
    """

    radius: float
    centre_slices: int
    background_slices: int
    halo: int
    bounds: tuple[int, ...]
    n_phase: int

    @property
    def required(self) -> int:
        """Smallest exact halo ``K + M`` in slices."""
        return self.centre_slices + self.background_slices


class ThicknessStats(NamedTuple):
    """Volume-weighted local-thickness statistics over the phase voxels of a VOI.

    ``mean``, ``sd`` (population SD) and ``max`` in the unit of ``spacing`` (mm); ``n`` is the
    number of voxels averaged. NaN statistics when ``n`` is 0.
    """

    mean: float
    sd: float
    max: float
    n: int


class Moments:
    """Count, mean, population SD and max merged chunk by chunk (Chan et al. 1983); one
    non-empty chunk gives its :func:`masked_stats` unchanged (one block: the whole-map values)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.max = 0, 0.0, 0.0, -math.inf
        self.sd: float | None = None  # the SD while only one chunk has been added

    def add(self, values: np.ndarray, sel: np.ndarray) -> None:
        nb, mb, sdb, maxb = masked_stats(values, np.ascontiguousarray(sel))
        if nb == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2, self.max = nb, float(mb), sdb * sdb * nb, float(maxb)
            self.sd = float(sdb)
            return
        self.sd = None
        tot = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / tot
        self.m2 += sdb * sdb * nb + delta * delta * self.n * nb / tot
        self.n = tot
        self.max = max(self.max, float(maxb))

    def result(self) -> tuple[float, float, float]:
        return (float(self.mean), self.sd if self.sd is not None else
                math.sqrt(self.m2 / self.n), float(self.max))


@dataclass(frozen=True)
class ThicknessPlan:
    """Everything a chunk needs: kernel parameters and the halo."""

    shape: tuple[int, int, int]
    w2: np.ndarray
    unit: float
    shrink: float
    table: np.ndarray
    offset: float
    halo: ThicknessHalo
    dmax: float  # largest squared distance in the internal unit
    counts: np.ndarray  # phase voxels per slice


def _is_dask(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask" and hasattr(a, "chunks")


def _check_volume(a: Any, name: str, shape: tuple[int, ...] | None = None) -> Any:
    """Validate a (Z, Y, X) boolean or integer array-like without reading its data."""
    if not (hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "__getitem__")):
        a = np.asarray(a)
    shp = tuple(int(s) for s in a.shape)
    if len(shp) != 3:
        raise ConfigError(f"{name} must be a 3-D (Z, Y, X) array, got shape {shp}")
    dt = np.dtype(a.dtype)
    if dt != np.bool_ and not np.issubdtype(dt, np.integer):
        raise ConfigError(
            f"{name} must be a boolean (or 0/1 integer) array, got dtype {dt}; "
            "threshold grey images first"
        )
    if shape is not None and shp != tuple(shape):
        raise ConfigError(f"{name} has shape {shp}, expected {tuple(shape)}")
    if _is_dask(a) and (len(a.chunks[1]) > 1 or len(a.chunks[2]) > 1):
        raise ConfigError(
            f"{name} is a Dask array chunked along y/x (chunks {a.chunks[1]}, {a.chunks[2]}); "
            f"chunk it along z only: {name}.rechunk({{1: -1, 2: -1}})"
        )
    return a


def _read(a: Any, z0: int, z1: int) -> np.ndarray:
    """Slices ``z0:z1`` as a new C-contiguous uint8 array (1 = phase)."""
    block = np.asarray(a[z0:z1])
    if getattr(a, "fresh_blocks", False) and block.dtype == np.bool_ \
            and block.flags.c_contiguous and block.flags.owndata:
        return block.view(np.uint8)  # a new array the source will not touch again: no copy
    return np.not_equal(block, 0).view(np.uint8)


def _bounds(a: Any, chunk_slices: int | None) -> tuple[int, ...]:
    nz, ny, nx = (int(s) for s in a.shape)
    c = check_chunk_slices(chunk_slices)
    if c is None:
        if _is_dask(a):
            return (0, *np.cumsum(a.chunks[0]).tolist())
        c = max(1, _CHUNK_VOXELS // max(1, ny * nx))
    return tuple(range(0, nz, c)) + (nz,) if nz else (0,)


def _check_halo(halo: int | None) -> int | None:
    if halo is None:
        return None
    if isinstance(halo, bool) or not isinstance(halo, int | np.integer) or halo < 0:
        raise ConfigError(f"halo must be a non-negative number of slices or None, got {halo!r}")
    return int(halo)


def _within(d2: float, w2z: float, strict: bool, exact: bool) -> int:
    """Largest ``k >= 0`` with ``k²·w2z < d2`` (``strict``) or ``<= d2``; on the floating-point
    path ``d2`` is enlarged by the rounding margin and the test is never strict."""
    if not exact:
        d2 *= 1.0 + _FLOAT_MARGIN
        strict = False
    k = int(math.sqrt(d2 / w2z)) + 2
    while k > 0 and not (k * k * w2z < d2 if strict else k * k * w2z <= d2):
        k -= 1
    return k


# ---------------------------------------------------------------------------------------------
# pass 1: the largest distance, exact


def _chunk_dmax(a: Any, z0: int, z1: int, h: int, nz: int, w2: np.ndarray, exact: bool,
                counts: np.ndarray) -> tuple[float | None, float]:
    """Largest squared distance over slices ``z0:z1`` computed with a halo of ``h`` slices,
    or None when the halo is too small to prove it exact, and the block's own largest value
    over those slices (an upper bound of the true one; inf without background). Fills
    ``counts[z0:z1]``."""
    b0, b1 = max(0, z0 - h), min(nz, z1 + h)
    phase = _read(a, b0, b1)
    s0, s1 = z0 - b0, z1 - b0
    counts[z0:z1] = np.count_nonzero(phase[s0:s1], axis=(1, 2))
    if not counts[z0:z1].any():
        return 0.0, 0.0
    if phase.all():
        return None, math.inf  # no background in the block: the distances are unknown
    d = np.empty(phase.shape, dtype=np.float32)
    squared_edt(phase, w2, d)
    del phase
    smax = d[s0:s1].reshape(s1 - s0, -1).max(axis=1).astype(np.float64)
    del d
    # voxels outside the block are at least g slices away from slice z (inf: image border)
    z = np.arange(z0, z1)
    g = np.minimum(np.where(b0 > 0, z - b0 + 1, np.inf), np.where(b1 < nz, b1 - z, np.inf))
    limit = g * g * w2[0] * (1.0 if exact else 1.0 - _FLOAT_MARGIN)
    if not np.all(smax <= limit):
        return None, float(smax.max())
    return float(smax.max()), float(smax.max())


def thickness_plan(a: Any, spacing, convention: str, chunk_slices: int | None,
          halo: int | None) -> ThicknessPlan:
    check_convention(convention)
    a = _check_volume(a, "mask")
    sp = normalize_spacing(spacing)
    halo = _check_halo(halo)
    bounds = _bounds(a, chunk_slices)
    nz = int(a.shape[0])
    shape = tuple(int(s) for s in a.shape)
    unit, w2, exact = unit_weights(sp)
    counts = np.zeros(nz, dtype=np.int64)
    dmax = 0.0
    h = _FIRST_HALO if halo is None else halo
    retry = []
    for z0, z1 in zip(bounds[:-1], bounds[1:], strict=True):
        got, upper = _chunk_dmax(a, z0, z1, h, nz, w2, exact, counts)
        if got is None:
            retry.append((z0, z1, upper))
        else:
            dmax = max(dmax, got)
    # every slice has been counted once: refuse an all-phase volume before growing any halo
    if int(counts.sum()) == math.prod(shape) and counts.size:
        raise SegmentationError(
            "local thickness undefined: the phase fills the whole volume (no background voxel)"
        )
    for z0, z1, upper in retry:
        if halo is not None:
            raise ConfigError(
                f"halo={halo} slices is too small for this mask: a distance to the background "
                f"in slices {z0}-{z1 - 1} reaches beyond it; give a larger halo or halo=None"
            )
        got, hc = None, h
        while got is None:
            # A longer block only lowers the distances (more background), so a halo longer
            # than the largest one found proves them exact at once; but that one may be far
            # too long (a cavity along z looks deep in a short block), so at most double.
            # Terminates: with h >= nz the block is the whole image.
            fit = _within(upper, w2[0], strict=False, exact=exact) + 1 \
                if math.isfinite(upper) else 2 * hc
            hc = min(nz, max(hc + 1, min(2 * hc, fit)))
            logger.debug("chunked thickness: slices %d-%d, halo grown to %d", z0, z1 - 1, hc)
            got, upper = _chunk_dmax(a, z0, z1, hc, nz, w2, exact, counts)
        dmax = max(dmax, got)
    n_phase = int(counts.sum())
    K = _within(dmax, w2[0], strict=True, exact=exact)
    M = _within(dmax, w2[0], strict=False, exact=exact)
    if halo is not None and halo < K + M:
        raise ConfigError(
            f"halo={halo} slices is smaller than the {K + M} needed for exact local thickness "
            f"(largest ball radius {math.sqrt(dmax) * unit:.6g} in spacing units: "
            f"{K} slices to its centre + {M} to its background)"
        )
    use = K + M if halo is None else halo
    info = ThicknessHalo(radius=math.sqrt(dmax) * unit, centre_slices=K, background_slices=M,
                         halo=use, bounds=bounds, n_phase=n_phase)
    table, shrink = containment(w2, dmax, exact)  # as local_thickness on the whole volume
    offset = 0.5 * float(np.mean(sp)) if convention == "corrected" else 0.0
    logger.debug(
        "chunked local thickness: largest ball radius %.6g, halo %d slices (%d + %d), "
        "%d chunks", info.radius, use, K, M, len(bounds) - 1,
    )
    return ThicknessPlan(shape=shape, w2=w2, unit=unit, shrink=shrink, table=table, offset=offset,
                 halo=info, dmax=dmax, counts=counts)


# ---------------------------------------------------------------------------------------------
# pass 2: one chunk of the map


def _chunk_map(phase: np.ndarray, b0: int, z0: int, z1: int, plan: ThicknessPlan) -> np.ndarray:
    """Local thickness of slices ``z0:z1`` from the block ``phase`` (uint8, 1 = phase) that
    starts at slice ``b0`` and holds at least ``halo`` slices of context on each cut side."""
    nz, ny, nx = plan.shape
    out = np.zeros((z1 - z0, ny, nx), dtype=np.float32)
    if not phase[z0 - b0:z1 - b0].any():
        return out
    w2 = plan.w2
    d = np.empty(phase.shape, dtype=np.float32)
    squared_edt(phase, w2, d)
    # only the centres within K slices of the chunk can reach it; the others may be inexact
    k = plan.halo.centre_slices
    e0, e1 = max(0, z0 - k) - b0, min(nz, z1 + k) - b0
    d[:e0] = 0.0
    d[e1:] = 0.0
    # run-time guard: the block must be the one pass 1 measured (a memmap rewritten meanwhile or
    # a non-deterministic Dask graph would otherwise give a silently wrong map)
    if (not np.array_equal(np.count_nonzero(phase[z0 - b0:z1 - b0], axis=(1, 2)),
                           plan.counts[z0:z1])
            or float(d[e0:e1].max()) > plan.dmax):
        raise ConfigError(
            f"mask changed between the two passes of chunked local thickness (slices "
            f"{z0}-{z1 - 1}); its data must stay the same while it is analysed"
        )
    # the phase buffer is reused as the ridge flags
    offsets, ry, rx, rd = ridges(d, phase, w2, plan.table, plan.shrink)
    del d
    box = np.asarray((z0 - b0, z1 - b0, 0, ny, 0, nx), dtype=np.int64)
    paint_balls(offsets, ry, rx, rd, w2, plan.shrink, box, out, numba.get_num_threads())
    finish_thickness(out, plan.unit, plan.offset)
    return out


def _chunk_task(block: np.ndarray, b0: int, z0: int, z1: int, plan: ThicknessPlan) -> np.ndarray:
    """Dask task: a block may be shared between tasks, so work on a fresh uint8 copy."""
    return _chunk_map(np.not_equal(block, 0).view(np.uint8), b0, z0, z1, plan)


def _block_range(plan: ThicknessPlan, z0: int, z1: int) -> tuple[int, int]:
    h = plan.halo.halo
    return max(0, z0 - h), min(plan.shape[0], z1 + h)


def _write_distances(a: Any, plan: ThicknessPlan, f: Any, fz0: int, fz1: int) -> None:
    """Append the exact squared distances of slices ``[fz0, fz1)`` (float32, C order) to the
    binary file ``f``, computed block by block with a halo of ``M`` slices (the background of
    any phase voxel lies within ``M`` slices, so each block holds it)."""
    nz, ny, nx = plan.shape
    m = plan.halo.background_slices
    step = max(1, plan.halo.bounds[1] - plan.halo.bounds[0]) if len(plan.halo.bounds) > 1 \
        else max(1, fz1 - fz0)
    for z0 in range(fz0, fz1, step):
        z1 = min(fz1, z0 + step)
        b0, b1 = max(0, z0 - m), min(nz, z1 + m)
        phase = _read(a, b0, b1)
        if not np.array_equal(np.count_nonzero(phase[z0 - b0:z1 - b0], axis=(1, 2)),
                              plan.counts[z0:z1]):
            raise ConfigError(
                f"mask changed between the two passes of chunked local thickness (slices "
                f"{z0}-{z1 - 1}); its data must stay the same while it is analysed"
            )
        d = np.zeros(phase.shape, dtype=np.float32)
        if phase[z0 - b0:z1 - b0].any():
            squared_edt(phase, plan.w2, d)
        del phase
        part = d[z0 - b0:z1 - b0]  # a view: it keeps the whole block alive until deleted
        if part.size and float(part.max()) > plan.dmax:
            raise ConfigError(
                f"mask changed between the two passes of chunked local thickness (slices "
                f"{z0}-{z1 - 1}); its data must stay the same while it is analysed"
            )
        f.write(part.data)  # slices along z of a C-contiguous block are contiguous
        del part, d  # before the next block is read


#: Slices of distances read at once when collecting ridge balls (plus one on each side).
_RIDGE_SLICES = 16


def _read_distances(f: Any, fz0: int, z0: int, z1: int,
                    shape: tuple[int, int, int]) -> np.ndarray:
    """Squared distances of slices ``[z0, z1)`` from the file written by
    :func:`_write_distances` (which starts at slice ``fz0``)."""
    _, ny, nx = shape
    f.seek((z0 - fz0) * ny * nx * 4)
    return np.fromfile(f, dtype=np.float32, count=(z1 - z0) * ny * nx).reshape(z1 - z0, ny, nx)


def _map_from_distances(f: Any, fz0: int, z0: int, z1: int,
                        plan: ThicknessPlan) -> tuple[np.ndarray, np.ndarray]:
    """Local thickness of slices ``[z0, z1)`` and their phase mask, from the distances of
    slices ``[z0 - K, z1 + K)`` read back from ``f`` (which starts at slice ``fz0``).

    Equal to :func:`_chunk_map`: there the distances outside ``[z0 - K, z1 + K)`` are zeroed,
    and a zero neighbour, like a missing one, never contains a ball, so the ridges (and the
    balls painted) are the same."""
    nz, ny, nx = plan.shape
    k = plan.halo.centre_slices
    e0, e1 = max(0, z0 - k), min(nz, z1 + k)
    phase = _read_distances(f, fz0, z0, z1, plan.shape) > 0
    out = np.zeros((z1 - z0, ny, nx), dtype=np.float32)
    if not phase.any():
        return out, phase
    # The ridge test of a voxel looks at its 26 neighbours only, so the ridges of slices
    # [a, b) come from the distances of [a - 1, b + 1) (clipped to [e0, e1), whose outside
    # counts as zero): a few slices of distances in memory at a time, only the ridges kept.
    parts, counts = [], [np.zeros(1, dtype=np.int64)]
    for a, b in ((a, min(e1, a + _RIDGE_SLICES)) for a in range(e0, e1, _RIDGE_SLICES)):
        lo, hi = max(e0, a - 1), min(e1, b + 1)
        d = _read_distances(f, fz0, lo, hi, plan.shape)
        offs, ry, rx, rd = ridges(d, np.empty(d.shape, dtype=np.uint8), plan.w2, plan.table,
                                   plan.shrink)
        del d
        i0, i1 = offs[a - lo], offs[b - lo]
        parts.append((ry[i0:i1].copy(), rx[i0:i1].copy(), rd[i0:i1].copy()))
        counts.append(np.diff(offs[a - lo:b - lo + 1]))
        del offs, ry, rx, rd
    offsets = np.cumsum(np.concatenate(counts))
    ry, rx, rd = (np.concatenate([p[i] for p in parts]) for i in range(3))
    del parts
    box = np.asarray((z0 - e0, z1 - e0, 0, ny, 0, nx), dtype=np.int64)
    paint_balls(offsets, ry, rx, rd, plan.w2, plan.shrink, box, out, numba.get_num_threads())
    finish_thickness(out, plan.unit, plan.offset)
    return out, phase


def thickness_chunks(a: Any, spacing: tuple[float, float, float], convention: str,
                     chunk_slices: int, zrange: tuple[int, int] | None = None,
                     plane_box: tuple[int, int, int, int] | None = None):
    """:func:`iter_thickness_chunks` of a plan, or, when ``chunk_slices`` covers the volume, one
    chunk ``zrange`` of :func:`~ctmorph.morphometry.thickness.thickness_map` of the whole phase
    painted in ``zrange`` × ``plane_box`` ``(y0, y1, x0, x1)`` only (0 elsewhere): no halo pass."""
    nz, ny, nx = (int(n) for n in a.shape)
    if chunk_slices >= nz:
        phase = np.ascontiguousarray(a[0:nz], dtype=bool)
        (z0, z1), (y0, y1, x0, x1) = zrange or (0, nz), plane_box or (0, ny, 0, nx)
        tau = np.zeros((z1 - z0, ny, nx), dtype=np.float32)
        tau[:, y0:y1, x0:x1] = thickness_map(phase, spacing, convention,
                                             (z0, z1, y0, y1, x0, x1))
        yield z0, z1, tau, np.ascontiguousarray(phase[z0:z1])
        return
    plan = thickness_plan(a, spacing, convention, chunk_slices, None)
    yield from iter_thickness_chunks(a, plan, zrange)


def iter_thickness_chunks(a: Any, plan: ThicknessPlan, zrange: tuple[int, int] | None = None):
    """Yield ``(z0, z1, map, phase)`` for the chunks meeting slices ``zrange`` (default all);
    ``phase`` is the chunk's mask (bool, C-contiguous).

    Two passes, so a block never holds both halos: the exact squared distances of the slices
    the chunks need (their ``K``-slice neighbourhoods) go to an unnamed temporary file block by
    block (halo ``M``), then each chunk reads its ``K``-slice neighbourhood back, keeps the
    ridge balls and paints them. Memory: ~5 bytes per voxel of ``chunk + 2·max(K, M)`` slices
    plus the chunk's map, instead of ``chunk + 2·(K + M)`` slices."""
    b = plan.halo.bounds
    nz = plan.shape[0]
    chunks = [(z0, z1) for z0, z1 in zip(b[:-1], b[1:], strict=True)
              if zrange is None or (z1 > zrange[0] and z0 < zrange[1])]
    if not chunks:
        return
    k = plan.halo.centre_slices
    fz0, fz1 = max(0, chunks[0][0] - k), min(nz, chunks[-1][1] + k)
    with tempfile.TemporaryFile(prefix="ctmorph-edt-") as f:
        _write_distances(a, plan, f, fz0, fz1)
        for z0, z1 in chunks:
            out, phase = _map_from_distances(f, fz0, z0, z1, plan)
            yield z0, z1, out, phase


# ---------------------------------------------------------------------------------------------
# public API


def thickness_halo(mask, *, spacing, chunk_slices: int | None = None,
                   halo: int | None = None) -> ThicknessHalo:
    """The halo that makes chunked local thickness exact (pass 1 only): a
    :class:`ThicknessHalo` (largest ball radius in the unit of ``spacing``, halo in slices,
    chunking). Parameters as :func:`local_thickness_chunked`; reads the mask block by block."""
    return thickness_plan(mask, spacing, "corrected", chunk_slices, halo).halo


def write_local_thickness(mask, out, *, spacing, convention: str = "corrected",
                          chunk_slices: int | None = None,
                          halo: int | None = None) -> ThicknessHalo:
    """Write the local thickness of a large phase into ``out``, chunk by chunk.

    Parameters
    ----------
    mask : (Z, Y, X) array-like of bool
        The phase: a numpy array, a memmap (``np.load(..., mmap_mode="r")``,
        ``tifffile.memmap``), a zarr/h5py dataset, or a Dask array chunked along z only.
        Integer arrays count nonzero as phase.
    out : (Z, Y, X) array-like of float, or str or os.PathLike
        Where the map goes: anything that accepts ``out[z0:z1] = chunk`` (a writable memmap,
        a zarr array), or the path of a ``.npy`` file to create (written atomically).
    spacing, convention, chunk_slices, halo
        See :func:`local_thickness_chunked`.

    Returns
    -------
    ThicknessHalo
        The halo and chunking used.

    Notes
    -----
    Peak memory: one block (``chunk_slices + 2·halo`` slices, ~5 B/voxel) and one output chunk.
    """
    a = _check_volume(mask, "mask")
    if isinstance(out, str | os.PathLike):
        plan = thickness_plan(a, spacing, convention, chunk_slices, halo)
        # written sequentially (chunks come in z order, C order), not through a memmap whose
        # dirty pages would stay resident: memory stays bounded by one block
        with atomic_path(out, suffix=".npy.tmp") as tmp, open(tmp, "wb") as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                      "fortran_order": False, "shape": plan.shape}
            np.lib.format.write_array_header_1_0(f, header)
            for _, _, chunk, _ in iter_thickness_chunks(a, plan):
                f.write(np.ascontiguousarray(chunk, dtype="<f4").data)
        return plan.halo
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(a.shape):
        raise ConfigError(
            f"out must be an array of shape {tuple(a.shape)} (or a .npy path), "
            f"got {getattr(out, 'shape', type(out).__name__)}"
        )
    if not np.issubdtype(np.dtype(out.dtype), np.floating):
        raise ConfigError(f"out must have a floating-point dtype, got {out.dtype}")
    plan = thickness_plan(a, spacing, convention, chunk_slices, halo)
    for z0, z1, chunk, _ in iter_thickness_chunks(a, plan):
        out[z0:z1] = chunk
    if hasattr(out, "flush"):
        out.flush()
    return plan.halo


def local_thickness_chunked(mask, *, spacing, convention: str = "corrected",
                            chunk_slices: int | None = None, halo: int | None = None):
    """Local thickness of a phase too large for memory, as a lazy Dask array.

    Equal voxel for voxel to :func:`~ctmorph.morphometry.local_thickness` of the whole volume
    (see the module notes for the argument and its run-time checks).

    Parameters
    ----------
    mask : (Z, Y, X) array-like of bool
        The phase (bone for Tb.Th, marrow for Tb.Sp): a numpy array, a memmap, a zarr/h5py
        dataset or a Dask array chunked along z only. Integer arrays count nonzero as phase.
        Balls are limited only by background voxels, never by the image border or a chunk cut.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    convention : {"corrected", "uncorrected"}
        As in :func:`~ctmorph.morphometry.local_thickness`.
    chunk_slices : int, optional
        Slices per output chunk. Default: the Dask input's z-chunks, else about 64 Mi voxels.
    halo : int, optional
        Slices of context loaded on each side of a chunk. None (default): the smallest exact
        halo, measured at run time. An int fixes it, which bounds the memory: a
        :class:`~ctmorph.errors.ConfigError` says so when the structure needs more.

    Returns
    -------
    (Z, Y, X) dask.array.Array of float32
        Local thickness in the unit of ``spacing`` (mm) on the phase, 0 elsewhere, chunked
        ``(chunk_slices, Y, X)``. The largest-radius pass runs now; the map when computed.

    Raises
    ------
    ConfigError
        Bad ``mask``, ``spacing``, ``convention``, ``chunk_slices`` or a too small ``halo``;
        Dask is not installed.
    SegmentationError
        The phase fills the whole volume (no background: thickness undefined).

    Notes
    -----
    Each chunk is one task reading its block: about one block (``chunk_slices + 2·halo``
    slices, ~10 B/voxel) per worker thread. :func:`write_local_thickness` and
    :func:`thickness_stats_chunked` do the same without Dask.
    """
    try:
        da = importlib.import_module("dask.array")
        dask = importlib.import_module("dask")
    except ImportError as exc:
        raise ConfigError(
            f"local_thickness_chunked returns a Dask array and needs the optional 'dask' "
            f"package ({exc}); install it with: {INSTALL_HINT} (write_local_thickness and "
            "thickness_stats_chunked need no Dask)"
        ) from None
    a = _check_volume(mask, "mask")
    plan = thickness_plan(a, spacing, convention, chunk_slices, halo)
    _, ny, nx = plan.shape
    b = plan.halo.bounds
    if _is_dask(a):
        src = a
    else:
        # name=False: no hashing of the whole input (a memmap may be larger than memory)
        src = da.from_array(a, chunks=(max(1, b[1] - b[0]) if len(b) > 1 else 1, ny, nx),
                            name=False)
    parts = []
    plan_d = dask.delayed(plan, pure=True)
    for z0, z1 in zip(b[:-1], b[1:], strict=True):
        b0, b1 = _block_range(plan, z0, z1)
        task = dask.delayed(_chunk_task, pure=True)(src[b0:b1], b0, z0, z1, plan_d)
        parts.append(da.from_delayed(task, shape=(z1 - z0, ny, nx), dtype=np.float32))
    if not parts:
        return da.zeros(plan.shape, dtype=np.float32)
    return da.concatenate(parts, axis=0)


def thickness_stats_chunked(mask, voi=None, *, spacing, convention: str = "corrected",
                            chunk_slices: int | None = None,
                            halo: int | None = None) -> ThicknessStats:
    """Volume-weighted mean, SD and max of local thickness over a VOI, in bounded memory.

    Tb.Th (``mask`` = bone) or Tb.Sp (``mask`` = marrow) of a VOI too large for memory: the
    map is computed chunk by chunk (:func:`local_thickness_chunked`) and never materialised.

    Parameters
    ----------
    mask : (Z, Y, X) array-like of bool
        The phase, as for :func:`local_thickness_chunked`; structure outside the VOI is context.
    voi : (Z, Y, X) array-like of bool, optional
        Voxels to average (with ``mask``); default: every phase voxel.
    spacing, convention, chunk_slices, halo
        See :func:`local_thickness_chunked`.

    Returns
    -------
    ThicknessStats
        ``(mean, sd, max, n)``: mean, population SD and max in the unit of ``spacing`` (mm)
        over the ``n`` phase voxels of the VOI (NaN statistics when ``n`` is 0).

    Notes
    -----
    Per-chunk count, mean and sum of squared deviations (float64, two passes per chunk) are
    merged with the pairwise update of Chan, Golub & LeVeque (1983), so the result equals the
    whole-map statistics to float64 rounding.

    Examples
    --------
    >>> import numpy as np
    >>> plate = np.zeros((40, 4, 4), bool); plate[10:30] = True   # 20 slices thick
    >>> thickness_stats_chunked(plate, spacing=1.0, chunk_slices=4)
    ThicknessStats(mean=19.5, sd=0.0, max=19.5, n=320)
    """
    a = _check_volume(mask, "mask")
    v = None if voi is None else _check_volume(voi, "voi", shape=tuple(a.shape))
    plan = thickness_plan(a, spacing, convention, chunk_slices, halo)
    moments = Moments()
    for z0, z1, chunk, sel in iter_thickness_chunks(a, plan):
        if v is not None:
            sel &= _read(v, z0, z1).view(bool)
        moments.add(chunk, sel)
    if moments.n == 0:
        return ThicknessStats(math.nan, math.nan, math.nan, 0)
    return ThicknessStats(*moments.result(), moments.n)
