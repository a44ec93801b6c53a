"""The 3-D renderings of one scan, made while its data are in memory (:mod:`ctmorph.render`).

- ``voi``: the trabecular bone of the VOI alone (bone outside the VOI cut away), oblique view,
  at :data:`VOI_PIXEL_MM` so that every scan of a study shares one scale;
- ``femur``: the distal femur from the pass-1 preview (the bone block-averaged to at most
  4 M voxels, :class:`~ctmorph.pipeline.stream.Preview`), from the distal end to a little
  beyond the VOI, cut open along the bone axis (the half towards the viewer removed), the
  VOI's bone in colour and the rest faded, anterior view, at :data:`FEMUR_PIXEL_MM`.

Both have the distal end at the bottom, a white background and a 1 mm scale bar. A bone too
large for the canvas at the study scale is fitted to it instead (its scale bar says so).
``ctmorph render`` uses the same masks with other views, sizes or a turntable.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._kernels.threads import concurrent_kernels_ok
from ..errors import CtmorphError
from ..morphometry.zsource import read_phase
from ..qc import RenderedView
from ..render import CutPlane, render_bone
from ..render.scalebar import choose_bar_mm, draw_scale_bar
from .stream import Preview

__all__ = ["VOI_PIXEL_MM", "FEMUR_PIXEL_MM", "RENDER_PX", "RENDER_SLAB_VOXELS", "SlabView",
           "RenderMasks", "voi_masks", "femur_masks", "render_masks", "scan_renderings",
           "RenderingsBeside", "pool_mask", "content_box"]

logger = logging.getLogger(__name__)

#: Canvas (pixels, square) and pixel sizes (mm) of the two renderings.
RENDER_PX = 1200
VOI_PIXEL_MM = 0.0035
FEMUR_PIXEL_MM = 0.006
#: VOI slabs larger than this are block-averaged before meshing (rendering only).
RENDER_SLAB_VOXELS = 24_000_000
#: Bone shown proximal of the VOI in the femur rendering, as a fraction of the VOI's length.
PROXIMAL_MARGIN = 0.15


@dataclass
class SlabView:
    """What the renderings of one scan are made from.

    Attributes
    ----------
    src : ZSource
        The VOI slab (arrays or the packed store): bone and VOI of slices ``a ..`` of the
        scan, on the in-plane ``crop`` of a ``plane`` = ``(Y, X)`` scan.
    a : int
        First slice of the slab in the scan.
    voi_z : (int, int)
        ``[z0, z1)`` slices of the VOI in the scan.
    crop : (slice, slice)
    plane : (int, int)
    spacing : (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    preview : Preview or None
        Pass 1's low-resolution bone (the femur rendering needs it).
    distal_first : bool
        Slice 0 is the distal end (drawn at the bottom).
    name : str
        The scan.
    """

    src: Any
    a: int
    voi_z: tuple[int, int]
    crop: tuple[slice, slice]
    plane: tuple[int, int]
    spacing: tuple[float, float, float]
    preview: Preview | None
    distal_first: bool
    name: str


@dataclass
class RenderMasks:
    """A mask ready for :func:`ctmorph.render.render_bone` and how to show it."""

    mask: np.ndarray
    spacing: tuple[float, float, float]
    highlight: np.ndarray | None
    cut: CutPlane | None
    view: str
    pixel_mm: float
    what: str


def pool_mask(mask: np.ndarray, f: int) -> np.ndarray:
    """``mask`` block-averaged by ``f`` along each axis, True where at least half a block is
    set (partial blocks at the ends count what they hold)."""
    if f == 1:
        return np.asarray(mask, dtype=bool)
    nz, ny, nx = mask.shape
    pz, py, px = -(-nz // f) * f, -(-ny // f) * f, -(-nx // f) * f
    padded = np.zeros((pz, py, px), dtype=np.uint16)
    padded[:nz, :ny, :nx] = mask
    counts = padded.reshape(pz // f, f, py // f, f, px // f, f).sum(axis=(1, 3, 5))
    return counts * 2 >= f ** 3


def voi_masks(slab: SlabView) -> RenderMasks | None:
    """The trabecular bone of the VOI (``bone & voi`` in the VOI's box), block-averaged to at
    most :data:`RENDER_SLAB_VOXELS`; None when the VOI holds no bone."""
    src = slab.src
    f = max(1, math.ceil((math.prod(src.shape) / RENDER_SLAB_VOXELS) ** (1 / 3)))
    parts = []
    nz = int(src.shape[0])
    for z0 in range(0, nz, 16 * f):
        z1 = min(nz, z0 + 16 * f)
        parts.append(pool_mask(read_phase(src, z0, z1, "bone") & read_phase(src, z0, z1, "voi"),
                               f))
    mask = np.concatenate(parts)
    zs, ys, xs = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    if zs.size == 0:
        return None
    box = tuple(slice(max(int(a[0]) - 1, 0), int(a[-1]) + 2) for a in (zs, ys, xs))
    return RenderMasks(mask[box], tuple(float(s) * f for s in slab.spacing), None, None,
                       "oblique", VOI_PIXEL_MM,
                       "trabecular bone of the VOI (bone outside it cut away)")


def _voi_on_preview(slab: SlabView, preview: Preview) -> np.ndarray:
    """The VOI on the preview's grid: True where at least half a block is VOI."""
    acc = Preview(preview.factor, np.zeros_like(preview.counts))
    ys, xs = slab.crop
    nz = int(slab.src.shape[0])
    for z0 in range(0, nz, 32):
        z1 = min(nz, z0 + 32)
        full = np.zeros((z1 - z0, *slab.plane), dtype=bool)
        full[:, ys, xs] = read_phase(slab.src, z0, z1, "voi")
        acc.add(slab.a + z0, full)
    return acc.counts.astype(np.int64) * 2 >= preview.factor ** 3


def femur_masks(slab: SlabView) -> RenderMasks | None:
    """The distal femur from the preview, from the distal end to :data:`PROXIMAL_MARGIN`
    beyond the VOI, cut along the axis (the half on the viewer's side, -y, removed), the VOI
    highlighted; None without a preview or bone there."""
    preview = slab.preview
    if preview is None:
        return None
    f = int(preview.factor)
    bone = preview.bone_fraction() >= 0.5
    hl = _voi_on_preview(slab, preview)
    nzp = bone.shape[0]
    z0, z1 = slab.voi_z
    margin = PROXIMAL_MARGIN * (z1 - z0)
    zr = (slice(0, min(nzp, math.ceil((z1 + margin) / f))) if slab.distal_first
          else slice(max(0, int((z0 - margin) // f)), nzp))
    bone, hl = bone[zr], hl[zr]
    if not bone.any():
        return None
    sp = tuple(float(s) * f for s in slab.spacing)
    yc = float(np.flatnonzero(bone.any(axis=(0, 2))).mean()) * sp[1]
    return RenderMasks(bone, sp, hl, CutPlane(point_mm=(0.0, yc, 0.0), normal=(0.0, -1.0, 0.0)),
                       "anterior", FEMUR_PIXEL_MM,
                       "distal femur cut open along its axis, trabecular VOI in colour, bone "
                       "outside it faded")


def content_box(rgba: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(row0, row1, col0, col1)`` (exclusive ends) of the pixels that are not white
    background; None for an empty picture."""
    drawn = (rgba[..., :3] < 252).any(axis=2) & (rgba[..., 3] > 0)
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def render_masks(m: RenderMasks, *, view: str | tuple[float, float] | None = None,
                 width_px: int = RENDER_PX, flip: bool = False,
                 pixel_mm: float | None = None) -> RenderedView:
    """Render ``m`` on a square canvas of ``width_px`` at its study pixel size (or
    ``pixel_mm``), fitted instead when the bone does not fit; a 1 mm scale bar (a round
    length when fitted). The view records where the bone is (``box``, before the bar)."""
    view = m.view if view is None else view
    pmm = m.pixel_mm * RENDER_PX / width_px if pixel_mm is None else pixel_mm
    extent = math.dist((0, 0, 0), [n * s for n, s in zip(m.mask.shape, m.spacing, strict=True)])
    if extent > 0.92 * width_px * pmm:
        logger.info("bone of %.1f mm does not fit the %.1f mm canvas: rendered to fit",
                    extent, width_px * pmm)
        pmm = None
    r = render_bone(m.mask, m.spacing, view=view, width_px=width_px, height_px=width_px,
                    pixel_mm=pmm, flip=flip, highlight=m.highlight, cut=m.cut)
    box = content_box(r.rgba)
    bar = 1.0 if pmm is not None else choose_bar_mm(width_px, r.pixel_mm)
    r = dataclasses.replace(r, rgba=draw_scale_bar(r.rgba.copy(), r.pixel_mm, bar),
                            scale_bar_mm=bar)
    return RenderedView(r, view if isinstance(view, str) else f"{view[0]:g},{view[1]:g}",
                        m.what, box)


def scan_renderings(slab: SlabView) -> dict[str, RenderedView]:
    """The ``voi`` and (with a pass-1 preview) ``femur`` renderings of one scan.

    A failure is logged as a warning naming the scan and never fails it: the renderings are
    pictures, not results.
    """
    out: dict[str, RenderedView] = {}
    for name, make in (("voi", voi_masks), ("femur", femur_masks)):
        try:
            m = make(slab)
            if m is not None:
                out[name] = render_masks(m, flip=not slab.distal_first)
        except (CtmorphError, ValueError, MemoryError) as exc:
            logger.warning("%s: 3-D rendering of the %s skipped (%s)", slab.name, name, exc)
    return out


class RenderingsBeside:
    """:func:`scan_renderings` of a slab, started in a second thread while the scan is measured
    (when the slab is held as arrays and numba may run kernels in two threads at once;
    otherwise made when asked for). The pictures do not depend on which.

    Use as a context manager around the measures: leaving it early (an error) waits for the
    thread and drops its pictures.
    """

    def __init__(self, slab: SlabView, *, in_memory: bool) -> None:
        self._slab = slab
        self._pool = None
        self._job = None
        if in_memory and concurrent_kernels_ok():
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctmorph-render")
            self._job = self._pool.submit(scan_renderings, slab)

    def result(self) -> dict[str, Any]:
        """The renderings (waits for the thread)."""
        return scan_renderings(self._slab) if self._job is None else self._job.result()

    def __enter__(self) -> RenderingsBeside:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._job.cancel()
            self._pool.shutdown(wait=True)
