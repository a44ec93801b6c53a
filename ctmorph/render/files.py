"""Rendering files: a PNG and a turntable GIF, written atomically and byte-deterministic
(Pillow without timestamps or other metadata)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from .._atomic import atomic_path
from ..errors import ConfigError
from .camera import camera_axes, fit_camera, view_angles
from .image import Rendering, render_surface
from .mesh import CutPlane, bone_mesh

__all__ = ["save_png", "turntable"]

logger = logging.getLogger(__name__)


def _rgba_of(image: Rendering | np.ndarray) -> np.ndarray:
    rgba = image.rgba if isinstance(image, Rendering) else np.asarray(image)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ConfigError(f"expected an (H, W, 4) uint8 RGBA image, got {rgba.dtype} "
                          f"{rgba.shape}")
    return np.ascontiguousarray(rgba)


def save_png(image: Rendering | np.ndarray, path: str | os.PathLike) -> Path:
    """Write a rendering (or an (H, W, 4) uint8 RGBA array) as a PNG.

    The file is written to a temporary name and renamed (a reader never sees half a file)
    and holds pixels only: the same image gives the same bytes.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    rgba = _rgba_of(image)
    target = Path(path)
    with atomic_path(target) as tmp:
        Image.fromarray(rgba).save(tmp, format="PNG", compress_level=6)
    logger.debug("wrote %s", target)
    return target


def _on_white(rgba: np.ndarray) -> Image.Image:
    """An RGB image: RGBA composited over white, then a 255-colour palette (median cut, no
    dithering: deterministic)."""
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    rgb = np.rint(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return Image.fromarray(rgb).quantize(colors=255, method=Image.Quantize.MEDIANCUT,
                                         dither=Image.Dither.NONE)


def turntable(
    mask: np.ndarray,
    spacing: float | Sequence[float],
    n_frames: int = 36,
    *,
    path: str | os.PathLike,
    elevation_deg: float = 20.0,
    start_azimuth_deg: float = 0.0,
    width_px: int = 600,
    highlight: np.ndarray | None = None,
    cut: CutPlane | None = None,
    ao: bool = True,
    scale_bar_mm: float | Literal["auto"] | None = "auto",
    frame_ms: int = 100,
    supersample: int = 2,
) -> Path:
    """An animated GIF of the bone turning about its long axis.

    Frame ``k`` is a rendering at azimuth ``start_azimuth_deg + k * 360 / n_frames``; all
    frames share one centre and pixel size (the widest framing of the turn), so the bone
    turns in place at a constant scale. The mesh is computed once.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        Bone voxels.
    spacing : float or (dz, dy, dx)
        Voxel size in mm.
    n_frames : int
        Frames per turn.
    path : path
        Output GIF (written atomically; loops forever).
    elevation_deg : float
        Elevation of the viewer (degrees).
    start_azimuth_deg : float
        Azimuth of the first frame (degrees).
    width_px : int
        Frame width in pixels.
    highlight, cut, ao, supersample
        As for :func:`ctmorph.render.image.render_bone`.
    scale_bar_mm : float or 'auto', optional
        Scale bar of every frame.
    frame_ms : int
        Display time of a frame in ms.

    Returns
    -------
    Path
        ``path``.
    """
    if not (isinstance(n_frames, int) and 1 <= n_frames <= 720):
        raise ConfigError(f"n_frames must be an integer 1-720, got {n_frames!r}")
    view_angles((start_azimuth_deg, elevation_deg))  # validates the angles
    mesh = bone_mesh(mask, spacing, ao=ao, highlight=highlight, cut=cut)
    v = mesh.vertices
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    az = [start_azimuth_deg + k * 360.0 / n_frames for k in range(n_frames)]
    axes = [camera_axes(a, elevation_deg) for a in az]
    rel = v - centre
    ex = max(2.0 * float(np.abs(rel @ r).max()) for r, _, _ in axes)
    ey = max(2.0 * float(np.abs(rel @ u).max()) for _, u, _ in axes)
    frames = []
    for ax in axes:
        cam = fit_camera(v, ax, width_px=width_px, center_mm=centre, extent_mm=(ex, ey))
        r = render_surface(mesh, camera=cam, scale_bar_mm=scale_bar_mm,
                           supersample=supersample)
        frames.append(_on_white(r.rgba))
    target = Path(path)
    with atomic_path(target) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(frame_ms), loop=0, optimize=False)
    logger.info("wrote %s (%d frames)", target, n_frames)
    return target
