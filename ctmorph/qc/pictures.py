"""QC a person can trust: pictures of where the VOI went, and flags for implausible results.

Per scan, :func:`write_qc_pictures` writes into ``OUT/<scan>/qc/``:

- ``longitudinal.png``: the central longitudinal section with the growth-plate reference line
  (red), the trabecular VOI band and outline (blue), the cortical VOI band (green, when the
  cortical analysis ran), the axis tilt in the title, and the growth-plate profiles beside it;
- ``axial.png``: three panels, the proximal end (top), middle and distal end (bottom) of the
  VOI, each with the VOI outline (cyan), bone inside the VOI (orange) and bone outside it
  (purple), section numbers in the panel titles;
- ``histogram.png``: the grey histogram (no-data excluded) with the threshold;
- ``tile.png``: a small unlabelled longitudinal picture for the run's contact sheet;
- ``coronal.png``, ``sagittal.png`` and ``review.json`` (:func:`write_review_views`): the two
  longitudinal sections through the bone axis at full resolution, one image row per section,
  and which section each row is, for ``ctmorph review`` (written for failed scans too, as soon
  as the sections exist, so a person can place a reference the finder could not).

Per run, :func:`write_qc_overview` writes ``OUT/qc_overview.png``, one tile per scan with its
name, group, reference slice, BV/TV and any QC flags in red, so 30 femurs can be checked in a
minute.

matplotlib is imported lazily and only through :class:`matplotlib.figure.Figure` with the Agg
canvas (no pyplot, no global figure registry).
"""


from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, atomic_write_text
from .flags import finite_number, qc_flags

__all__ = [
    "AxialQc",
    "QcData",
    "ReviewViews",
    "write_review_views",
    "axial_overlay",
    "write_qc_pictures",
    "write_qc_overview",
]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------
# data model (filled by the pipeline; small arrays only, never a full volume)


@dataclass
class AxialQc:
    """One axial QC slice of the VOI.

    Attributes
    ----------
    label : str
        ``'top'`` (proximal end of the VOI), ``'middle'`` or ``'bottom'`` (distal end).
    index : int
        Working-frame slice index.
    section : int
        Section number, as the slice files are numbered.
    grey : (Y, X) ndarray
        Grey values of the slice.
    bone : (Y, X) ndarray of bool
        Segmentation.
    voi : (Y, X) ndarray of bool
        The VOI on this slice.
    """

    label: str
    index: int
    section: int
    grey: np.ndarray
    bone: np.ndarray
    voi: np.ndarray


@dataclass
class QcData:
    """Small arrays for the QC pictures of one scan.

    Attributes
    ----------
    longitudinal : (Z, X) ndarray
        Grey values of the central row of every slice.
    longitudinal_bone, longitudinal_voi : (Z, X) ndarray of bool
        Segmentation and VOI on that section (VOI False outside the loaded slab).
    axials : list of AxialQc
        Top, middle and bottom of the VOI.
    histogram : (G,) ndarray
        Voxel counts per grey value (no-data excluded).
    threshold : float
        Global threshold, grey.
    ref_index : int or None
        Growth-plate reference slice index (auto ROI only).
    voi_range : (int, int)
        ``[z0, z1)`` slice indices of the VOI.
    sections : (Z,) ndarray of int
        Section number of every slice index.
    cortical_range : (int, int) or None
        ``[c0, c1)`` slice indices of the cortical VOI when the cortical analysis ran.
    axis_tilt_deg : float or None
        Tilt of the bone axis from the stack axis (degrees), when measured.
    profiles : dict of str to (Z,) ndarray
        Per-slice profiles of the growth-plate search (e.g. ``cartilage_fraction``).
    sagittal, distal_end, mm_per_px
        The second longitudinal section (for the review), which end is distal, and the
        in-plane pixel size (mm).
    slice_mm : float or None
        Slice spacing (mm): the pixel height of the longitudinal sections.
    renders : dict of str to RenderedView
        3-D renderings made while the scan was in memory (``"voi"``, ``"femur"``), written as
        ``render_<name>.png`` (:mod:`ctmorph.qc.figure_pictures`).
    """

    longitudinal: np.ndarray
    longitudinal_bone: np.ndarray
    longitudinal_voi: np.ndarray
    axials: list[AxialQc]
    histogram: np.ndarray
    threshold: float
    ref_index: int | None
    voi_range: tuple[int, int]
    sections: np.ndarray
    cortical_range: tuple[int, int] | None = None
    axis_tilt_deg: float | None = None
    profiles: dict[str, np.ndarray] = field(default_factory=dict)
    sagittal: np.ndarray | None = None
    distal_end: str | None = None
    mm_per_px: float | None = None
    slice_mm: float | None = None
    renders: dict[str, Any] = field(default_factory=dict)

    def review_views(self) -> ReviewViews | None:
        """The review's two sections of this scan (None without the sagittal one)."""
        if self.sagittal is None:
            return None
        return ReviewViews(self.longitudinal, self.sagittal, np.asarray(self.sections),
                           float(self.mm_per_px or 0.0), self.distal_end)


