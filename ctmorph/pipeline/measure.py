"""The trabecular and structure measures of a VOI read from a slab source (arrays in memory
or a slab store), and the thickness histograms."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .._kernels.threads import concurrent_kernels_ok
from ..config import AnalysisConfig
from ..morphometry import (
    anisotropy_chunked,
    connectivity_chunked,
    pattern_factor_chunked,
    smi_chunked,
    trabecular_morphometry_chunked,
)
from ..morphometry.zsource import ArraySource, ZSource

__all__ = [
    "structure_metrics",
    "structure_metrics_chunked",
    "ThicknessHistogram",
    "thickness_histogram",
    "measure_voi",
    "Progress",
]

logger = logging.getLogger(__name__)

#: ``progress(stage)``: called as each stage of a scan starts.
Progress = Callable[[str], None]


def structure_metrics(
    bone: np.ndarray, voi: np.ndarray, *, spacing: tuple[float, float, float]
) -> dict[str, float]:
    """Connectivity, SMI and MIL anisotropy of the bone in the VOI (context around it).

    Returns the ``Euler``, ``Euler.corrected``, ``Conn``, ``Conn.D`` (1/mm³), ``SMI``,
    ``SMI+``, ``SMI-``, ``SMI.concave_fraction``, ``DA``, ``MIL.min/mid/max`` (mm) and
    ``MIL.dir.z/y/x`` and ``Tb.Pf`` (1/mm) columns; see :mod:`ctmorph.columns` for definitions.
    Computed by :func:`structure_metrics_chunked` on the arrays.
    """
    return structure_metrics_chunked(ArraySource(bone, voi), spacing=spacing)


class ThicknessHistogram:
    """Histogram of local-thickness values with bins one voxel wide, added chunk by chunk.

    Bin ``k`` holds the values ``v`` with ``floor(v / bin_mm) = k`` (the last bin also takes
    the top edge); counts are voxels, so the histogram is volume-weighted like Tb.Th and Tb.Sp.
    """

    def __init__(self, bin_mm: float) -> None:
        self.bin_mm = float(bin_mm)
        self.counts = np.zeros(0, dtype=np.int64)
        self.vmax = 0.0

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (mm)."""
        if values.size == 0:
            return
        self.vmax = max(self.vmax, float(values.max()))
        idx = np.floor(values.astype(np.float64) / self.bin_mm).astype(np.int64)
        c = np.bincount(np.maximum(idx, 0))
        if c.size > self.counts.size:
            c[: self.counts.size] += self.counts
            self.counts = c
        else:
            self.counts[: c.size] += c

    def result(self) -> dict[str, list]:
        """``{"bin_edges_mm": [...], "counts": [...]}``."""
        n = max(1, int(np.ceil(self.vmax / self.bin_mm + 1e-9)))
        counts = np.zeros(n, dtype=np.int64)
        k = min(n, self.counts.size)
        counts[:k] = self.counts[:k]
        counts[n - 1] += int(self.counts[n:].sum())
        return {"bin_edges_mm": [round(float(e), 9) for e in np.arange(n + 1) * self.bin_mm],
                "counts": [int(c) for c in counts]}


def thickness_histogram(values: np.ndarray, bin_mm: float) -> dict[str, list]:
    """Histogram of local-thickness values (mm) with bins one voxel wide
    (see :class:`ThicknessHistogram`).

    Returns ``{"bin_edges_mm": [...], "counts": [...]}``.
    """
    h = ThicknessHistogram(bin_mm)
    h.add(values)
    return h.result()


