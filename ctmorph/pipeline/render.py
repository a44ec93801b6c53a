"""The 3-D renderings of one scan, made while its data are in memory (:mod:`ctmorph.render`).

- ``voi``: the trabecular bone of the VOI alone (bone outside the VOI cut away), oblique view,
  at :data:`VOI_PIXEL_MM` so that every scan of a study shares one scale;
- ``femur``: the distal femur from the pass-1 preview (the bone block-averaged to at most
  12 M voxels, :class:`~ctmorph.pipeline.stream.Preview`), from the distal end to a little
  beyond the VOI, cut open along the bone axis (the half towards the viewer removed), the
  VOI's bone in colour and the rest faded, anterior view, at :data:`FEMUR_PIXEL_MM`.

Both have the distal end at the bottom, a white background and a 1 mm scale bar. A bone too
large for the canvas at the study scale is fitted to it instead (its scale bar says so).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..errors import CtmorphError
from ..morphometry.zsource import read_phase
from ..qc import RenderedView
from ..render import CutPlane, render_bone
from .stream import Preview

__all__ = ["VOI_PIXEL_MM", "FEMUR_PIXEL_MM", "RENDER_PX", "RENDER_SLAB_VOXELS",
           "scan_renderings", "voi_rendering", "femur_rendering", "pool_mask"]

logger = logging.getLogger(__name__)

#: Canvas (pixels, square) and pixel sizes (mm) of the two renderings.
RENDER_PX = 1200
VOI_PIXEL_MM = 0.005
FEMUR_PIXEL_MM = 0.008
#: VOI slabs larger than this are block-averaged before meshing (rendering only).
RENDER_SLAB_VOXELS = 24_000_000
#: Bone shown proximal of the VOI in the femur rendering, as a fraction of the VOI's length.
PROXIMAL_MARGIN = 0.15


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


def _scale(extent_mm: float, pixel_mm: float) -> tuple[float | None, float | str]:
    """The study pixel size when the bone fits the canvas, else None (fit) with an automatic
    scale bar."""
    if extent_mm <= 0.92 * RENDER_PX * pixel_mm:
        return pixel_mm, 1.0
    logger.info("bone of %.1f mm does not fit the %.1f mm canvas: rendered to fit",
                extent_mm, RENDER_PX * pixel_mm)
    return None, "auto"


def voi_rendering(bone: np.ndarray, voi: np.ndarray, spacing: tuple[float, float, float],
                  *, distal_first: bool) -> RenderedView | None:
    """The trabecular bone of the VOI (``bone & voi``, cropped to the VOI's box), oblique.

    Parameters
    ----------
    bone, voi : (Z, Y, X) ndarray of bool
        The VOI slab; block-averaged first when over :data:`RENDER_SLAB_VOXELS`.
    spacing : (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    distal_first : bool
        Slice 0 is the distal end (it is drawn at the bottom).

    Returns
    -------
    RenderedView or None
        None when the VOI holds no bone.
    """
    zs, ys, xs = (np.flatnonzero(voi.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    if zs.size == 0:
        return None
    box = tuple(slice(max(int(a[0]) - 1, 0), int(a[-1]) + 2) for a in (zs, ys, xs))
    mask = bone[box] & voi[box]
    f = max(1, math.ceil((mask.size / RENDER_SLAB_VOXELS) ** (1 / 3)))
    mask = pool_mask(mask, f)
    if not mask.any():
        return None
    sp = tuple(float(s) * f for s in spacing)
    extent = math.dist((0, 0, 0), [n * s for n, s in zip(mask.shape, sp, strict=True)])
    pixel_mm, bar = _scale(extent, VOI_PIXEL_MM)
    r = render_bone(mask, sp, view="oblique", width_px=RENDER_PX, height_px=RENDER_PX,
                    pixel_mm=pixel_mm, scale_bar_mm=bar, flip=not distal_first)
    return RenderedView(r, "oblique", "trabecular bone of the VOI (bone outside it cut away)")


def femur_rendering(preview: Any, voi_preview: np.ndarray, voi_z: tuple[int, int],
                    spacing: tuple[float, float, float], *,
                    distal_first: bool) -> RenderedView | None:
    """The distal femur cut open along its axis, the VOI in colour, anterior view.

    Parameters
    ----------
    preview : Preview
        Pass 1's low-resolution bone (``factor``, ``bone_fraction()``).
    voi_preview : ndarray of bool
        The VOI on the preview's grid (same shape).
    voi_z : (int, int)
        ``[z0, z1)`` slices of the VOI at full resolution.
    spacing : (3,) tuple of float
        Full-resolution voxel size ``(dz, dy, dx)`` in mm.
    distal_first : bool
        Slice 0 is the distal end.

    Returns
    -------
    RenderedView or None
        None when the preview holds no bone there.
    """
    f = int(preview.factor)
    bone = preview.bone_fraction() >= 0.5
    nzp = bone.shape[0]
    z0, z1 = voi_z
    margin = PROXIMAL_MARGIN * (z1 - z0)
    if distal_first:
        zr = slice(0, min(nzp, math.ceil((z1 + margin) / f)))
    else:
        zr = slice(max(0, int((z0 - margin) // f)), nzp)
    bone, hl = bone[zr], voi_preview[zr]
    if not bone.any():
        return None
    sp = tuple(float(s) * f for s in spacing)
    # the cut: through the bone's centre, removing the half between it and the viewer (-y)
    yc = float(np.flatnonzero(bone.any(axis=(0, 2))).mean()) * sp[1]
    cut = CutPlane(point_mm=(0.0, yc, 0.0), normal=(0.0, -1.0, 0.0))
    extent = max(bone.shape[0] * sp[0], bone.shape[2] * sp[2])
    pixel_mm, bar = _scale(extent, FEMUR_PIXEL_MM)
    r = render_bone(bone, sp, view="anterior", width_px=RENDER_PX, height_px=RENDER_PX,
                    pixel_mm=pixel_mm, scale_bar_mm=bar, flip=not distal_first,
                    highlight=hl, cut=cut)
    return RenderedView(r, "anterior", "distal femur cut open along its axis, trabecular VOI "
                                       "in colour, bone outside it faded")


def _pooled_slab(src: Any, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Bone and VOI of a slab source block-averaged by ``f``, read ``16 f`` slices at a time."""
    nz = int(src.shape[0])
    bones, vois = [], []
    for z0 in range(0, nz, 16 * f):
        z1 = min(nz, z0 + 16 * f)
        bones.append(pool_mask(read_phase(src, z0, z1, "bone"), f))
        vois.append(pool_mask(read_phase(src, z0, z1, "voi"), f))
    return np.concatenate(bones), np.concatenate(vois)


def _voi_on_preview(src: Any, a: int, crop: tuple[slice, slice], plane: tuple[int, int],
                    preview: Preview) -> np.ndarray:
    """The VOI of a slab starting at slice ``a`` (in-plane ``crop`` of a ``plane``-sized scan)
    on the preview's grid: True where at least half a block is VOI."""
    acc = Preview(preview.factor, np.zeros_like(preview.counts))
    ys, xs = crop
    nz = int(src.shape[0])
    for z0 in range(0, nz, 32):
        z1 = min(nz, z0 + 32)
        full = np.zeros((z1 - z0, *plane), dtype=bool)
        full[:, ys, xs] = read_phase(src, z0, z1, "voi")
        acc.add(a + z0, full)
    return acc.counts.astype(np.int64) * 2 >= preview.factor ** 3


def scan_renderings(src: Any, a: int, voi_z: tuple[int, int], crop: tuple[slice, slice],
                    plane: tuple[int, int], spacing: tuple[float, float, float],
                    preview: Preview | None, *, distal_first: bool, name: str
                    ) -> dict[str, RenderedView]:
    """The ``voi`` and (with a pass-1 preview) ``femur`` renderings of one scan.

    Parameters
    ----------
    src : ZSource
        The VOI slab (arrays or the packed store): bone and VOI of slices ``a ..`` of the
        scan, on the in-plane ``crop`` of a ``plane`` = ``(Y, X)`` scan.
    a : int
        First slice of the slab in the scan.
    voi_z : (int, int)
        ``[z0, z1)`` slices of the VOI in the scan.
    spacing : (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    preview : Preview or None
        Pass 1's low-resolution bone (the femur rendering needs it).
    distal_first : bool
        Slice 0 is the distal end.
    name : str
        The scan, for the warning when a rendering cannot be made.

    Returns
    -------
    dict of str to RenderedView
        What could be rendered; a failure is logged as a warning and never fails the scan
        (the renderings are pictures, not results).
    """
    out: dict[str, RenderedView] = {}
    try:
        f = max(1, math.ceil((math.prod(src.shape) / RENDER_SLAB_VOXELS) ** (1 / 3)))
        bone, voi = _pooled_slab(src, f)
        rv = voi_rendering(bone, voi, tuple(s * f for s in spacing),
                           distal_first=distal_first)
        del bone, voi
        if rv is not None:
            out["voi"] = rv
        if preview is not None:
            hl = _voi_on_preview(src, a, crop, plane, preview)
            rv = femur_rendering(preview, hl, voi_z, spacing, distal_first=distal_first)
            if rv is not None:
                out["femur"] = rv
    except (CtmorphError, ValueError, MemoryError) as exc:
        logger.warning("%s: 3-D rendering skipped (%s)", name, exc)
    return out
