"""Paper figures: one bar panel per parameter (mean ± SD, every animal a dot, significance marks).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so nothing is left in a global figure registry; rc settings apply only inside
:func:`figure_style`.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._atomic import atomic_path
from ..columns import COLUMN_BY_NAME
from .summary import pair_result

__all__ = [
    "MAIN_PARAMETERS",
    "figure_style",
    "group_colors",
    "stars",
    "significance_marks",
    "axis_label",
    "plot_parameter",
    "parameter_figure",
    "panel_figure",
    "save_figure",
    "safe_name",
]

#: Parameters of the combined paper figure, in panel order (BMD only when calibrated).
MAIN_PARAMETERS = ("BMD", "BV/TV", "Tb.Th", "Tb.N", "Tb.Sp")

#: Okabe-Ito colour-blind-safe colours for groups other than the control and the model.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
CONTROL_COLOR = "#FFFFFF"
MODEL_COLOR = "#9A9A9A"

_RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 7,
    "axes.linewidth": 0.8,
    "svg.fonttype": "none",  # text stays text: editable in Illustrator/Inkscape
    "svg.hashsalt": "ctmorph",  # stable element ids: same data, same SVG
    "savefig.dpi": 300,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Temporarily apply the report's rc settings (restored on exit)."""
    with matplotlib.rc_context(_RC):
        yield


def safe_name(parameter: str) -> str:
    """File-name form of a parameter: ``BV/TV`` -> ``BV_TV``."""
    out = "".join(c if c.isalnum() or c in ".-" else "_" for c in parameter).strip("._")
    return out or "parameter"


def _tex_safe(text: str) -> str:
    """Escape ``$`` so matplotlib does not read input labels as mathtext."""
    return text.replace("$", r"\$")


