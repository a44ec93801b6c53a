"""Orthographic cameras for bone renderings: named views, arbitrary azimuth/elevation, and
fitting to the frame or a fixed pixel size.

Volume axes are ``(z, y, x)`` with z the bone's long axis. The camera is given by the
direction *towards the viewer* at azimuth ``a`` and elevation ``e`` (degrees)::

    toward = cos(e) * h(a) + sin(e) * z,    h(a) = -cos(a) * y + sin(a) * x
    right  = cos(a) * x + sin(a) * y
    up     = -sin(e) * h(a) + cos(e) * z        (image up: +z, the long axis)

Named views (``VIEWS``):

============  =========  ===========  ============================================
view          azimuth    elevation    what the image shows
============  =========  ===========  ============================================
anterior      0          0            looking along +y at the z–x plane, z up, x right
posterior     180        0            looking along -y, z up, -x right
lateral       90         0            looking along -x at the z–y plane, z up, y right
medial        270        0            looking along +x, z up, -y right
oblique       35         25           between anterior and lateral, from above
top           0          90           looking down -z at the y–x plane, y up, x right
bottom        0          -90          looking up +z, -y up, x right
============  =========  ===========  ============================================

"anterior"/"lateral" name the -y and +x sides of the volume; which anatomical side they are
depends on how the bone lay in the scanner. ``flip=True`` turns the image by 180° (the long
axis pointing down) without moving the viewer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["VIEWS", "Camera", "view_angles", "camera_axes", "fit_camera", "project"]

logger = logging.getLogger(__name__)

#: Named views: (azimuth, elevation) in degrees.
VIEWS: dict[str, tuple[float, float]] = {
    "anterior": (0.0, 0.0),
    "posterior": (180.0, 0.0),
    "lateral": (90.0, 0.0),
    "medial": (270.0, 0.0),
    "oblique": (35.0, 25.0),
    "top": (0.0, 90.0),
    "bottom": (0.0, -90.0),
}


@dataclass(frozen=True)
class Camera:
    """An orthographic camera on a pixel grid.

    Attributes
    ----------
    right, up, toward : (3,) ndarray of float64
        Orthonormal image axes ``(z, y, x)``: image right, image up, and towards the viewer.
    center_mm : (3,) ndarray of float64
        World point ``(z, y, x)`` (mm) at the centre of the image.
    pixel_mm : float
        Pixel size in mm.
    width_px, height_px : int
        Image size in pixels.
    """

    right: np.ndarray
    up: np.ndarray
    toward: np.ndarray
    center_mm: np.ndarray
    pixel_mm: float
    width_px: int
    height_px: int


def view_angles(view: str | tuple[float, float]) -> tuple[float, float]:
    """``(azimuth_deg, elevation_deg)`` of a named view or of a given pair."""
    if isinstance(view, str):
        try:
            return VIEWS[view]
        except KeyError:
            raise ConfigError(f"view must be one of {sorted(VIEWS)} or (azimuth_deg, "
                              f"elevation_deg), got {view!r}") from None
    try:
        az, el = (float(v) for v in view)
    except (TypeError, ValueError):
        raise ConfigError(f"view must be a name or (azimuth_deg, elevation_deg), got "
                          f"{view!r}") from None
    if not (math.isfinite(az) and math.isfinite(el) and -90.0 <= el <= 90.0):
        raise ConfigError(f"view angles must be finite with elevation in [-90, 90] degrees, "
                          f"got {view!r}")
    return az, el


def camera_axes(azimuth_deg: float, elevation_deg: float,
                flip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image right, image up and toward-viewer unit vectors ``(z, y, x)`` (module docstring)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    h = np.array([0.0, -math.cos(a), math.sin(a)])
    z = np.array([1.0, 0.0, 0.0])
    right = np.array([0.0, math.sin(a), math.cos(a)])
    toward = math.cos(e) * h + math.sin(e) * z
    up = -math.sin(e) * h + math.cos(e) * z
    if flip:
        right, up = -right, -up
    return right, up, toward


def fit_camera(
    vertices: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    width_px: int,
    height_px: int | None = None,
    pixel_mm: float | None = None,
    margin: float = 0.06,
    center_mm: np.ndarray | None = None,
    extent_mm: tuple[float, float] | None = None,
) -> Camera:
    """A camera that frames ``vertices`` (or a given centre and extent).

    Parameters
    ----------
    vertices : (V, 3) ndarray of float
        Points ``(z, y, x)`` in mm to frame.
    axes : (right, up, toward)
        From :func:`camera_axes`.
    width_px : int
        Image width in pixels.
    height_px : int, optional
        Image height; default: the framed extent's aspect ratio.
    pixel_mm : float, optional
        Pixel size in mm. Given, it wins over fitting (renderings at one scale); else the
        largest size that fits the extent inside ``margin`` of the frame on every side.
    margin : float
        Fraction of the width (height) kept free on each side when fitting.
    center_mm : (3,) ndarray, optional
        World point at the image centre; default the centre of the projected bounding box.
    extent_mm : (float, float), optional
        Width and height (mm) to fit; default the projected bounding box's.

    Returns
    -------
    Camera
    """
    right, up, toward = axes
    if width_px < 8 or (height_px is not None and height_px < 8):
        raise ConfigError(f"image size must be at least 8 pixels, got {width_px} x {height_px}")
    if pixel_mm is not None and not (math.isfinite(pixel_mm) and pixel_mm > 0):
        raise ConfigError(f"pixel_mm must be a positive number (mm), got {pixel_mm!r}")
    sx, sy = vertices @ right, vertices @ up
    if center_mm is None:
        cx, cy = (sx.min() + sx.max()) / 2, (sy.min() + sy.max()) / 2
        center_mm = cx * right + cy * up + float(np.mean(vertices @ toward)) * toward
    if extent_mm is None:
        extent_mm = (float(sx.max() - sx.min()), float(sy.max() - sy.min()))
    ex, ey = max(extent_mm[0], 1e-9), max(extent_mm[1], 1e-9)
    frac = 1.0 - 2.0 * margin
    if pixel_mm is None:
        pixel_mm = ex / (width_px * frac)
        if height_px is not None:
            pixel_mm = max(pixel_mm, ey / (height_px * frac))
    if height_px is None:
        height_px = max(8, int(math.ceil(ey / pixel_mm + 2 * margin * width_px)))
    logger.debug("camera: %d x %d px of %.5f mm", width_px, height_px, pixel_mm)
    return Camera(right=right, up=up, toward=toward, center_mm=np.asarray(center_mm, float),
                  pixel_mm=float(pixel_mm), width_px=int(width_px), height_px=int(height_px))


def project(camera: Camera, vertices: np.ndarray) -> np.ndarray:
    """``(col, row, depth)`` in pixels of each vertex: column rightwards, row downwards from
    the top-left corner, depth increasing away from the viewer.

    Parameters
    ----------
    camera : Camera
    vertices : (V, 3) ndarray of float
        Points ``(z, y, x)`` in mm.

    Returns
    -------
    (V, 3) ndarray of float64
    """
    rel = np.asarray(vertices, dtype=np.float64) - camera.center_mm
    out = np.empty((len(rel), 3))
    out[:, 0] = rel @ camera.right / camera.pixel_mm + camera.width_px / 2.0
    out[:, 1] = camera.height_px / 2.0 - rel @ camera.up / camera.pixel_mm
    out[:, 2] = -(rel @ camera.toward) / camera.pixel_mm
    return out
