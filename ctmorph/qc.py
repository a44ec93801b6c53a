"""QC pictures a person can glance at: where the VOI went and where the threshold sits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .pipeline import QcData

__all__ = ["write_qc_pictures", "write_qc_overview"]

logger = logging.getLogger(__name__)


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")


def write_qc_pictures(qc: QcData, folder: Path, title: str) -> list[Path]:
    """Write ``longitudinal.png``, ``axial.png`` and ``histogram.png`` into ``folder``.

    Returns the paths written.
    """
    plt = _figure()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    z0, z1 = qc.voi_range

    fig, ax = plt.subplots(figsize=(4.5, 7))
    ax.imshow(qc.longitudinal, cmap="gray", aspect="equal", interpolation="nearest")
    ax.contour(qc.longitudinal_voi, levels=[0.5], colors=["#00c8ff"], linewidths=0.8)
    for z in (z0, z1 - 1):
        ax.axhline(z, color="#00c8ff", lw=0.6, ls=":")
    if qc.ref_index is not None:
        ax.axhline(qc.ref_index, color="#ff3030", lw=1.0)
        ax.text(2, qc.ref_index - 3, f"ref {int(qc.sections[qc.ref_index])}", color="#ff3030",
                fontsize=7)
    ax.set_title(f"{title}: longitudinal section\nred: growth-plate reference, blue: VOI",
                 fontsize=8)
    ax.set_xticks([])
    ax.set_ylabel("slice index")
    p = folder / "longitudinal.png"
    _save(fig, p)
    plt.close(fig)
    written.append(p)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(qc.axial, cmap="gray", interpolation="nearest")
    overlay = np.zeros(qc.axial.shape + (4,), dtype=float)
    overlay[qc.axial_bone & qc.axial_voi] = (1.0, 0.55, 0.0, 0.45)
    ax.imshow(overlay, interpolation="nearest")
    ax.contour(qc.axial_voi, levels=[0.5], colors=["#00c8ff"], linewidths=0.8)
    ax.set_title(
        f"{title}: section {int(qc.sections[qc.axial_index])} (VOI middle)\n"
        "blue: VOI outline, orange: bone in VOI",
        fontsize=8,
    )
    ax.set_axis_off()
    p = folder / "axial.png"
    _save(fig, p)
    plt.close(fig)
    written.append(p)

    fig, ax = plt.subplots(figsize=(5, 3))
    h = qc.histogram.astype(float)
    g = np.arange(h.size)
    ax.fill_between(g, h, step="mid", color="0.4")
    ax.set_yscale("log")
    ax.axvline(qc.threshold, color="#ff3030", lw=1.0, label=f"threshold {qc.threshold:g}")
    ax.set_xlabel("grey value")
    ax.set_ylabel("voxels")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: grey histogram (no-data excluded)", fontsize=8)
    p = folder / "histogram.png"
    _save(fig, p)
    plt.close(fig)
    written.append(p)
    return written


def write_qc_overview(out_dir: Path, rows: list[dict], *, columns: int = 6) -> Path | None:
    """One contact sheet of every scan's longitudinal QC section: ``OUT/qc_overview.png``.

    Each tile shows the scan name, group, reference slice and BV/TV; failed scans get a tile
    with the reason, so a person can check a whole study in a minute. Returns the path, or
    None when there is nothing to show.
    """
    from PIL import Image

    plt = _figure()
    tiles = []
    for r in rows:
        img_path = Path(out_dir) / r["scan"] / "qc" / "longitudinal.png"
        img = None
        if r.get("status") == "ok" and img_path.is_file():
            with Image.open(img_path) as im:
                img = np.asarray(im.convert("RGB"))
        tiles.append((r, img))
    if not tiles:
        return None
    ncol = min(columns, len(tiles))
    nrow = -(-len(tiles) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 4.2 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (r, img) in zip(axes.ravel(), tiles, strict=False):
        label = f"{r['scan']} ({r.get('group') or '-'})"
        if img is None:
            ax.text(0.5, 0.5, "FAILED\n" + str(r.get("error", ""))[:160], ha="center",
                    va="center", wrap=True, fontsize=6, color="#b00000",
                    transform=ax.transAxes)
        else:
            ax.imshow(img)
            bvtv = r.get("BV/TV")
            extra = f"BV/TV {bvtv:.1f} %" if isinstance(bvtv, float) else ""
            ref = r.get("ref_slice")
            extra = (f"ref {int(ref)}, " if ref is not None and ref == ref else "") + extra
            ax.set_title(f"{label}\n{extra}", fontsize=7)
            continue
        ax.set_title(label, fontsize=7)
    fig.suptitle("ctmorph QC overview: growth-plate reference (red) and VOI (blue) per scan",
                 fontsize=9)
    p = Path(out_dir) / "qc_overview.png"
    _save(fig, p)
    plt.close(fig)
    return p