def group_colors(order: Sequence[str], control: str | None = None,
                 model: str | None = None) -> dict[str, str]:
    """One colour per group, the same in every panel: control white, model grey."""
    colors: dict[str, str] = {}
    rest = iter(PALETTE * (1 + len(order) // len(PALETTE)))
    for g in order:
        if g == control:
            colors[g] = CONTROL_COLOR
        elif g == model:
            colors[g] = MODEL_COLOR
        else:
            colors[g] = next(rest)
    return colors


def stars(p: float, symbol: str = "*") -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else ``''`` (NaN: ``''``)."""
    if not p < 0.05:
        return ""
    return symbol * (3 if p < 0.001 else 2 if p < 0.01 else 1)


def significance_marks(statistics: pd.DataFrame, parameter: str, order: Sequence[str],
                       control: str | None, model: str | None) -> dict[str, str]:
    """Marks above each bar from the recommended post-hoc family.

    Returns
    -------
    dict
        ``{group: text}``: stars vs the control on the first line, hashes vs the model on
        the second (e.g. ``"**\\n#"``); groups without a mark are left out.
    """
    out: dict[str, str] = {}
    for g in order:
        lines = []
        if control is not None and g != control:
            r = pair_result(statistics, parameter, control, g)
            lines.append(stars(float(r["p_adj"])) if r is not None else "")
        if model is not None and g not in (model, control):
            r = pair_result(statistics, parameter, model, g)
            lines.append(stars(float(r["p_adj"]), "#") if r is not None else "")
        lines = [ln for ln in lines if ln]
        if lines:
            out[g] = "\n".join(lines)
    return out


def axis_label(parameter: str) -> str:
    """``"BV/TV (%)"``: the name and the unit from the column registry."""
    col = COLUMN_BY_NAME.get(parameter)
    unit = col.unit if col is not None else ""
    return f"{parameter} ({unit})" if unit else parameter


def _offsets(n: int, width: float) -> np.ndarray:
    """Deterministic horizontal spread of n dots within ``width`` (no random jitter)."""
    if n <= 1:
        return np.zeros(n)
    half = min(width / 2, 0.045 * (n - 1))
    return np.linspace(-half, half, n)


def plot_parameter(ax: Axes, parameter: str, samples: Mapping[str, np.ndarray],
                   order: Sequence[str], colors: Mapping[str, str],
                   marks: Mapping[str, str] | None = None, note: str = "") -> None:
    """Draw one panel: bar = mean, error bar = SD, one dot per animal, marks above.

    Parameters
    ----------
    ax : Axes
        Target axes.
    parameter : str
        Parameter name (title and axis label with its registry unit).
    samples : mapping of str to (n,) arrays
        Finite values per group.
    order : sequence of str
        Groups left to right.
    colors : mapping of str to str
        Bar colour per group.
    marks : mapping of str to str, optional
        Text above a group's bar (from :func:`significance_marks`).
    note : str
        Small grey text in the panel (e.g. why the parameter was not tested).
    """
    marks = marks or {}
    x = np.arange(len(order), dtype=float)
    tops, bottoms = [], [0.0]
    for xi, g in zip(x, order, strict=True):
        v = np.asarray(samples.get(g, np.empty(0)), dtype=float)
        if v.size == 0:
            ax.text(xi, 0, "no data", ha="center", va="bottom", fontsize=6, color="0.4",
                    rotation=90)
            tops.append(math.nan)
            continue
        m = float(v.mean())
        sd = float(v.std(ddof=1)) if v.size >= 2 else 0.0
        ax.bar(xi, m, width=0.68, color=colors.get(g, "#cccccc"), edgecolor="black",
               linewidth=0.8, zorder=1)
        if v.size >= 2:
            ax.errorbar(xi, m, yerr=sd, fmt="none", ecolor="black", elinewidth=0.8,
                        capsize=3, capthick=0.8, zorder=2)
        ax.scatter(xi + _offsets(v.size, 0.4), v, s=11, c="black", edgecolors="white",
                   linewidths=0.4, zorder=3)
        tops.append(max(m + sd, float(v.max()), m))
        bottoms.append(min(m - sd, float(v.min())))
    finite = [t for t in tops if np.isfinite(t)]
    hi = max(finite + [0.0])
    lo = min(bottoms)
    span = (hi - lo) or (abs(hi) or 1.0)
    for xi, g, t in zip(x, order, tops, strict=True):
        if g in marks and np.isfinite(t):
            ax.text(xi, t + 0.03 * span, marks[g], ha="center", va="bottom", fontsize=9,
                    linespacing=0.95, fontweight="bold")
    ax.set_ylim(lo - 0.02 * span if lo < 0 else 0.0, hi + 0.22 * span)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xticks(x)
    labels = [_tex_safe(g) for g in order]
    long = max((len(g) for g in order), default=0) * len(order) > 24
    ax.set_xticklabels(labels, rotation=35 if long else 0, ha="right" if long else "center",
                       rotation_mode="anchor")
    ax.set_ylabel(_tex_safe(axis_label(parameter)))
    ax.set_title(_tex_safe(parameter), fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    if note:
        ax.text(0.5, 0.98, "\n".join(textwrap.wrap(_tex_safe(note), 32)),
                transform=ax.transAxes, ha="center", va="top", fontsize=5.5, color="0.35")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def parameter_figure(parameter: str, samples: Mapping[str, np.ndarray],
                     order: Sequence[str], colors: Mapping[str, str],
                     marks: Mapping[str, str] | None = None, note: str = "",
                     caption: str = "") -> Figure:
    """A single-panel figure of one parameter (see :func:`plot_parameter`)."""
    width = max(2.2, 0.55 * len(order) + 1.0)
    fig = _new_figure(width, 3.0 + (0.5 if caption else 0.0))
    ax = fig.add_subplot()
    plot_parameter(ax, parameter, samples, order, colors, marks, note)
    if caption:
        fig.get_layout_engine().set(h_pad=0.05)
        ax.set_xlabel("\n".join(textwrap.wrap(_tex_safe(caption), int(width * 17))),
                      fontsize=5.5, color="0.25", labelpad=6)
    return fig


def panel_figure(panels: Sequence[tuple[str, Mapping[str, np.ndarray], Mapping[str, str], str]],
                 order: Sequence[str], colors: Mapping[str, str],
                 caption: str = "") -> Figure:
    """The combined paper figure: panels A, B, ... in a grid of up to three columns.

    Parameters
    ----------
    panels : sequence of (parameter, samples, marks, note)
        One entry per panel, in order.
    order, colors : as in :func:`plot_parameter`.
    caption : str
        Key to the marks and the tests, printed under the panels.
    """
    n = len(panels)
    ncols = min(3, n) if n != 4 else 2
    nrows = math.ceil(n / ncols)
    width = ncols * max(2.3, 0.5 * len(order) + 1.1)
    fig = _new_figure(width, 2.9 * nrows + (0.45 if caption else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for k, (ax, (parameter, samples, marks, note)) in enumerate(zip(axes, panels,
                                                                    strict=False)):
        plot_parameter(ax, parameter, samples, order, colors, marks, note)
        ax.text(-0.3, 1.04, chr(ord("A") + k), transform=ax.transAxes, fontsize=11,
                fontweight="bold", va="bottom", ha="left")
    for ax in axes[n:]:
        ax.set_axis_off()
    if caption:
        fig.supxlabel("\n".join(textwrap.wrap(_tex_safe(caption), int(width * 15))),
                      fontsize=6.5, color="0.25")
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` (300 dpi) and ``stem.svg`` atomically; returns both paths.

    Metadata that changes between runs (creation date) is left out so the same data give
    the same files. Call inside :func:`figure_style` so the SVG settings apply.
    """
    written = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        path = stem.parent / f"{stem.name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, metadata=meta)
        written.append(path)
        fig.set_layout_engine("none")  # positions are settled: skip the layout pass next time
    return written
