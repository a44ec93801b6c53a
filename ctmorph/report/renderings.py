"""Figure 7A of a bone paper: each group's representative animal, as a longitudinal section
with the trabecular VOI outlined and a 3-D rendering of the VOI's bone; and the paper figure
that puts it above the bar charts (panel B).

The representative of a group is the animal whose value of one parameter (BV/TV by default,
``ctmorph report --representative``) is closest to the group's median; ties go to the scan
name first in alphabetical order. Everything is drawn from the pictures the analysis wrote
(``OUT/<scan>/qc/section_voi.png``, ``render_voi.png`` and their pixel sizes in
``figure.json``, see :mod:`ctmorph.qc.figure_pictures`), each placed with its true size in mm,
so all groups share one scale.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..columns import COLUMN_BY_NAME
from ..errors import ConfigError
from ..qc import FIGURE_JSON, SECTION_PICTURE
from .data import qc_pictures
from .figures import plot_parameter

__all__ = [
    "REPRESENTATIVE_DEFAULT",
    "RENDER_PICTURE",
    "Representative",
    "representatives",
    "legend_line",
    "draw_renderings",
    "renderings_figure",
    "paper_figure",
    "paper_legend",
]

logger = logging.getLogger(__name__)

REPRESENTATIVE_DEFAULT = "BV/TV"
RENDER_PICTURE = "render_voi.png"
#: Length of the scale bar drawn on the sections (mm).
SECTION_BAR_MM = 1.0


@dataclass(frozen=True)
class Representative:
    """A group's representative animal."""

    group: str
    scan: str
    parameter: str
    value: float
    median: float
    n: int


def representatives(df: pd.DataFrame, order: Sequence[str],
                    parameter: str = REPRESENTATIVE_DEFAULT) -> dict[str, Representative]:
    """The animal of each group whose ``parameter`` is closest to the group median.

    Parameters
    ----------
    df : DataFrame
        ``morphometry.csv`` as read by :func:`~ctmorph.report.data.load_results`.
    order : sequence of str
        Groups, in display order.
    parameter : str
        A numeric column of ``df``.

    Returns
    -------
    dict of str to Representative
        Groups without a finite value of ``parameter`` are left out.

    Raises
    ------
    ConfigError
        ``parameter`` is not a column of the table (naming the option).
    """
    if parameter not in df.columns:
        known = ", ".join(c for c in df.columns if c in COLUMN_BY_NAME and
                          pd.api.types.is_numeric_dtype(df[c]))
        raise ConfigError(f"--representative: no column {parameter!r} in morphometry.csv "
                          f"(numeric columns: {known})")
    ok = df[df["status"] == "ok"]
    out = {}
    for g in order:
        sub = ok[ok["group"] == g]
        values = pd.to_numeric(sub[parameter], errors="coerce").to_numpy(float)
        finite = np.isfinite(values)
        if not finite.any():
            continue
        scans = sub["scan"].to_numpy(str)[finite]
        v = values[finite]
        median = float(np.median(v))
        k = min(range(v.size), key=lambda i: (abs(v[i] - median), scans[i]))
        out[g] = Representative(g, str(scans[k]), parameter, float(v[k]), median, int(v.size))
    return out


def legend_line(r: Representative) -> str:
    """``"sham_02, BV/TV 20.4 % (group median 20.1 %)"``: the animal and its value."""
    unit = COLUMN_BY_NAME[r.parameter].unit if r.parameter in COLUMN_BY_NAME else ""
    u = f" {unit}" if unit else ""
    return f"{r.scan}, {r.parameter} {r.value:.3g}{u} (group median {r.median:.3g}{u}, n = {r.n})"


def _picture(out_dir: Path, scan: str, name: str) -> tuple[np.ndarray, tuple[float, float]] | None:
    """A scan's QC picture as an array and its pixel size ``(vertical, horizontal)`` in mm; a
    rendering is cropped to its bone (``content_box_px``) plus 4 % of its size each side."""
    from PIL import Image

    files = {p.name: p for p in qc_pictures(out_dir, scan)}
    path = files.get(name)
    if path is None:
        return None
    try:
        entry = json.loads((path.parent / FIGURE_JSON).read_text(encoding="utf-8"))[name]
        py, px = (float(v) for v in entry["pixel_mm"])
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGBA"))
        box = entry.get("content_box_px")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: left out of the renderings figure (%s)", path, exc)
        return None
    if not (py > 0 and px > 0):
        return None
    if box:
        r0, r1, c0, c1 = (int(v) for v in box)
        m = int(0.04 * max(r1 - r0, c1 - c0)) + 2
        arr = arr[max(0, r0 - m):r1 + m, max(0, c0 - m):c1 + m]
    return arr, (py, px)


def _show(ax, picture, size: tuple[float, float], bar_mm: float | None,
          bar_color: str = "white") -> None:
    """The picture with its true size in mm, centred in a frame of ``size`` (height, width)
    mm shared by the row; a scale bar of ``bar_mm`` at the lower left."""
    ax.set_axis_off()
    h, w = size
    ax.set_xlim(-w / 2, w / 2)
    ax.set_ylim(-h / 2, h / 2)
    ax.set_aspect("equal")
    if picture is None:
        ax.text(0, 0, "no picture", ha="center", va="center", fontsize=6, color="0.4")
        return
    arr, (py, px) = picture
    ph, pw = arr.shape[0] * py, arr.shape[1] * px
    ax.imshow(arr, extent=(-pw / 2, pw / 2, -ph / 2, ph / 2), interpolation="antialiased")
    if bar_mm:
        x0, y0 = -w / 2 + 0.04 * w, -h / 2 + 0.03 * h
        ax.plot([x0, x0 + bar_mm], [y0, y0], color=bar_color, lw=2.0, solid_capstyle="butt")
        ax.text(x0 + bar_mm / 2, y0 + 0.03 * h, f"{bar_mm:g} mm", color=bar_color,
                ha="center", va="bottom", fontsize=5.5)


