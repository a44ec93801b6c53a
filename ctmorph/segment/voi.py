"""VOIs other than the rat femur's automatic one: the specimen envelope, user-drawn masks and
the bone's extent along the stack (for VOIs given as fractions of bone length).

Everything works on ``(Z, Y, X)`` arrays with ``spacing=(dz, dy, dx)`` in mm, z along the
stack. The functions are slab-friendly so a streaming pipeline can call them on parts of a
scan: :func:`envelope_region` needs :data:`ENVELOPE_HALO_MM` of context on either side of a
slab, :class:`RoiMask` reads a mask slab by slab, and :func:`whole_bone_extent` takes a
per-slice profile that can be accumulated slab by slab.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._kernels.edt import squared_edt
from ..errors import ConfigError, ScanError, SegmentationError
from ..spacing import normalize_spacing
from .femur.base import as_bone

__all__ = [
    "ENVELOPE_CLOSING_MM",
    "ENVELOPE_HALO_MM",
    "RoiMask",
    "envelope_region",
    "open_roi_mask",
    "whole_bone_extent",
]

logger = logging.getLogger(__name__)

#: Radius (mm) of the ball of the 3-D closing in :func:`envelope_region`. Openings of the
#: specimen surface narrower than twice this (marrow spaces cut open at the wall of a core,
#: the mouths of pores) are bridged; wider concavities stay outside. 0.75 mm bridges the
#: marrow spaces of human trabecular bone (Tb.Sp ≈ 0.5-1 mm, the largest spaces ≈ 1.5 mm).
ENVELOPE_CLOSING_MM: float = 0.75

#: Slices within this distance (mm) on either side of a slab must be included for
#: :func:`envelope_region` of the slab to equal, on the slab's own slices, the result on the
#: whole volume: the dilation and the erosion of the closing each reach one ball radius.
ENVELOPE_HALO_MM: float = 2.0 * ENVELOPE_CLOSING_MM

_TIFF_SUFFIXES = (".tif", ".tiff")


# --------------------------------------------------------------------------------------------
# envelope


def _sq_edt(phase: np.ndarray, sp: tuple[float, ...]) -> np.ndarray:
    """Squared 3-D distance (mm²) from each ``phase`` voxel to the nearest non-phase voxel
    (0 on non-phase; ``inf`` when the array has no non-phase voxel). Voxels beyond the array
    are not non-phase: the image border is not a surface."""
    ph = np.ascontiguousarray(phase, dtype=np.uint8)
    out = np.empty(ph.shape, dtype=np.float32)
    squared_edt(ph, np.array([s * s for s in sp], dtype=np.float64), out)
    return out


def _fill_holes_inplane(mask: np.ndarray) -> np.ndarray:
    """Fill, slice by slice, background regions (4-connected) that do not reach the slice
    border."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(~mask, structure=structure)
    outside = np.zeros(n + 1, dtype=bool)
    for face in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        outside[face.ravel()] = True
    outside[0] = True  # label 0 is the foreground itself
    return mask | ~outside[lab]