@dataclass
class ReviewViews:
    """The two longitudinal sections of a scan through its bone axis, for ``ctmorph review``.

    Attributes
    ----------
    coronal : (Z, X) ndarray
        Grey values of the section at constant y (image row), one row per slice.
    sagittal : (Z, Y) ndarray
        Grey values of the section at constant x (image column).
    sections : (Z,) ndarray of int
        Section number of each slice (image row), as the slice files are numbered (for a scan
        resampled along a tilted axis, where the axis crosses each slice).
    mm_per_px : float
        In-plane pixel size (mm).
    distal_end : {'first', 'last'} or None
        Which end of the stack is distal, when known.
    """

    coronal: np.ndarray
    sagittal: np.ndarray
    sections: np.ndarray
    mm_per_px: float
    distal_end: str | None = None


def _grey8(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """8-bit versions of grey images on one window: the 0.5-99.8 percentiles of their voxels
    with data (non-zero), so bone and soft tissue both show."""
    data = np.concatenate([np.asarray(im).ravel() for im in images])
    data = data[data != 0]
    lo, hi = (np.percentile(data, [0.5, 99.8]) if data.size else (0.0, 1.0))
    hi = max(hi, lo + 1.0)
    return [np.clip((np.asarray(im, dtype=np.float64) - lo) * (255.0 / (hi - lo)), 0, 255)
            .round().astype(np.uint8) for im in images]


def write_review_views(views: ReviewViews, folder: Path) -> list[Path]:
    """``coronal.png``, ``sagittal.png`` (one pixel per voxel, one row per section) and
    ``review.json`` (which section each image row is) into ``folder``, atomically.

    Returns
    -------
    list of Path
        The three files, ``review.json`` last.
    """
    import json

    from PIL import Image

    folder = Path(folder)
    out = []
    for name, im in zip(("coronal", "sagittal"), _grey8([views.coronal, views.sagittal]),
                        strict=True):
        path = folder / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(im).save(tmp, format="PNG")
        out.append(path)
    rows = [int(v) for v in np.asarray(views.sections)]
    info = {
        "views": [{"name": n, "image": f"{n}.png", "row_sections": rows,
                   "mm_per_px": views.mm_per_px} for n in ("coronal", "sagittal")],
        "distal_end": views.distal_end,
    }
    path = folder / "review.json"
    atomic_write_text(path, json.dumps(info))
    return [*out, path]


def _as_qcdata(qc: Any) -> QcData:
    """Accept the pipeline's older QcData (one ``axial`` slice) during the switch-over."""
    if isinstance(qc, QcData) or hasattr(qc, "axials"):
        return qc
    idx = int(qc.axial_index)
    return QcData(
        longitudinal=qc.longitudinal,
        longitudinal_bone=qc.longitudinal_bone,
        longitudinal_voi=qc.longitudinal_voi,
        axials=[AxialQc("middle", idx, int(np.asarray(qc.sections)[idx]), qc.axial,
                        qc.axial_bone, qc.axial_voi)],
        histogram=qc.histogram,
        threshold=qc.threshold,
        ref_index=qc.ref_index,
        voi_range=tuple(qc.voi_range),
        sections=qc.sections,
        profiles=dict(getattr(qc, "profiles", {}) or {}),
    )




_RED = "#ff3030"  # growth-plate reference
_VOI = "#1e90ff"  # trabecular VOI band (longitudinal)
_OUTLINE = "#00e5ff"  # VOI outline (cyan)
_CORTICAL = "#32cd32"  # cortical VOI band
#: RGBA of bone inside the VOI (orange) and outside it (purple) in the axial overlay.
_BONE_IN = (1.0, 0.55, 0.0, 0.55)
_BONE_OUT = (0.65, 0.25, 1.0, 0.45)


def axial_overlay(bone: np.ndarray, voi: np.ndarray) -> np.ndarray:
    """RGBA overlay of a segmented slice: bone in the VOI orange, bone outside it purple.

    Parameters
    ----------
    bone, voi : (Y, X) ndarray of bool
        Segmentation and VOI of one slice.

    Returns
    -------
    (Y, X, 4) ndarray of float
        Colours in [0, 1]; fully transparent where there is no bone.
    """
    bone = np.asarray(bone, dtype=bool)
    voi = np.asarray(voi, dtype=bool)
    if bone.shape != voi.shape or bone.ndim != 2:
        raise ValueError(f"bone {bone.shape} and voi {voi.shape} must be the same 2-D shape")
    out = np.zeros(bone.shape + (4,), dtype=float)
    out[bone & voi] = _BONE_IN
    out[bone & ~voi] = _BONE_OUT
    return out


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path, dpi: int = 110) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")


