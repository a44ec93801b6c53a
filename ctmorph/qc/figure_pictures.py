"""The per-scan pictures a paper figure is built from, at their true scale.

:func:`write_figure_pictures` writes into ``OUT/<scan>/qc/``:

- ``section_voi.png``: the longitudinal section through the bone axis (grey, one pixel per
  voxel), distal end at the bottom, cropped to the bone from the distal end to a little beyond
  the VOI, with the trabecular VOI outlined in orange;
- ``render_voi.png`` and ``render_femur.png`` when the pipeline rendered them
  (:mod:`ctmorph.render`): the trabecular bone of the VOI, and the distal femur cut open
  along its axis;
- ``figure.json``: for each of those pictures its pixel size in mm (``[vertical,
  horizontal]``), how it was made and, for a rendering, the rows and columns that hold the
  bone (``content_box_px``, exclusive ends), so the report lays several scans out at one
  scale.

The report's Figure 7A (:mod:`ctmorph.report.renderings`) reads only these files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, atomic_write_text

__all__ = ["FIGURE_JSON", "SECTION_PICTURE", "RenderedView", "write_figure_pictures",
           "section_picture"]

logger = logging.getLogger(__name__)

FIGURE_JSON = "figure.json"
SECTION_PICTURE = "section_voi.png"
#: Colour of the VOI outline on the section (orange, readable on grey).
OUTLINE_RGB = (255, 140, 0)
#: Bone kept proximal of the VOI on the section, as a fraction of the VOI's length.
PROXIMAL_MARGIN = 0.15


@dataclass
class RenderedView:
    """A rendering of one scan for its QC folder: the image (a
    :class:`ctmorph.render.Rendering`), the named view and what it shows."""

    rendering: Any
    view: str
    what: str
    box: tuple[int, int, int, int] | None = None  # rows and columns holding the bone


def section_picture(grey: np.ndarray, bone: np.ndarray, voi: np.ndarray,
                    voi_range: tuple[int, int], distal_first: bool) -> np.ndarray:
    """The section as an RGB image: grey values stretched to their 0.5-99.5 % range, the VOI's
    outline (its voxels with a 4-neighbour outside it) in :data:`OUTLINE_RGB`; rows cropped to
    the distal end of the bone up to the VOI's proximal end plus :data:`PROXIMAL_MARGIN` of
    its length, columns to the bone ± 8 px; distal end at the bottom.

    Parameters
    ----------
    grey : (Z, X) ndarray
        Grey values of the section, one row per slice.
    bone, voi : (Z, X) ndarray of bool
        Segmentation and VOI on it.
    voi_range : (int, int)
        ``[z0, z1)`` slice indices of the VOI.
    distal_first : bool
        Slice 0 is the distal end.

    Returns
    -------
    (H, W, 3) ndarray of uint8
    """
    g = np.asarray(grey, dtype=np.float64)
    bone = np.asarray(bone, dtype=bool)
    voi = np.asarray(voi, dtype=bool)
    lo, hi = (np.percentile(g, (0.5, 99.5)) if g.size else (0.0, 1.0))
    g8 = np.clip((g - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(g8[..., None], 3, axis=2)
    inner = voi.copy()
    inner[1:] &= voi[:-1]
    inner[:-1] &= voi[1:]
    inner[:, 1:] &= voi[:, :-1]
    inner[:, :-1] &= voi[:, 1:]
    rgb[voi & ~inner] = OUTLINE_RGB
    nz = g.shape[0]
    z0, z1 = voi_range
    margin = int(round(PROXIMAL_MARGIN * max(z1 - z0, 1)))
    rows = np.flatnonzero(bone.any(axis=1))
    if distal_first:
        r0 = int(rows[0]) if rows.size else 0
        r1 = min(nz, z1 + margin)
    else:
        r0 = max(0, z0 - margin)
        r1 = int(rows[-1]) + 1 if rows.size else nz
    cols = np.flatnonzero(bone[r0:r1].any(axis=0) | voi[r0:r1].any(axis=0))
    c0, c1 = ((max(0, int(cols[0]) - 8), min(g.shape[1], int(cols[-1]) + 9)) if cols.size
              else (0, g.shape[1]))
    out = rgb[r0:max(r1, r0 + 1), c0:c1]
    return out[::-1] if distal_first else out  # distal end at the bottom


def _save_png(rgb: np.ndarray, path: Path) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")
    return path


def write_figure_pictures(qc: Any, folder: Path) -> list[Path]:
    """Write ``section_voi.png``, the renderings and ``figure.json`` of one scan (see the
    module notes); ``figure.json`` last. Returns the files written."""
    from ..render import save_png

    folder = Path(folder)
    info: dict[str, dict[str, Any]] = {}
    written = []
    slice_mm = float(qc.slice_mm or qc.mm_per_px or 0.0)
    if qc.longitudinal is not None and qc.longitudinal_voi is not None:
        rgb = section_picture(qc.longitudinal, qc.longitudinal_bone, qc.longitudinal_voi,
                              tuple(qc.voi_range), qc.distal_end != "last")
        written.append(_save_png(rgb, folder / SECTION_PICTURE))
        info[SECTION_PICTURE] = {"pixel_mm": [slice_mm, float(qc.mm_per_px or 0.0)],
                                 "what": "longitudinal section through the bone axis, "
                                         "trabecular VOI outlined, distal end at the bottom"}
    for name, rv in sorted(qc.renders.items()):
        file = f"render_{name}.png"
        save_png(rv.rendering, folder / file)
        written.append(folder / file)
        p = float(rv.rendering.pixel_mm)
        info[file] = {"pixel_mm": [p, p], "view": rv.view, "what": rv.what,
                      "content_box_px": None if rv.box is None else list(rv.box),
                      "scale_bar_mm": rv.rendering.scale_bar_mm}
    path = folder / FIGURE_JSON
    atomic_write_text(path, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return [*written, path]