def _largest_inplane(mask: np.ndarray) -> np.ndarray:
    """Keep, in every slice, only the largest 8-connected component."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    lab, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask
    # labels are numbered in raster order and never cross slices, so the labels of slice z
    # are last[z-1]+1 .. last[z]
    last = np.maximum.accumulate(lab.reshape(lab.shape[0], -1).max(axis=1))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    slice_of = np.searchsorted(last, np.arange(n + 1), side="left")
    order = np.lexsort((-sizes, slice_of))  # per slice, largest first
    first = np.ones(order.size, dtype=bool)
    first[1:] = slice_of[order[1:]] != slice_of[order[:-1]]
    keep = np.zeros(n + 1, dtype=bool)
    winners = order[first]
    keep[winners[winners > 0]] = True
    return keep[lab]


def envelope_region(
    bone: np.ndarray,
    *,
    spacing: float | tuple[float, float, float],
    closing_mm: float = ENVELOPE_CLOSING_MM,
) -> np.ndarray:
    """Region enclosed by the specimen's outer (periosteal) surface, for any bone or core.

    Definition: a voxel is inside when it lies in the 3-D morphological closing of ``bone``
    by a ball of radius ``closing_mm`` (Euclidean, in mm), with holes filled slice by slice,
    keeping per slice the largest 8-connected component. In words: the region a ball of
    radius ``closing_mm`` cannot reach from outside without touching bone.

    - Trabecular cores have no cortex: the surface runs where trabecular bone ends, bridging
      the marrow spaces cut open at the wall (openings up to ``2 * closing_mm`` wide close
      completely; a wider one is followed inwards with corners rounded to ``closing_mm``).
    - Concavities of the outer surface narrower than ``2 * closing_mm`` are filled; wider
      ones stay outside except for a fillet of radius ``closing_mm`` in their inner corners.
    - A cortical shell (a bone shaft) is filled whatever its lumen: marrow enclosed in a
      slice is inside.
    - Per slice only the largest component is kept (a separate bone or debris in the field
      of view is left out); every bone voxel of that component is inside (the closing is
      extensive).
    - The image border is not a surface. Beyond the first and last slice the end slice is
      taken to continue unchanged, so a core running through the whole stack keeps its
      cross-section up to the end slices while air in an end slice stays outside; beyond
      the image edges in-plane nothing is known, so a gap narrower than about
      ``2 * closing_mm`` between the specimen and the image edge is filled.

    Parameters
    ----------
    bone : (Z, Y, X) ndarray of bool
        Segmented bone, the whole scan or a slab of it with :data:`ENVELOPE_HALO_MM` of
        context on either side (z within ``2 * closing_mm`` of a slice decides it).
    spacing : float or (3,) tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    closing_mm : float
        Ball radius of the closing in mm (> 0). :data:`ENVELOPE_HALO_MM` holds for the
        default; other radii need ``2 * closing_mm`` of context.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The region enclosed by the outer surface (bone and the marrow inside it).

    Raises
    ------
    ConfigError
        ``bone`` is not a 3-D boolean/integer array, or bad ``spacing`` / ``closing_mm``.

    Notes
    -----
    The closing is a dilation (squared EDT of the non-bone ≤ r²), a slice-wise hole filling,
    and an erosion (squared EDT of the filled dilation > r²): two exact Euclidean distance
    transforms (Felzenszwalb & Huttenlocher 2012). The work is cropped in-plane to the
    bone's bounding box grown by the radius, with the end slices replicated
    ``2 * closing_mm`` beyond the stack.
    """
    b = as_bone(bone)
    sp = normalize_spacing(spacing)
    if not (isinstance(closing_mm, int | float) and math.isfinite(closing_mm) and closing_mm > 0):
        raise ConfigError(f"closing_mm must be a positive length (mm), got {closing_mm!r}")
    out = np.zeros(b.shape, dtype=bool)
    rows = np.flatnonzero(b.any(axis=(0, 2)))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(b.any(axis=(0, 1)))
    # Work on the bone's in-plane bounding box grown by r + 2 voxels (the closing never
    # reaches farther). Beyond the first and last slice the end slices are replicated 2r
    # deep, so the closing near either end behaves as if the end slice continued
    # indefinitely; beyond the image edges in-plane nothing is known: the distance
    # transforms see no surface there.
    nz, ny, nx = b.shape
    pz = int(math.ceil(2.0 * closing_mm / sp[0])) + 1
    py = int(math.ceil(closing_mm / sp[1])) + 2
    px = int(math.ceil(closing_mm / sp[2])) + 2
    ys = slice(max(0, rows[0] - py), min(ny, rows[-1] + py + 1))
    xs = slice(max(0, cols[0] - px), min(nx, cols[-1] + px + 1))
    work = np.pad(b[:, ys, xs], ((pz, pz), (0, 0), (0, 0)), mode="edge")
    inner = slice(pz, pz + nz)
    r2 = np.float32(closing_mm * closing_mm)
    dilated = _sq_edt(~work, sp) <= r2  # within r of bone (bone itself: distance 0)
    del work
    filled = _fill_holes_inplane(dilated)
    del dilated
    closed = _sq_edt(filled, sp) > r2  # farther than r from everything outside
    del filled
    closed = closed[inner]
    closed |= b[:, ys, xs]  # exact in theory (the closing is extensive); guards rounding
    region = _largest_inplane(_fill_holes_inplane(closed))
    out[:, ys, xs] = region
    logger.debug(
        "envelope region: %d of %d slices, %.1f%% of the voxels",
        int(region.any(axis=(1, 2)).sum()), b.shape[0], 100.0 * out.mean(),
    )
    return out


# --------------------------------------------------------------------------------------------
# whole-bone extent


def whole_bone_extent(
    envelope_area_mm2: np.ndarray, dz: float, *, min_area_mm2: float = 0.01
) -> tuple[int, int]:
    """First and last array index of the bone along the stack.

    Parameters
    ----------
    envelope_area_mm2 : (Z,) ndarray of float
        Cross-sectional area (mm²) of the bone's envelope in every slice of the scan, in
        array order (e.g. ``envelope.sum(axis=(1, 2)) * dy * dx``, accumulated slab by slab).
    dz : float
        Slice spacing in mm (used for the bone length in messages and logs).
    min_area_mm2 : float
        Slices with a smaller cross-section (mm²) count as empty (specks, debris).

    Returns
    -------
    (int, int)
        ``(first, last)`` array indices, inclusive, of the slices with a bone cross-section.
        The bone length is ``(last - first + 1) * dz`` mm.

    Raises
    ------
    ConfigError
        The profile is not a 1-D array of finite numbers, or ``dz`` is not positive.
    SegmentationError
        No slice holds bone, or bone reaches the first or the last slice of the scan (the
        scan does not hold the whole bone, so its length is unknown).
    """
    area = np.asarray(envelope_area_mm2, dtype=np.float64)
    if area.ndim != 1 or area.size == 0 or not np.all(np.isfinite(area)):
        raise ConfigError(
            "envelope_area_mm2 must be a non-empty 1-D array of finite areas (mm²), "
            f"got shape {area.shape}"
        )
    if not (math.isfinite(dz) and dz > 0):
        raise ConfigError(f"dz must be a positive slice spacing (mm), got {dz!r}")
    idx = np.flatnonzero(area > min_area_mm2)
    if idx.size == 0:
        raise SegmentationError(
            f"no slice holds a bone cross-section larger than {min_area_mm2:g} mm²"
        )
    first, last = int(idx[0]), int(idx[-1])
    n = area.size
    touching = [name for name, hit in (("first", first == 0), ("last", last == n - 1)) if hit]
    if touching:
        raise SegmentationError(
            "the scan does not hold the whole bone: bone in the "
            f"{' and '.join(touching)} slice, so a VOI as a fraction of bone length is "
            "undefined (give --roi-offset-mm/--roi-height-mm instead)"
        )
    logger.debug("whole bone: slices %d..%d, %.3f mm", first, last, (last - first + 1) * dz)
    return first, last


# --------------------------------------------------------------------------------------------
# user-drawn masks


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _size(shape: tuple[int, ...]) -> str:
    return " x ".join(str(int(s)) for s in shape)


@dataclass(frozen=True)
class RoiMask:
    """A user-drawn VOI mask on disk, read slab by slab.

    Built by :func:`open_roi_mask`, which checks the whole file once. Slice ``k`` of the mask
    is array index ``k`` of the scan (its ``k``-th slice file in section order); a nonzero
    voxel is inside the VOI.

    Attributes
    ----------
    path : pathlib.Path
        A multi-page TIFF file or a folder of single-page TIFF slices.
    shape : (int, int, int)
        ``(Z, Y, X)``, equal to the scan's.
    files : tuple of pathlib.Path
        The slice files of a folder in natural name order (empty for a multi-page file).
    z_range : (int, int)
        ``(z0, z1)``: the slices ``z0 .. z1 - 1`` hold every mask voxel.
    n_voxels : int
        Number of voxels inside the mask.
    """

    path: Path
    shape: tuple[int, int, int]
    files: tuple[Path, ...]
    z_range: tuple[int, int]
    n_voxels: int

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Read mask slices ``z0 .. z1 - 1``.

        Returns
        -------
        (z1 - z0, Y, X) ndarray of bool

        Raises
        ------
        IndexError
            If ``0 <= z0 <= z1 <= Z`` does not hold.
        ScanError
            If the file became unreadable or changed since it was opened.
        """
        nz, ny, nx = self.shape
        if not (0 <= z0 <= z1 <= nz):
            raise IndexError(f"mask slab {z0}:{z1} out of range for {self.path} ({nz} slices)")
        out = np.zeros((z1 - z0, ny, nx), dtype=bool)
        for k, page in _iter_pages(self.path, self.files, z0, z1):
            if page.shape != (ny, nx):
                raise ScanError(f"{self.path}: mask slice {k} changed since it was opened")
            out[k - z0] = page != 0
        return out