def measure_voi(src: ZSource, spacing: tuple[float, float, float], cfg: AnalysisConfig,
                crop: tuple[slice, slice], plane: tuple[int, int], step: Progress, *,
                chunk_slices: int | None = None,
                ) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Trabecular and structure metrics, thickness histograms and (``save_maps``) maps of the
    VOI of a slab source.

    Parameters
    ----------
    src : ZSource
        The slab: bone, VOI and marrow space (the endocortical region), on the in-plane
        ``crop`` of a scan of ``plane`` = ``(Y, X)`` pixels.
    spacing : (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    cfg : AnalysisConfig
        ``thickness_convention`` and ``save_maps`` are used.
    step : callable
        Told when the structure metrics start.
    chunk_slices : int, optional
        Slices per block of the trabecular measures (None: about 8 M voxels; the slab's
        slice count reads it as one block, as :func:`~ctmorph.morphometry.trabecular_morphometry`
        does). Conn, SMI and Tb.Pf use their own default blocks either way.

    Returns
    -------
    metrics : dict of str to float
        The trabecular (:func:`~ctmorph.morphometry.trabecular_morphometry`) and structure
        (:func:`structure_metrics`) columns.
    histograms : dict
        ``"Tb.Th"``, ``"Tb.Sp"``: :meth:`ThicknessHistogram.result` of the local thickness of
        bone and marrow over the VOI.
    maps : dict of str to ndarray
        With ``cfg.save_maps``: ``"thickness"`` and ``"separation"`` (float32 mm, 0 outside the
        phase in the VOI) over the slab's slices and the whole plane.
    """
    hists = {k: ThicknessHistogram(spacing[0]) for k in ("Tb.Th", "Tb.Sp")}
    names = {"Tb.Th": "thickness", "Tb.Sp": "separation"}
    maps: dict[str, np.ndarray] = {}
    if cfg.save_maps:
        maps = {n: np.zeros((src.shape[0], *plane), dtype=np.float32) for n in names.values()}
    ys, xs = crop

    def on_chunk(kind: str, c0: int, c1: int, values: np.ndarray, sel: np.ndarray) -> None:
        hists[kind].add(values[sel])
        if maps:
            maps[names[kind]][c0:c1, ys, xs] = np.where(sel, values, np.float32(0.0))

    def trabecular() -> dict[str, float]:
        return trabecular_morphometry_chunked(src, spacing=spacing,
                                              convention=cfg.thickness_convention,
                                              chunk_slices=chunk_slices, on_chunk=on_chunk)

    parts = _structure_parts(src, spacing, None)
    if not (isinstance(src, ArraySource) and concurrent_kernels_ok()):
        metrics = trabecular()
        step("structure")
        for _, part in parts:
            metrics.update(part())
    else:
        metrics = _measure_beside(trabecular, parts, step)
    return metrics, {k: h.result() for k, h in hists.items()}, maps


#: Structure measures that run on one core (marching cubes, Euler sums): with arrays in memory
#: they run in a second thread while the parallel kernels of the others run.
_BESIDE = ("connectivity", "smi", "pattern_factor")


def _measure_beside(trabecular: Callable[[], dict[str, float]],
                    parts: list[tuple[str, Callable[[], dict[str, float]]]],
                    step: Progress) -> dict[str, float]:
    """The trabecular measures and then the multi-core structure measures in this thread, the
    single-core ones (:data:`_BESIDE`) in a second thread meanwhile; the same values, keys in
    the same order, and the same first error as one after the other (every kernel is
    deterministic and only reads the arrays)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctmorph-beside") as pool:
        futures: dict[str, Future] = {name: pool.submit(part) for name, part in parts
                                      if name in _BESIDE}
        try:
            metrics = trabecular()
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise
        step("structure")
        here: dict[str, dict[str, float] | BaseException] = {}
        for name, part in parts:
            if name not in futures:
                try:
                    here[name] = part()
                except Exception as exc:  # raised below in the sequential order
                    here[name] = exc
        for name, _ in parts:
            got = futures[name].result() if name in futures else here[name]
            if isinstance(got, BaseException):
                raise got
            metrics.update(got)
    return metrics


def _structure_parts(src: ZSource, spacing: tuple[float, float, float],
                     chunk_slices: int | None) -> list[tuple[str, Callable[[], dict[str, float]]]]:
    """The structure measures in their column order, each a call returning its columns (as
    Python floats)."""
    def floats(d: dict) -> dict[str, float]:
        return {k: float(v) for k, v in d.items()}

    def smi() -> dict[str, float]:
        s = smi_chunked(src, spacing=spacing, chunk_slices=chunk_slices)
        return floats({"SMI": s["SMI"], "SMI+": s["SMI+"], "SMI-": s["SMI-"],
                       "SMI.concave_fraction": s["concave_fraction"]})

    return [
        ("connectivity", lambda: floats(connectivity_chunked(src, spacing=spacing,
                                                             chunk_slices=chunk_slices))),
        ("smi", smi),
        ("anisotropy", lambda: floats(anisotropy_chunked(src, spacing=spacing,
                                                         chunk_slices=chunk_slices).as_dict())),
        ("pattern_factor", lambda: {"Tb.Pf": float(pattern_factor_chunked(
            src, spacing=spacing, chunk_slices=chunk_slices))}),
    ]


def structure_metrics_chunked(src: ZSource, *, spacing: tuple[float, float, float],
                              chunk_slices: int | None = None) -> dict[str, float]:
    """:func:`structure_metrics` of a source read in z-blocks (bounded memory); same keys."""
    out: dict[str, float] = {}
    for _, part in _structure_parts(src, spacing, chunk_slices):
        out.update(part())
    return out
