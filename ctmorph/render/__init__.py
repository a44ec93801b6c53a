"""Headless, deterministic renderings of segmented bone for publication figures.

A marching-cubes surface of the smoothed mask (:mod:`.mesh`), an orthographic camera with named
views (:mod:`.camera`), a compiled z-buffer rasterizer (:mod:`ctmorph._kernels.raster`), Lambert
shading with ambient occlusion (:mod:`.shade`), a scale bar (:mod:`.scalebar`), and the
files: PNG and turntable GIF (:mod:`.files`). Pip packages only: no display, GPU or system
graphics library (see :mod:`.image` for why not VTK or matplotlib 3-D).
"""

from .camera import VIEWS, Camera
from .files import save_png, turntable
from .image import Rendering, render_bone, render_surface
from .mesh import BoneMesh, CutPlane, bone_mesh

__all__ = [
    "VIEWS",
    "Camera",
    "BoneMesh",
    "CutPlane",
    "bone_mesh",
    "Rendering",
    "render_bone",
    "render_surface",
    "save_png",
    "turntable",
]
