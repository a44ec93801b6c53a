"""All trabecular morphometry of one VOI in one call: volumes, surface, thickness, spacing,
number. Keys and units follow DESIGN §3 (``OUT/morphometry.csv`` columns)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..columns import column_units
from ..errors import SegmentationError
from ..spacing import normalize_spacing
from . import chunked as _chunked
from .arrays import as_mask, check_chunk_slices
from .basic import bone_surface_chunked, voxel_volume
from .tbn import midaxis_spacing_chunked
from .thickness import check_convention
from .zsource import ArraySource, ZSource, block_ranges, chunk_slices_for, read_phase

__all__ = ["TRABECULAR_COLUMNS", "trabecular_morphometry", "trabecular_morphometry_chunked"]

#: Keys returned by :func:`trabecular_morphometry`, in that order: ``key -> (unit,
#: description)`` from the column registry :mod:`ctmorph.columns`.
TRABECULAR_COLUMNS: dict[str, tuple[str, str]] = column_units((
    "TV", "BV", "BV/TV", "BS", "BS/BV", "BS/TV", "Tb.Th", "Tb.Th.SD", "Tb.Th.Max", "Tb.Sp",
    "Tb.Sp.SD", "Tb.Sp.Max", "Tb.N", "Tb.N.model",
))


def _check_counts(n_voi: int, n_bone: int, any_marrow: bool) -> None:
    """Refuse a VOI without bone or without marrow (Tb.Th or Tb.Sp undefined)."""
    if n_bone == 0:
        raise SegmentationError("VOI contains no bone voxels")
    if not any_marrow:
        if n_bone == n_voi:
            raise SegmentationError("VOI is entirely bone: no marrow, Tb.Sp undefined")
        raise SegmentationError(
            "VOI contains no marrow voxels (marrow_space excludes all non-bone VOI voxels): "
            "Tb.Sp undefined"
        )


def trabecular_morphometry(bone, voi, *, spacing, marrow_space=None,
                           convention: str = "corrected") -> dict[str, float]:
    """Trabecular morphometry of a VOI, with the structure around it as context.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone over a slab that includes context beyond the VOI.
    voi : (Z, Y, X) ndarray of bool
        The VOI: only these voxels are counted and averaged. Structure outside the VOI is
        context: balls are limited only by the other phase, never by the VOI wall or the
        image border, so a VOI cutting a trabecula in half still measures its full thickness.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    marrow_space : (Z, Y, X) ndarray of bool, optional
        Where marrow can be (e.g. the endocortical region); default everywhere. Marrow is
        ``marrow_space & ~bone``; for Tb.Sp and Tb.N its outside bounds the marrow like bone.
    convention : {"corrected", "uncorrected"}
        Local-thickness convention for Tb.Th and Tb.Sp (see
        :func:`~ctmorph.morphometry.local_thickness`). Tb.N does not depend on it.

    Returns
    -------
    dict of str to float
        The keys of :data:`TRABECULAR_COLUMNS`, in that order, with those units: ``TV``,
        ``BV`` (mm³), ``BV/TV`` (%), ``BS`` (mm²), ``BS/BV``, ``BS/TV`` (1/mm), ``Tb.Th``,
        ``Tb.Th.SD``, ``Tb.Th.Max``, ``Tb.Sp``, ``Tb.Sp.SD``, ``Tb.Sp.Max`` (mm), ``Tb.N``,
        ``Tb.N.model`` (1/mm).

    Raises
    ------
    ConfigError
        Bad arrays (not 3-D, not boolean, shapes differ), spacing or convention.
    SegmentationError
        The VOI is empty, holds no bone, or holds no marrow (all bone).

    Notes
    -----
    Tb.Th and Tb.Sp are volume-weighted means (SD: population SD over voxels) of the local
    thickness (Hildebrand & Rüegsegger 1997) of bone and marrow over their VOI voxels.
    Tb.N is direct (:func:`~ctmorph.morphometry.tbn.midaxis_spacing`); Tb.N.model is the
    plate-model ``(BV/TV) / Tb.Th`` for comparison with CTAn. BS is computed by
    :func:`~ctmorph.morphometry.bone_surface`.

    Computed by :func:`trabecular_morphometry_chunked` on the arrays read as one block (the
    one implementation; with more blocks only the float summation order of the means
    changes).
    """
    bone = as_mask(bone, "bone")
    src = ArraySource(bone, as_mask(voi, "voi", bone.shape), marrow_space)
    return trabecular_morphometry_chunked(src, spacing=spacing, convention=convention,
                                          chunk_slices=max(1, bone.shape[0]))


# ---------------------------------------------------------------------------------------------
# bounded memory: the same numbers from a source read in z-blocks

#: ``on_chunk(kind, z0, z1, values, selected)``: a chunk of a local-thickness map (``kind`` is
#: "Tb.Th" or "Tb.Sp"; float32 mm over slices ``[z0, z1)`` of the source, 0 off the phase) and
#: the voxels averaged on it (phase in the VOI).
ChunkCallback = Callable[[str, int, int, np.ndarray, np.ndarray], None]


class _LazyPhase:
    """Array-like (``shape``, ``dtype``, z-slicing) of one phase of a :class:`ZSource`, built
    block by block: ``"bone"``, ``"marrow"`` (marrow space and not bone) or ``"voi"``."""

    dtype = np.dtype(bool)
    fresh_blocks = True  # every slice range is a new array (chunked._read need not copy)

    def __init__(self, src: ZSource, kind: str) -> None:
        self.src, self.kind = src, kind
        self.shape = tuple(int(s) for s in src.shape)

    def __getitem__(self, key: slice) -> np.ndarray:
        z0, z1, _ = key.indices(self.shape[0])
        return read_phase(self.src, z0, max(z0, z1), self.kind)


def _thickness_chunks(src: ZSource, kind: str, sp: tuple[float, float, float],
                      convention: str, chunk_slices: int, box: tuple[int, ...],
                      on_chunk: ChunkCallback | None, label: str) -> tuple[float, float, float]:
    """Volume-weighted mean, SD and max of the local thickness of one phase over the VOI
    (bounding ``box``), computed chunk by chunk with exact halos (:mod:`.chunked`); only chunks
    meeting the VOI
    slices ``zr`` are mapped."""
    phase = _LazyPhase(src, kind)
    zr, plane_box = (box[0], min(int(src.shape[0]), box[1])), tuple(box[2:])
    moments = _chunked.Moments()
    for z0, z1, values, sel in _chunked.thickness_chunks(phase, sp, convention, chunk_slices,
                                                         zrange=zr, plane_box=plane_box):
        sel &= read_phase(src, z0, z1, "voi")
        moments.add(values, sel)
        if on_chunk is not None:
            on_chunk(label, z0, z1, values, sel)
    return moments.result()


def trabecular_morphometry_chunked(src: ZSource, *, spacing, convention: str = "corrected",
                                   chunk_slices: int | None = None,
                                   on_chunk: ChunkCallback | None = None) -> dict[str, float]:
    """:func:`trabecular_morphometry` of a source read in z-blocks, in bounded memory.

    Returns the keys and units of :func:`trabecular_morphometry` for the source's
    ``(bone, voi, marrow_space)``. Whatever the block size, the counts (TV, BV), BS, Tb.N and
    the local-thickness maps are identical; the means and SDs of Tb.Th and Tb.Sp are merged
    block by block, so they change with the block size only in float64 rounding (one block:
    the sequential sums over the whole map).

    Parameters
    ----------
    src : ZSource
        Bone, VOI and marrow space, read a block of slices at a time.
    spacing : float or (3,) sequence of float
        Voxel size ``(dz, dy, dx)`` in mm.
    convention : {"corrected", "uncorrected"}
        Local-thickness convention for Tb.Th and Tb.Sp.
    chunk_slices : int, optional
        Slices per block (default about 8 M voxels). Local thickness adds its exact halo
        (measured at run time) on both sides.
    on_chunk : callable, optional
        Called with every chunk of the Tb.Th and Tb.Sp maps (see :data:`ChunkCallback`), for
        histograms or to save the maps.

    Raises
    ------
    ConfigError
        Bad spacing, convention or ``chunk_slices``.
    SegmentationError
        The VOI is empty, holds no bone, or holds no marrow (all bone).

    Notes
    -----
    Memory: one block of ``chunk_slices + 2·halo`` slices (~5 bytes per voxel) for local
    thickness; the skeleton of Tb.N holds the VOI box (mirrored) as uint8 while it is thinned
    (see :func:`~ctmorph.morphometry.tbn.midaxis_spacing_chunked`).
    """
    check_convention(convention)
    sp = normalize_spacing(spacing)
    step = check_chunk_slices(chunk_slices) or chunk_slices_for(src.shape)
    box = src.voi_box()  # SegmentationError when empty
    n_voi = n_bone = n_marrow = 0
    for z0, z1 in block_ranges(box[0], box[1], step):
        blk = src.read(z0, z1)
        n_voi += int(np.count_nonzero(blk.voi))
        n_bone += int(np.count_nonzero(blk.voi & blk.bone))
        n_marrow += int(np.count_nonzero(blk.voi & blk.marrow_space & ~blk.bone))
    if n_voi == 0:
        raise SegmentationError("VOI is empty (no voxel selected)")
    _check_counts(n_voi, n_bone, n_marrow > 0)
    vv = voxel_volume(sp)
    tv, bv = n_voi * vv, n_bone * vv
    bs = bone_surface_chunked(src, spacing=sp, chunk_slices=step)
    th, th_sd, th_max = _thickness_chunks(src, "bone", sp, convention, step, box, on_chunk,
                                          "Tb.Th")
    spc, sp_sd, sp_max = _thickness_chunks(src, "marrow", sp, convention, step, box, on_chunk,
                                           "Tb.Sp")
    tbn = 1.0 / midaxis_spacing_chunked(src, spacing=sp, chunk_slices=step)
    return {
        "TV": tv, "BV": bv, "BV/TV": 100.0 * bv / tv,
        "BS": bs, "BS/BV": bs / bv, "BS/TV": bs / tv,
        "Tb.Th": th, "Tb.Th.SD": th_sd, "Tb.Th.Max": th_max,
        "Tb.Sp": spc, "Tb.Sp.SD": sp_sd, "Tb.Sp.Max": sp_max,
        "Tb.N": tbn, "Tb.N.model": (bv / tv) / th,
    }
