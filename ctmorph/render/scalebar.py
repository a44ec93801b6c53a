"""A scale bar of a round length (mm) with its label, drawn into an RGBA image (Pillow)."""

from __future__ import annotations

import logging
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError

__all__ = ["ROUND_LENGTHS_MM", "choose_bar_mm", "draw_scale_bar", "bar_label"]

logger = logging.getLogger(__name__)

#: Candidate lengths of an automatic bar, mm (1-2-5 series).
ROUND_LENGTHS_MM = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
#: Longest automatic bar as a fraction of the image width.
MAX_FRACTION = 0.25
#: Bar colour: pure black, a tone the shading never produces (its darkest tone is grey).
BAR_RGBA = (0, 0, 0, 255)


def choose_bar_mm(width_px: int, pixel_mm: float) -> float:
    """The longest round length (mm) that is at most a quarter of the image width."""
    limit = MAX_FRACTION * width_px * pixel_mm
    fitting = [v for v in ROUND_LENGTHS_MM if v <= limit]
    return fitting[-1] if fitting else ROUND_LENGTHS_MM[0]


def bar_label(length_mm: float) -> str:
    """``'1 mm'``, ``'0.5 mm'``, ``'50 µm'`` below 0.1 mm."""
    if length_mm < 0.1:
        return f"{length_mm * 1000:g} µm"
    return f"{length_mm:g} mm"


def draw_scale_bar(rgba: np.ndarray, pixel_mm: float, length_mm: float) -> np.ndarray:
    """The image with a bar of ``length_mm`` and its label in the lower right corner.

    Parameters
    ----------
    rgba : (H, W, 4) ndarray of uint8
        The rendering.
    pixel_mm : float
        Pixel size in mm.
    length_mm : float
        Bar length in mm; the bar is ``round(length_mm / pixel_mm)`` pixels long.

    Returns
    -------
    (H, W, 4) ndarray of uint8
        A copy with the bar (opaque black) and its label (Pillow's default font).

    Raises
    ------
    ConfigError
        If the bar does not fit in the image.
    """
    height, width = rgba.shape[:2]
    if not (math.isfinite(length_mm) and length_mm > 0):
        raise ConfigError(f"scale_bar_mm must be a positive length (mm), got {length_mm!r}")
    n = int(round(length_mm / pixel_mm))
    pad = max(6, int(round(0.03 * width)))
    thick = max(3, int(round(width / 250)))
    font = ImageFont.load_default(size=max(10, int(round(width / 60))))
    label = bar_label(length_mm)
    left, top, right, bottom = font.getbbox(label)
    if n + 2 * pad > width or thick + (bottom - top) + 3 * pad > height or n < 1:
        raise ConfigError(f"scale bar of {length_mm} mm ({n} px) does not fit in a "
                          f"{width} x {height} px image")
    x1 = width - pad
    x0 = x1 - n
    y1 = height - pad
    y0 = y1 - thick
    image = Image.fromarray(np.ascontiguousarray(rgba))
    draw = ImageDraw.Draw(image)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=BAR_RGBA)
    text_x = (x0 + x1) / 2 - (right - left) / 2 - left
    text_y = y0 - max(3, thick) - bottom
    draw.text((text_x, text_y), label, fill=BAR_RGBA, font=font)
    logger.debug("scale bar %s: %d px", label, n)
    return np.asarray(image).copy()
