"""Bone renderings: mesh a mask, rasterize it with a z-buffer, shade it, add a scale bar.

The renderer runs headless on pip packages only: VTK/pyvista would need OSMesa or EGL system
libraries for off-screen rendering, and matplotlib's 3-D axes sort and draw polygons one by one
(they cannot shade the million triangles of a trabecular VOI in seconds). So the surface is a
marching-cubes mesh (:mod:`.mesh`) drawn by a compiled z-buffer rasterizer
(:mod:`ctmorph._kernels.raster`) with deterministic tie-breaking: the same input gives the same
pixels whatever the number of threads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._kernels.raster import bin_triangles, rasterize, resolve
from ..errors import ConfigError
from .camera import Camera, camera_axes, fit_camera, project, view_angles
from .mesh import BoneMesh, CutPlane, bone_mesh
from .scalebar import choose_bar_mm, draw_scale_bar
from .shade import light_direction, shading_params

__all__ = ["Rendering", "render_bone", "render_surface", "draw_mesh"]

logger = logging.getLogger(__name__)

#: Image rows per band of the parallel rasterizer.
BAND_ROWS = 16


@dataclass(frozen=True, eq=False)
class Rendering:
    """A rendered image and its scale.

    Attributes
    ----------
    rgba : (H, W, 4) ndarray of uint8
        The image; alpha 0 on a transparent background, 255 elsewhere (fractions at the
        anti-aliased silhouette).
    pixel_mm : float
        Pixel size in mm (the same in both directions: orthographic projection).
    camera : Camera
        The camera at the output resolution.
    scale_bar_mm : float or None
        Length of the drawn scale bar in mm (None: no bar).
    """

    rgba: np.ndarray
    pixel_mm: float
    camera: Camera
    scale_bar_mm: float | None


def draw_mesh(mesh: BoneMesh, camera: Camera, *, supersample: int = 1,
                   background: Literal["white", "transparent"] = "white") -> np.ndarray:
    """Shaded image of the mesh, anti-aliased by supersampling (no scale bar).

    Parameters
    ----------
    mesh : BoneMesh
    camera : Camera
        At the output resolution.
    supersample : int
        Fine pixels per output pixel along each axis.
    background : {'white', 'transparent'}

    Returns
    -------
    (H, W, 4) ndarray of uint8
        RGBA; alpha is the covered fraction of the pixel on a transparent background.
    """
    if background not in ("white", "transparent"):
        raise ConfigError(f"background must be 'white' or 'transparent', got {background!r}")
    fine = dataclasses.replace(camera, pixel_mm=camera.pixel_mm / supersample,
                               width_px=camera.width_px * supersample,
                               height_px=camera.height_px * supersample)
    verts = project(fine, mesh.vertices)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    height, width = fine.height_px, fine.width_px
    start, index = bin_triangles(verts, faces, height, BAND_ROWS)
    depth = np.full((height, width), np.inf)
    owner = np.full((height, width), -1, dtype=np.int64)
    # cull = 1: a bone mesh is closed and wound so that its front faces have negative area
    rasterize(verts, faces, start, index, BAND_ROWS, 1, depth, owner)
    attrs = np.ascontiguousarray(np.column_stack([mesh.normals, mesh.ao, mesh.highlight]),
                                 dtype=np.float64)
    light = light_direction(camera.right, camera.up, camera.toward)
    out = np.empty((camera.height_px, camera.width_px, 4))
    resolve(verts, faces, attrs, owner, supersample, light, shading_params(),
            background == "transparent", out)
    return np.rint(out * 255.0).astype(np.uint8)


def render_surface(
    mesh: BoneMesh,
    *,
    view: str | tuple[float, float] = "oblique",
    width_px: int = 1200,
    height_px: int | None = None,
    pixel_mm: float | None = None,
    flip: bool = False,
    background: Literal["white", "transparent"] = "white",
    scale_bar_mm: float | Literal["auto"] | None = None,
    supersample: int = 2,
    camera: Camera | None = None,
) -> Rendering:
    """Render a prepared mesh (see :func:`render_bone` for the parameters).

    ``camera`` (at the output resolution) replaces ``view``, the size and ``flip`` when given;
    :func:`ctmorph.render.files.turntable` uses it to keep one framing over all frames.
    """
    if not (isinstance(supersample, int) and 1 <= supersample <= 4):
        raise ConfigError(f"supersample must be an integer 1-4, got {supersample!r}")
    if camera is None:
        axes = camera_axes(*view_angles(view), flip=flip)
        camera = fit_camera(mesh.vertices, axes, width_px=width_px, height_px=height_px,
                            pixel_mm=pixel_mm)
    rgba = draw_mesh(mesh, camera, supersample=supersample, background=background)
    bar = None
    if scale_bar_mm is not None:
        bar = (choose_bar_mm(camera.width_px, camera.pixel_mm) if scale_bar_mm == "auto"
               else float(scale_bar_mm))
        rgba = draw_scale_bar(rgba, camera.pixel_mm, bar)
    return Rendering(rgba=rgba, pixel_mm=camera.pixel_mm, camera=camera, scale_bar_mm=bar)


def render_bone(
    mask: np.ndarray,
    spacing: float | Sequence[float],
    *,
    view: str | tuple[float, float] = "oblique",
    width_px: int = 1200,
    height_px: int | None = None,
    pixel_mm: float | None = None,
    highlight: np.ndarray | None = None,
    cut: CutPlane | None = None,
    background: Literal["white", "transparent"] = "white",
    scale_bar_mm: float | Literal["auto"] | None = None,
    ao: bool = True,
    flip: bool = False,
    smooth_vox: float = 0.8,
    step_size: int = 1,
    supersample: int = 2,
) -> Rendering:
    """Render a segmented bone volume as a shaded surface (orthographic, headless).

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        Bone voxels; z is the bone's long axis (image up unless ``flip``).
    spacing : float or (dz, dy, dx)
        Voxel size in mm.
    view : str or (azimuth_deg, elevation_deg)
        A named view of :data:`ctmorph.render.camera.VIEWS` ('anterior', 'posterior',
        'lateral', 'medial', 'oblique', 'top', 'bottom') or angles in degrees.
    width_px : int
        Image width in pixels.
    height_px : int, optional
        Image height; default from the framed bone's aspect ratio.
    pixel_mm : float, optional
        Pixel size in mm; given, it wins over fitting the bone to the frame (render several
        bones at one scale).
    highlight : (Z, Y, X) ndarray of bool, optional
        Region shown in bone colour (e.g. the trabecular VOI); the rest is faded grey.
    cut : CutPlane, optional
        Cut-away: the volume beyond the plane is removed and the cut face capped.
    background : {'white', 'transparent'}
        Opaque white, or alpha 0 outside the bone.
    scale_bar_mm : float or 'auto', optional
        Draw a scale bar of this length (mm) with its label; 'auto' picks a round length
        (0.05-50 mm, 1-2-5 series) of at most a quarter of the width.
    ao : bool
        Darken occluded surfaces (ambient occlusion).
    flip : bool
        Long axis pointing down (image turned by 180°).
    smooth_vox : float
        Gaussian sigma (voxels) of the surface smoothing (:func:`.mesh.bone_mesh`).
    step_size : int
        Marching-cubes step (voxels); 1 is full resolution.
    supersample : int
        Anti-aliasing: rasterize at this many times the resolution per axis and average.

    Returns
    -------
    Rendering
        ``rgba`` ((H, W, 4) uint8), ``pixel_mm`` (mm), the camera and the scale bar length.

    Raises
    ------
    ConfigError
        For invalid arguments (shape, view, sizes, background, scale bar that does not fit).

    Examples
    --------
    >>> from ctmorph.phantoms import ball
    >>> r = render_bone(ball(20, 8), 0.01, width_px=64, view="top")
    >>> r.rgba.shape[1], r.rgba.dtype.name
    (64, 'uint8')
    """
    mesh = bone_mesh(mask, spacing, smooth_vox=smooth_vox, ao=ao, highlight=highlight,
                     cut=cut, step_size=step_size)
    return render_surface(mesh, view=view, width_px=width_px, height_px=height_px,
                          pixel_mm=pixel_mm, flip=flip, background=background,
                          scale_bar_mm=scale_bar_mm, supersample=supersample)
