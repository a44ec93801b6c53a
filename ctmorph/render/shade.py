"""Shading of rasterized bone: Lambert diffuse from one directional light at the viewer's upper
left plus ambient, darkened by ambient occlusion; bone tone inside the highlight, a lighter
grey outside it; white or transparent background."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError

__all__ = ["BONE_RGB", "FADED_RGB", "LIGHT_CAMERA", "light_direction", "shade", "compose"]

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


def shade(normals: np.ndarray, ao: np.ndarray, highlight: np.ndarray,
          light: np.ndarray) -> np.ndarray:
    """Colours of surface points.

    Parameters
    ----------
    normals : (N, 3) ndarray of float
        Interpolated surface normals ``(z, y, x)`` (renormalised here).
    ao : (N,) ndarray of float
        Ambient-occlusion factor in [0, 1] (1: open).
    highlight : (N,) ndarray of float
        1 in the highlighted region, 0 outside (fractions blend the two colours).
    light : (3,) ndarray of float
        Unit vector towards the light, ``(z, y, x)``.

    Returns
    -------
    (N, 3) ndarray of float32
        RGB in [0, 1]: ``base * (AMBIENT + DIFFUSE * max(0, n·l)) * (1 - AO_STRENGTH * (1 -
        ao))``, base the bone tone, or the grey moved ``FADE`` of the way to white outside
        the highlight.
    """
    normals = np.asarray(normals, dtype=np.float32)
    norm = np.sqrt(np.einsum("ij,ij->i", normals, normals))
    lambert = np.maximum(normals @ light.astype(np.float32) / np.maximum(norm, 1e-12), 0.0)
    occl = 1.0 - AO_STRENGTH * (1.0 - np.clip(ao, 0.0, 1.0))
    intensity = ((AMBIENT + DIFFUSE * lambert) * occl).astype(np.float32)[:, None]
    h = np.clip(highlight, 0.0, 1.0).astype(np.float32)[:, None]
    bone = np.asarray(BONE_RGB, np.float32) * intensity
    faded = np.asarray(FADED_RGB, np.float32) * intensity
    faded += FADE * (1.0 - faded)
    return np.clip(h * bone + (1.0 - h) * faded, 0.0, 1.0)


def compose(rgb: np.ndarray, covered: np.ndarray, background: str = "white") -> np.ndarray:
    """An RGBA float image: ``rgb`` at the covered pixels, the background elsewhere.

    Parameters
    ----------
    rgb : (N, 3) ndarray of float
        Colours of the covered pixels, in row-major order.
    covered : (H, W) ndarray of bool
        Pixels showing the surface.
    background : {'white', 'transparent'}
        Opaque white, or alpha 0.

    Returns
    -------
    (H, W, 4) ndarray of float32
        RGBA in [0, 1].
    """
    if background not in ("white", "transparent"):
        raise ConfigError(f"background must be 'white' or 'transparent', got {background!r}")
    out = np.empty(covered.shape + (4,), dtype=np.float32)
    out[...] = (1.0, 1.0, 1.0, 1.0 if background == "white" else 0.0)
    out[covered, :3] = rgb
    out[covered, 3] = 1.0
    return out