def draw_renderings(fig_or_subfig, out_dir: Path, order: Sequence[str],
                    reps: Mapping[str, Representative]) -> None:
    """A column per group: the representative's section with the VOI outlined, then the 3-D
    rendering of its VOI; one scale per row; the animal and its value under each column."""
    rows = (SECTION_PICTURE, RENDER_PICTURE)
    pics = {(g, name): (_picture(out_dir, reps[g].scan, name) if g in reps else None)
            for g in order for name in rows}
    sizes = []
    for name in rows:
        found = [p for (g, n), p in pics.items() if n == name and p is not None]
        sizes.append((max((p[0].shape[0] * p[1][0] for p in found), default=1.0),
                      max((p[0].shape[1] * p[1][1] for p in found), default=1.0)))
    axes = fig_or_subfig.subplots(2, len(order), squeeze=False,
                                  gridspec_kw={"height_ratios": [s[0] / s[1] for s in sizes]})
    for j, g in enumerate(order):
        for i, name in enumerate(rows):
            _show(axes[i, j], pics[(g, name)], sizes[i], SECTION_BAR_MM,
                  "white" if name == SECTION_PICTURE else "black")
        axes[0, j].set_title(_safe(g), fontsize=8, fontweight="bold")
        text = legend_line(reps[g]) if g in reps else "no animal with a value"
        axes[1, j].text(0.5, -0.02, "\n".join(textwrap.wrap(_safe(text), 30)),
                        transform=axes[1, j].transAxes, ha="center", va="top", fontsize=5.5)


def paper_legend(order: Sequence[str], reps: Mapping[str, Representative], caption: str,
                 quote: Callable[[str], str] = str) -> str:
    """The legend of ``figure_paper`` for ``methods.md`` (``quote`` escapes input strings)."""
    who = "; ".join(f"{quote(g)}: {quote(legend_line(reps[g]))}" for g in order if g in reps)
    param = next(iter(reps.values())).parameter if reps else REPRESENTATIVE_DEFAULT
    return (
        "**Figure legend.** (A) Micro-CT images of the distal femoral metaphysis of each "
        f"group's representative animal, the one whose {param} is closest to its group median "
        f"({who}). Top: longitudinal section through the bone axis, distal end at the bottom, "
        "with the trabecular VOI outlined (orange); bottom: 3-D rendering of the bone in the "
        "trabecular VOI (oblique view, shaded surface with ambient occlusion; cortical bone "
        "outside the VOI faded). All groups share one scale, view and lighting; scale bars "
        f"in mm. (B) {caption}"
    )


def _safe(text: str) -> str:
    """Text for matplotlib without mathtext interpretation of ``$``."""
    return str(text).replace("$", r"\$")


def renderings_figure(out_dir: Path, order: Sequence[str],
                      reps: Mapping[str, Representative]) -> Figure:
    """``figure_renderings``: :func:`draw_renderings` alone, about 2.3 in per group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    width = max(3.0, 2.3 * len(order))
    fig = Figure(figsize=(width, 0.5 + width / max(len(order), 1) * 2.4), layout="constrained")
    FigureCanvasAgg(fig)
    draw_renderings(fig, out_dir, order, reps)
    return fig


def paper_figure(out_dir: Path, order: Sequence[str], reps: Mapping[str, Representative],
                 panels: Sequence[tuple[str, Mapping[str, np.ndarray], Mapping[str, str], str]],
                 colors: Mapping[str, str], caption: str = "") -> Figure:
    """``figure_paper``: panel A (:func:`draw_renderings`) above panel B, the bar charts of
    ``panels`` (as in :func:`~ctmorph.report.figures.panel_figure`) in one row; 7 in wide for
    a two-column journal page, panel letters A and B."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = max(len(order), 1)
    height_a = 7.0 / n * 2.1 + 0.4
    height_b = 2.4 + (0.45 if caption else 0.0)
    fig = Figure(figsize=(7.0, height_a + height_b), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[height_a, height_b])
    draw_renderings(top, out_dir, order, reps)
    top.text(0.0, 1.0, "A", fontsize=12, fontweight="bold", va="top", ha="left")
    axes = bottom.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (parameter, samples, marks, note) in zip(axes, panels, strict=False):
        plot_parameter(ax, parameter, samples, order, colors, marks, note)
        if len(panels) > 3:  # narrow panels: slanted group names never overlap
            for label in ax.get_xticklabels():
                label.set(rotation=35, ha="right", rotation_mode="anchor")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    bottom.text(0.0, 1.0, "B", fontsize=12, fontweight="bold", va="top", ha="left")
    if caption:
        bottom.supxlabel("\n".join(textwrap.wrap(_safe(caption), 150)), fontsize=6,
                         color="0.25")
    return fig
