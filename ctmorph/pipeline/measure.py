"""The trabecular and structure measures of a VOI, held in memory or in a slab store, and
the thickness histograms."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import AnalysisConfig
from ..morphometry import (
    anisotropy,
    connectivity,
    pattern_factor,
    smi,
    trabecular_analysis,
)
from ..morphometry.anisotropy import anisotropy_chunked
from ..morphometry.connectivity import connectivity_chunked
from ..morphometry.pattern import pattern_factor_chunked
from ..morphometry.smi import smi_chunked
from ..morphometry.trabecular import trabecular_chunked
from ..morphometry.zsource import ZSource
from .store import SlabStore

__all__ = [
    "structure_metrics",
    "structure_metrics_chunked",
    "ThicknessHistogram",
    "thickness_histogram",
    "measure_arrays",
    "measure_store",
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
    """
    out: dict[str, float] = {}
    out.update(connectivity(bone, voi, spacing=spacing))
    s = smi(bone, voi, spacing=spacing)
    out.update({"SMI": s["SMI"], "SMI+": s["SMI+"], "SMI-": s["SMI-"],
                "SMI.concave_fraction": s["concave_fraction"]})
    out.update(anisotropy(bone, voi, spacing=spacing).as_dict())
    out["Tb.Pf"] = pattern_factor(bone, voi, spacing=spacing)
    return {k: float(v) for k, v in out.items()}


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


def measure_arrays(bone_s: np.ndarray, voi: np.ndarray, region: np.ndarray,
                    spacing: tuple[float, float, float], cfg: AnalysisConfig,
                    crop: tuple[slice, slice], full_shape: tuple[int, int, int],
                    step: Progress,
                    ) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Trabecular and structure metrics, thickness histograms and (``save_maps``) maps of a
    VOI held in memory (``bone_s``, ``voi``, ``region`` on the in-plane ``crop``); ``step``
    is told when the structure metrics start."""
    tb = trabecular_analysis(bone_s, voi, spacing=spacing, marrow_space=region,
                             convention=cfg.thickness_convention)
    metrics = dict(tb.metrics)
    step("structure")
    metrics.update(structure_metrics(bone_s, voi, spacing=spacing))
    # the local-thickness maps the numbers came from, over the VOI's bounding box
    z0b, z1b, y0b, y1b, x0b, x1b = tb.box
    in_box = (slice(z0b, z1b), slice(y0b, y1b), slice(x0b, x1b))
    voi_b, bone_b = voi[in_box], bone_s[in_box]
    marrow_b = voi_b & region[in_box] & ~bone_b
    histograms = {
        "Tb.Th": thickness_histogram(tb.thickness[voi_b & bone_b], spacing[0]),
        "Tb.Sp": thickness_histogram(tb.separation[marrow_b], spacing[0]),
    }
    del marrow_b
    maps: dict[str, np.ndarray] = {}
    if cfg.save_maps:
        ys, xs = crop
        for name, m in (("thickness", tb.thickness), ("separation", tb.separation)):
            full = np.zeros(full_shape, dtype=np.float32)
            full[:, ys, xs][in_box] = np.where(voi_b, m, np.float32(0.0))
            maps[name] = full
    return metrics, histograms, maps


def measure_store(store: SlabStore, spacing: tuple[float, float, float], cfg: AnalysisConfig,
                   crop: tuple[slice, slice], plane: tuple[int, int], step: Progress,
                   ) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """:func:`measure_arrays` of a slab kept in a :class:`SlabStore`, block by block: the
    same numbers (counts identical, means to float64 rounding) in bounded memory."""
    hists = {k: ThicknessHistogram(spacing[0]) for k in ("Tb.Th", "Tb.Sp")}
    names = {"Tb.Th": "thickness", "Tb.Sp": "separation"}
    maps: dict[str, np.ndarray] = {}
    if cfg.save_maps:
        maps = {n: np.zeros((store.shape[0], *plane), dtype=np.float32) for n in names.values()}
    ys, xs = crop

    def on_chunk(kind: str, c0: int, c1: int, values: np.ndarray, sel: np.ndarray) -> None:
        hists[kind].add(values[sel])
        if maps:
            maps[names[kind]][c0:c1, ys, xs] = np.where(sel, values, np.float32(0.0))

    metrics = trabecular_chunked(store, spacing=spacing, convention=cfg.thickness_convention,
                                 on_chunk=on_chunk)
    step("structure")
    metrics.update(structure_metrics_chunked(store, spacing=spacing))
    return metrics, {k: h.result() for k, h in hists.items()}, maps


def structure_metrics_chunked(src: ZSource, *, spacing: tuple[float, float, float],
                              chunk_slices: int | None = None) -> dict[str, float]:
    """:func:`structure_metrics` of a source read in z-blocks (bounded memory); same keys."""
    out: dict[str, float] = {}
    out.update(connectivity_chunked(src, spacing=spacing, chunk_slices=chunk_slices))
    s = smi_chunked(src, spacing=spacing, chunk_slices=chunk_slices)
    out.update({"SMI": s["SMI"], "SMI+": s["SMI+"], "SMI-": s["SMI-"],
                "SMI.concave_fraction": s["concave_fraction"]})
    out.update(anisotropy_chunked(src, spacing=spacing, chunk_slices=chunk_slices).as_dict())
    out["Tb.Pf"] = pattern_factor_chunked(src, spacing=spacing, chunk_slices=chunk_slices)
    return {k: float(v) for k, v in out.items()}