def _section(qc: QcData, index: int) -> int:
    s = np.asarray(qc.sections)
    return int(s[min(max(int(index), 0), s.size - 1)])


def _has_mask(mask: np.ndarray) -> bool:
    m = np.asarray(mask, dtype=bool)
    return bool(m.any()) and not bool(m.all())


def _draw_longitudinal(ax, qc: QcData, *, labels: bool) -> list:
    """Grey section, VOI outline and bands, cortical band, reference line; legend handles."""
    from matplotlib.patches import Patch

    img = np.asarray(qc.longitudinal)
    ax.imshow(img, cmap="gray", aspect="equal", interpolation="antialiased")
    handles = []
    z0, z1 = qc.voi_range
    ax.axhspan(z0 - 0.5, z1 - 0.5, color=_VOI, alpha=0.18, lw=0)
    for z in (z0 - 0.5, z1 - 0.5):
        ax.axhline(z, color=_VOI, lw=0.8)
    if _has_mask(qc.longitudinal_voi):
        ax.contour(np.asarray(qc.longitudinal_voi, dtype=float), levels=[0.5],
                   colors=[_OUTLINE], linewidths=0.7)
    handles.append(Patch(color=_VOI, alpha=0.5,
                         label=f"trabecular VOI, sections {_section(qc, z0)}-"
                               f"{_section(qc, z1 - 1)}"))
    if qc.cortical_range is not None:
        c0, c1 = qc.cortical_range
        ax.axhspan(c0 - 0.5, c1 - 0.5, color=_CORTICAL, alpha=0.25, lw=0)
        for z in (c0 - 0.5, c1 - 0.5):
            ax.axhline(z, color=_CORTICAL, lw=0.8)
        if labels:
            ax.text(img.shape[1] - 2, (c0 + c1) / 2, "cortical", color=_CORTICAL, fontsize=7,
                    ha="right", va="center", fontweight="bold")
        handles.append(Patch(color=_CORTICAL, alpha=0.6,
                             label=f"cortical VOI, sections {_section(qc, c0)}-"
                                   f"{_section(qc, c1 - 1)}"))
    if labels:
        ax.text(img.shape[1] - 2, (z0 + z1) / 2, "VOI", color=_VOI, fontsize=7, ha="right",
                va="center", fontweight="bold")
    if qc.ref_index is not None:
        ax.axhline(qc.ref_index, color=_RED, lw=1.2)
        handles.append(Patch(color=_RED, label=f"growth-plate reference, section "
                                                f"{_section(qc, qc.ref_index)}"))
    return handles


