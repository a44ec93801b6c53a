"""``ctmorph render``: a rendering of one scan folder or one analysed scan, with the view,
size and content a paper's other figures need (a PNG, or a turntable GIF)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ..config import AnalysisConfig
from ..errors import ConfigError, SegmentationError
from ..render import save_png, turntable
from .render import femur_masks, render_masks, voi_masks
from .scan import voi_slab

__all__ = ["RENDER_SHOWS", "parse_view", "render_scan"]

logger = logging.getLogger(__name__)

#: What ``ctmorph render --show`` can draw.
RENDER_SHOWS = ("voi", "femur")


def parse_view(text: str | None) -> str | tuple[float, float] | None:
    """A named view, ``"AZIMUTH,ELEVATION"`` in degrees as a tuple, or None."""
    if text is None or "," not in text:
        return text
    try:
        az, el = (float(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"--view: {text!r} is neither a view name nor AZIMUTH,ELEVATION "
                          "in degrees") from None
    return az, el


def _analysed(folder: Path) -> tuple[Path, AnalysisConfig, float]:
    """The source scan, settings and grey threshold recorded in ``folder/morphometry.json``."""
    path = folder / "morphometry.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        source = Path(info["scan"]["path"])
        grey = float(info["threshold"]["grey"])
        known = {f.name for f in dataclasses.fields(AnalysisConfig)}
        settings = {k: v for k, v in info["config"].items() if k in known}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable analysed scan ({exc})") from None
    if not source.is_dir():
        raise ConfigError(f"{path}: its scan folder {source} is gone; render the scan folder "
                          "itself with --threshold")
    # the grey threshold the analysis used stands for the study's (no calibration needed)
    settings.update(calibration=None, threshold_density=None, threshold_attenuation=None)
    return source, AnalysisConfig(**settings), grey


def render_scan(target: str | Path, out: str | Path, *, show: str = "voi",
                view: str | tuple[float, float] | None = None, size_px: int = 1200,
                frames: int = 36, config: AnalysisConfig | None = None,
                threshold: float | None = None) -> Path:
    """Render one scan: its VOI's trabecular bone or its distal femur cut open.

    Parameters
    ----------
    target : str or Path
        A scan folder (segmented with ``config`` and ``threshold``), or an analysed scan
        ``OUT/<scan>`` (its ``morphometry.json`` gives the scan, settings and threshold).
    out : str or Path
        ``.png`` (one view) or ``.gif`` (a turntable about the long axis).
    show : {"voi", "femur"}
        What to draw (:mod:`ctmorph.pipeline.render`).
    view : str or (float, float), optional
        A view of :data:`ctmorph.render.VIEWS` or ``(azimuth, elevation)`` in degrees; default
        oblique for the VOI, anterior for the femur. Ignored for a GIF.
    size_px : int
        Image width and height in pixels.
    frames : int
        Frames of a turntable GIF.

    Returns
    -------
    Path
        ``out``, written atomically.

    Raises
    ------
    ConfigError
        Bad ``out`` suffix or ``show``, an unreadable analysed scan.
    SegmentationError
        Nothing to draw (no bone in the VOI; the femur view needs ``roi="auto"``).
    """
    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise ConfigError(f"{out}: the output must end in .png or .gif")
    if show not in RENDER_SHOWS:
        raise ConfigError(f"--show must be one of {', '.join(RENDER_SHOWS)}, got {show!r}")
    target = Path(target)
    if (target / "morphometry.json").is_file():
        source, cfg, threshold = _analysed(target)
    else:
        source, cfg = target, config or AnalysisConfig()
    slab = voi_slab(source, cfg, threshold=threshold)
    masks = voi_masks(slab) if show == "voi" else femur_masks(slab)
    if masks is None:
        raise SegmentationError(f"{slab.name}: nothing to render for --show {show}"
                                + (" (the femur view needs --roi auto)" if show == "femur"
                                   else " (no bone in the VOI)"))
    if out.suffix.lower() == ".gif":
        return turntable(masks.mask, masks.spacing, frames, path=out, width_px=size_px,
                         highlight=masks.highlight, cut=masks.cut, scale_bar_mm="auto")
    rv = render_masks(masks, view=view, width_px=size_px, flip=not slab.distal_first)
    return save_png(rv.rendering, out)