def _read_tiff_page(path: Path, tf: object | None, index: int) -> np.ndarray:
    """One 2-D page: page ``index`` of the open multi-page file ``tf``, or the file ``path``."""
    import tifffile

    try:
        if tf is None:
            with tifffile.TiffFile(path) as single:
                if len(single.pages) != 1:
                    raise ScanError(
                        f"{path}: a mask slice file must hold one page, it holds "
                        f"{len(single.pages)}"
                    )
                arr = single.pages[0].asarray()
        else:
            arr = tf.pages[index].asarray()  # type: ignore[attr-defined]
    except ScanError:
        raise
    except Exception as exc:  # any decoder failure means an unusable mask file
        raise ScanError(f"{path}: cannot read the mask ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(arr)
    if arr.ndim != 2:
        where = f"page {index}" if tf is not None else "the slice"
        raise ScanError(
            f"{path}: {where} of the mask has shape {arr.shape}; a mask slice must be a 2-D "
            "single-channel image (no RGB, no stacked channels)"
        )
    return arr


def _iter_pages(path: Path, files: tuple[Path, ...], z0: int, z1: int):
    """Yield ``(k, page)`` for mask slices ``z0 .. z1 - 1``, one page in memory at a time."""
    import tifffile

    if files:
        for k in range(z0, z1):
            yield k, _read_tiff_page(files[k], None, k)
        return
    try:
        tf = tifffile.TiffFile(path)
    except Exception as exc:
        raise ScanError(f"{path}: cannot read the mask ({type(exc).__name__}: {exc})") from None
    with tf:
        for k in range(z0, z1):
            yield k, _read_tiff_page(path, tf, k)


def open_roi_mask(path: str | os.PathLike, *, shape: tuple[int, int, int]) -> RoiMask:
    """Open and check a user-drawn VOI mask for a scan of shape ``shape``.

    Parameters
    ----------
    path : str or path-like
        A multi-page TIFF (one page per slice, e.g. saved from Fiji/ImageJ) or a folder of
        single-page TIFF slices (``*.tif``/``*.tiff``, taken in natural name order). Slice
        ``k`` is array index ``k`` of the scan, i.e. its ``k``-th slice file in section order.
    shape : (int, int, int)
        ``(Z, Y, X)`` of the scan.

    Returns
    -------
    RoiMask
        Lazy: only :attr:`RoiMask.z_range` and the voxel count are kept; pixels are read by
        :meth:`RoiMask.read`.

    Raises
    ------
    ScanError
        The path is missing or unreadable, is not a TIFF (stack), holds RGB or multi-channel
        pages, its shape differs from the scan's (both shapes are named), it is empty (no
        nonzero voxel), or it is not binary: a mask holds 0 outside and one value inside
        (any of 1, 255, True...); label images or interpolated masks with several nonzero
        values are refused rather than silently merged.

    Notes
    -----
    Opening reads every page once (one page in memory at a time) to find the slices that
    hold the mask and to check its values.
    """
    p = Path(path)
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) <= 0:
        raise ConfigError(f"shape must be three positive sizes (Z, Y, X), got {shape!r}")
    nz, ny, nx = shp
    files: tuple[Path, ...] = ()
    if p.is_dir():
        files = tuple(sorted((f for f in p.iterdir()
                              if f.suffix.lower() in _TIFF_SUFFIXES and f.is_file()
                              and not f.name.startswith(".")), key=_natural_key))
        if not files:
            raise ScanError(f"{p}: the mask folder holds no .tif/.tiff slice files")
        n_pages = len(files)
    elif p.is_file():
        import tifffile

        try:
            with tifffile.TiffFile(p) as tf:
                n_pages = len(tf.pages)
        except Exception as exc:
            raise ScanError(
                f"{p}: cannot read the mask as TIFF ({type(exc).__name__}: {exc})"
            ) from None
    else:
        raise ScanError(f"{p}: no such mask file or folder")

    if n_pages == 0:
        raise ScanError(f"{p}: the mask file holds no image")
    _, first = next(_iter_pages(p, files, 0, 1))
    if (n_pages, *first.shape) != shp:
        raise ScanError(
            f"{p}: the mask has shape {_size((n_pages, *first.shape))} (slices x rows x "
            f"columns), the scan {_size(shp)}"
        )
    inside_value = None
    hits: list[int] = []
    n_voxels = 0
    for k, page in _iter_pages(p, files, 0, nz):
        if page.shape != (ny, nx):
            where = files[k] if files else f"{p} page {k}"
            raise ScanError(
                f"{where}: mask slice is {_size(page.shape)} pixels, the scan's {_size((ny, nx))}"
            )
        values = np.unique(page)
        nonzero = values[values != 0]
        if nonzero.size:
            if inside_value is None:
                inside_value = nonzero[0].item()
            if nonzero.size > 1 or nonzero[0].item() != inside_value:
                shown = sorted({inside_value, *(v.item() for v in nonzero[:3])})
                raise ScanError(
                    f"{p}: the mask is not binary (nonzero values {', '.join(map(str, shown))}"
                    f" by slice {k}); save it with 0 outside and one value inside"
                )
            hits.append(k)
            n_voxels += int(np.count_nonzero(page))
    if not hits:
        raise ScanError(f"{p}: the mask is empty (no nonzero voxel)")
    z_range = (hits[0], hits[-1] + 1)
    logger.debug("roi mask %s: %d voxels in slices %d..%d", p, n_voxels, z_range[0],
                 z_range[1] - 1)
    return RoiMask(path=p, shape=shp, files=files, z_range=z_range, n_voxels=n_voxels)
