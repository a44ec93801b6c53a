"""Shading of rasterized bone: Lambert diffuse from one directional light at the viewer's upper
left plus ambient, darkened by ambient occlusion; bone tone inside the highlight, a lighter
grey outside it.

The per-pixel formula runs compiled in :func:`ctmorph._kernels.raster.resolve`; this module
holds its constants and the light of a camera.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["BONE_RGB", "FADED_RGB", "LIGHT_CAMERA", "light_direction", "shading_params"]

logger = logging.getLogger(__name__)

#: Bone (ivory) and faded (light grey) base colours, RGB in [0, 1].
BONE_RGB = (0.93, 0.86, 0.70)
FADED_RGB = (0.80, 0.80, 0.80)
#: Light direction in camera coordinates (right, up, toward the viewer): from the upper left,
#: in front.
LIGHT_CAMERA = (-0.45, 0.55, 0.70)
#: Ambient and diffuse weights (their sum is the brightest tone of a lit, unoccluded face).
AMBIENT, DIFFUSE = 0.30, 0.75
#: Share of the light that ambient occlusion can take away (1: fully occluded is black).
AO_STRENGTH = 0.75
#: Fraction of the way to white of surfaces outside the highlight.
FADE = 0.35


def light_direction(right: np.ndarray, up: np.ndarray, toward: np.ndarray) -> np.ndarray:
    """Unit vector ``(z, y, x)`` towards the light for a camera's image axes."""
    lr, lu, lt = LIGHT_CAMERA
    v = lr * right + lu * up + lt * toward
    return v / np.linalg.norm(v)


def shading_params() -> np.ndarray:
    """The shading constants as the kernel takes them.

    Returns
    -------
    (10,) ndarray of float64
        Ambient, diffuse, occlusion strength, fade, bone RGB, faded RGB. A point of normal
        ``n``, occlusion factor ``ao`` (1: open) and highlight flag ``h`` gets
        ``intensity = (AMBIENT + DIFFUSE * max(0, n·l)) * (1 - AO_STRENGTH * (1 - ao))`` and
        the colour ``h * BONE_RGB * intensity + (1 - h) * faded``, ``faded`` being
        ``FADED_RGB * intensity`` moved ``FADE`` of the way to white.
    """
    return np.array([AMBIENT, DIFFUSE, AO_STRENGTH, FADE, *BONE_RGB, *FADED_RGB],
                    dtype=np.float64)