def _plot_profiles(ax, qc: QcData, nz: int) -> bool:
    """Growth-plate profiles against slice index, sharing the section's z axis."""
    shown = False
    for key, colour, name in (("cartilage_fraction", "#d62728", "cartilage fraction"),
                              ("interior_bone_fraction", "#1f77b4", "bone fraction")):
        p = qc.profiles.get(key)
        if p is None or np.asarray(p).shape != (nz,):
            continue
        ax.plot(np.asarray(p, dtype=float), np.arange(nz), color=colour, lw=0.8, label=name)
        shown = True
    if shown:
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction", fontsize=7)
        ax.tick_params(labelsize=6, labelleft=False)
        ax.legend(fontsize=6, loc="lower right", frameon=False)
        if qc.ref_index is not None:
            ax.axhline(qc.ref_index, color=_RED, lw=1.0)
        z0, z1 = qc.voi_range
        ax.axhspan(z0 - 0.5, z1 - 0.5, color=_VOI, alpha=0.18, lw=0)
    return shown


def _section_ticks(ax, qc: QcData, nz: int) -> None:
    ticks = np.unique(np.linspace(0, nz - 1, 6).round().astype(int))
    ax.set_yticks(ticks)
    ax.set_yticklabels([str(_section(qc, t)) for t in ticks], fontsize=6)
    ax.set_ylabel("section", fontsize=7)
    ax.set_xticks([])


def _write_longitudinal(qc: QcData, folder: Path, title: str) -> Path:
    nz, nx = np.asarray(qc.longitudinal).shape
    has_prof = any(np.asarray(qc.profiles.get(k, ())).shape == (nz,)
                   for k in ("cartilage_fraction", "interior_bone_fraction"))
    h = 7.0
    w_img = min(max(h * nx / max(nz, 1), 1.5), 6.0)
    ncols = 2 if has_prof else 1
    fig = _new_figure((w_img + (1.6 if has_prof else 0.0) + 0.8, h + 1.0))
    gs = fig.add_gridspec(1, ncols, width_ratios=[w_img, 1.6][:ncols], wspace=0.05)
    ax = fig.add_subplot(gs[0, 0])
    handles = _draw_longitudinal(ax, qc, labels=True)
    _section_ticks(ax, qc, nz)
    if has_prof:
        axp = fig.add_subplot(gs[0, 1], sharey=ax)
        _plot_profiles(axp, qc, nz)
        axp.set_title("growth-plate profiles", fontsize=7)
    tilt = ("" if qc.axis_tilt_deg is None
            else f", axis tilt {qc.axis_tilt_deg:.1f}°")
    ax.set_title(f"{title}: longitudinal section{tilt}", fontsize=8)
    ax.legend(handles=handles, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.01),
              frameon=False)
    p = folder / "longitudinal.png"
    _save(fig, p)
    return p


def _write_tile(qc: QcData, folder: Path) -> Path:
    """Small unlabelled longitudinal picture for the run's contact sheet."""
    nz, nx = np.asarray(qc.longitudinal).shape
    h = 3.0
    w = min(max(h * nx / max(nz, 1), 0.8), 3.0)
    fig = _new_figure((w, h))
    ax = fig.add_axes((0, 0, 1, 1))
    _draw_longitudinal(ax, qc, labels=False)
    ax.set_axis_off()
    p = folder / "tile.png"
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return p


_AXIAL_TITLES = {"top": "top (proximal end)", "middle": "middle", "bottom": "bottom (distal end)"}


def _write_axial(qc: QcData, folder: Path, title: str) -> Path:
    n = max(len(qc.axials), 1)
    fig = _new_figure((3.3 * n, 3.9))
    for i, a in enumerate(qc.axials):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(np.asarray(a.grey), cmap="gray", interpolation="nearest")
        ax.imshow(axial_overlay(a.bone, a.voi), interpolation="nearest")
        if _has_mask(a.voi):
            ax.contour(np.asarray(a.voi, dtype=float), levels=[0.5], colors=[_OUTLINE],
                       linewidths=0.8)
        ax.set_title(f"{_AXIAL_TITLES.get(a.label, a.label)}: section {a.section}",
                     fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{title}: VOI slices. cyan: VOI outline, orange: bone in VOI, "
                 "purple: bone outside VOI", fontsize=8)
    p = folder / "axial.png"
    _save(fig, p)
    return p


def _write_histogram(qc: QcData, folder: Path, title: str) -> Path:
    fig = _new_figure((5, 3))
    ax = fig.add_subplot(1, 1, 1)
    h = np.asarray(qc.histogram, dtype=float)
    g = np.arange(h.size, dtype=float)
    if h.size > 1024:  # 16-bit scans: sum into at most 1024 display bins (grey axis kept)
        w = -(-h.size // 1024)
        pad = (-h.size) % w
        h = np.concatenate([h, np.zeros(pad)]).reshape(-1, w).sum(axis=1)
        g = np.arange(h.size) * w + (w - 1) / 2.0
    ax.fill_between(g, h, step="mid", color="0.4")
    if np.any(h > 0):
        ax.set_yscale("log")
        nz = g[np.nonzero(h)[0]]
        pad = 0.02 * (nz[-1] - nz[0] + 1)
        ax.set_xlim(max(min(nz[0], qc.threshold) - pad, 0), max(nz[-1], qc.threshold) + pad)
    ax.axvline(qc.threshold, color=_RED, lw=1.0, label=f"threshold {qc.threshold:g}")
    ax.set_xlabel("grey value (smoothed)", fontsize=8)
    ax.set_ylabel("voxels", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: grey histogram (no-data excluded)", fontsize=8)
    p = folder / "histogram.png"
    _save(fig, p)
    return p


def write_qc_pictures(qc: QcData, folder: Path, title: str) -> list[Path]:
    """Write the QC pictures of one scan into ``folder`` (``OUT/<scan>/qc/``).

    Parameters
    ----------
    qc : QcData
        Arrays from the pipeline (the older single-``axial`` form is accepted too).
    folder : Path
        Output folder, created if needed.
    title : str
        Scan name, shown in every picture.

    Returns
    -------
    list of Path
        ``longitudinal.png``, ``axial.png``, ``histogram.png``, ``tile.png``, with the
        sagittal section the review's views (:func:`write_review_views`), and the figure's
        pictures (:func:`~ctmorph.qc.figure_pictures.write_figure_pictures`:
        ``section_voi.png``, the renderings, ``figure.json``), written atomically.
    """
    qc = _as_qcdata(qc)
    folder = Path(folder)  # created by the atomic writes
    written = [
        _write_longitudinal(qc, folder, title),
        _write_axial(qc, folder, title),
        _write_histogram(qc, folder, title),
        _write_tile(qc, folder),
    ]
    from .figure_pictures import write_figure_pictures

    views = qc.review_views()
    written += write_review_views(views, folder) if views is not None else []
    return written + write_figure_pictures(qc, folder)


def _tile_image(out_dir: Path, scan: str) -> np.ndarray | None:
    from PIL import Image

    qc_dir = Path(out_dir) / scan / "qc"
    for name in ("tile.png", "longitudinal.png"):  # results of older versions have no tile
        path = qc_dir / name
        if path.is_file():
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    im.thumbnail((360, 360))
                    return np.asarray(im)
            except OSError as exc:
                logger.warning("%s: cannot read %s: %s", scan, path, exc)
    return None


def _row_flags(r: Mapping[str, Any]) -> list[str]:
    if "qc_flags" in r:
        s = r.get("qc_flags")
        return [f for f in str(s).split("; ") if f] if isinstance(s, str) else []
    return qc_flags(r)


def write_qc_overview(out_dir: Path, rows: Sequence[Mapping[str, Any]], *,
                      columns: int = 6) -> Path | None:
    """One contact sheet of every scan: ``OUT/qc_overview.png``.

    Parameters
    ----------
    out_dir : Path
        The run's output folder holding ``<scan>/qc/``.
    rows : sequence of mapping
        Rows of ``morphometry.csv`` in display order.
    columns : int
        Tiles per row of the sheet.

    Returns
    -------
    Path or None
        The sheet, or None when there are no rows.

    Notes
    -----
    Each tile shows the longitudinal section with the reference (red) and the VOI (blue),
    the scan name, group, reference section and BV/TV; QC flags (the row's ``qc_flags``, or
    :func:`qc_flags` when the row has none) are printed in red and the tile is framed in red.
    Failed scans get a tile with the reason.
    """
    from matplotlib.patches import Rectangle

    if not rows:
        return None
    out_dir = Path(out_dir)
    ncol = max(1, min(int(columns), len(rows)))
    nrow = -(-len(rows) // ncol)
    height = 4.3 * nrow + 0.4
    fig = _new_figure((2.4 * ncol, height))
    gs = fig.add_gridspec(nrow, ncol, hspace=0.55, wspace=0.08, left=0.01, right=0.99,
                          top=1.0 - 0.75 / height, bottom=0.6 / height)
    for i, r in enumerate(rows):
        ax = fig.add_subplot(gs[i // ncol, i % ncol])
        ax.set_axis_off()
        scan = str(r.get("scan", "?"))
        label = f"{scan} ({r.get('group') or '-'})"
        ok = str(r.get("status", "")) == "ok"
        img = _tile_image(out_dir, scan) if ok else None
        if not ok:
            reason = textwrap.fill(str(r.get("error") or "")[:200], 34)
            ax.text(0.5, 0.5, "FAILED\n" + reason, ha="center", va="center", fontsize=6,
                    color="#b00000", transform=ax.transAxes)
            ax.set_title(label, fontsize=7, color="#b00000")
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,
                                   ec="#b00000", lw=1.5, clip_on=False))
            continue
        parts = []
        ref = finite_number(r.get("ref_slice"))
        if ref is not None:
            parts.append(f"ref {int(ref)}")
        bvtv = finite_number(r.get("BV/TV"))
        if bvtv is not None:
            parts.append(f"BV/TV {bvtv:.1f} %")
        ax.set_title(f"{label}\n{', '.join(parts)}", fontsize=7)
        if img is not None:
            ax.imshow(img)
        else:
            ax.text(0.5, 0.5, "no QC picture", ha="center", va="center", fontsize=7,
                    color="0.4", transform=ax.transAxes)
        flags = _row_flags(r)
        if flags:
            text = "\n".join(textwrap.fill(f, 40) for f in flags[:4])
            if len(flags) > 4:
                text += f"\n(+{len(flags) - 4} more)"
            ax.text(0.5, -0.02, text, ha="center", va="top", fontsize=5.5, color="#d00000",
                    transform=ax.transAxes)
            ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False,
                                   ec="#d00000", lw=1.5, clip_on=False))
    n_flagged = sum(1 for r in rows if str(r.get("status", "")) == "ok" and _row_flags(r))
    n_failed = sum(1 for r in rows if str(r.get("status", "")) != "ok")
    fig.suptitle(
        f"ctmorph QC overview: {len(rows)} scans, {n_failed} failed, {n_flagged} flagged. "
        "red line: growth-plate reference, blue: VOI, green: cortical VOI",
        fontsize=9, y=1.0 - 0.1 / height, va="top",
    )
    p = out_dir / "qc_overview.png"
    _save(fig, p, dpi=100)
    return p
