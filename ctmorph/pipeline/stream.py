"""Streaming segmentation of one scan: slabs segmented exactly at the study threshold, the
first pass's per-slice summaries (femur tiles, histogram, QC sections), the bone axis and the
VOI's slices."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..config import AnalysisConfig
from ..errors import SegmentationError
from ..io import Scan
from ..segment.axis import AlignedSource, BoneAxis, fit_bone_axis
from ..segment.femur import FemurStream, FemurVoi, section_index
from ..segment.threshold import binarize, despeckle_core, grey_histogram

__all__ = [
    "Segmenter",
    "Pass1",
    "Preview",
    "PREVIEW_VOXELS",
    "stream_pass",
    "scan_histogram",
    "fit_axis",
    "locate_voi",
    "chunk_slices",
    "section_positions",
    "CHUNK_VOXELS",
    "MAP_VOXELS",
    "HALOS",
    "CACHE_BYTES",
]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# streaming: exact segmentation of slabs, pass 1 summaries, plate, VOI slab

#: Voxels segmented at once (smoothing and despeckle labels cost ~7 B/voxel), voxels per
#: envelope-map computation (~20 B/voxel), and the first despeckle halos tried (slices) before
#: ``max(min_bone_voxels, min_marrow_voxels) - 1`` (from which only a pore walled by no-data
#: voxels can be refused) and the always-exact ``min_bone_voxels + min_marrow_voxels``.
CHUNK_VOXELS = 16_000_000
MAP_VOXELS = 4_000_000
HALOS = (16,)
#: Scans whose grey + bone volume fits in this many bytes are segmented once and kept
#: (no re-reading for the growth plate and the VOI slab); bigger scans are streamed.
CACHE_BYTES = 384 * 2**20


def chunk_slices(pixels_per_slice: int) -> tuple[int, int]:
    """Slices per segmentation chunk and per envelope-map chunk for this slice size."""
    step = max(16, min(512, CHUNK_VOXELS // max(1, pixels_per_slice)))
    return step, max(4, min(step, MAP_VOXELS // max(1, pixels_per_slice)))


class Segmenter:
    """Bone of any slice range of a scan, equal to segmenting the whole scan at once.

    Smoothing reads ``ceil(4 sigma)`` extra slices; despeckle runs on a slab with a halo of
    16, then ``max(min_bone_voxels, min_marrow_voxels) - 1``, then ``min_bone_voxels +
    min_marrow_voxels`` slices, taking the first that
    :func:`~ctmorph.segment.threshold.despeckle_core` can prove exact on the range (on real
    and phantom scans the first, measured in ``tests/test_streaming.py``).
    """

    def __init__(self, scan: Scan | AlignedSource, thr: float, cfg: AnalysisConfig) -> None:
        self.scan, self.thr, self.cfg = scan, thr, cfg
        s = cfg.smooth_sigma_vox
        self.hs = int(math.ceil(4.0 * s)) if s > 0 else 0
        full = cfg.min_bone_voxels + cfg.min_marrow_voxels
        firm = max(cfg.min_bone_voxels, cfg.min_marrow_voxels) - 1
        self.halos = sorted({h for h in (*HALOS, firm) if 0 < h < full}) + [full]
        self.retries = 0
        size = int(np.prod(scan.shape))
        cache = size * (1 + np.dtype(scan.dtype).itemsize) <= CACHE_BYTES
        self._bone = np.empty(scan.shape, dtype=bool) if cache else None
        self._grey = np.empty(scan.shape, dtype=scan.dtype) if cache else None
        self._done = np.zeros(scan.shape[0], dtype=bool)

    def chunk(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Bone (bool) and grey of slices ``[s, e)`` (views of the cache for small scans:
        do not modify)."""
        if self._bone is not None and self._done[s:e].all():
            return self._bone[s:e], self._grey[s:e]
        bone, grey = self._segment(s, e)
        if self._bone is not None:
            self._bone[s:e], self._grey[s:e] = bone, grey
            self._done[s:e] = True
        return bone, grey

    def chunks(self, step: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """``(s, e, bone, grey)`` of the scan's slices in chunks of ``step``, in order. A scan
        kept in memory segments the next chunk in a second thread while the caller works on
        this one (the chunks are the same; a larger scan is segmented one chunk at a time, its
        memory bounded by one chunk)."""
        nz = self.scan.shape[0]
        ranges = [(s, min(nz, s + step)) for s in range(0, nz, step)]
        if self._bone is None or len(ranges) < 2:
            for s, e in ranges:
                yield (s, e, *self.chunk(s, e))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctmorph-segment") as ex:
            job = ex.submit(self.chunk, *ranges[0])
            for i, (s, e) in enumerate(ranges):
                bone, grey = job.result()
                if i + 1 < len(ranges):
                    job = ex.submit(self.chunk, *ranges[i + 1])
                yield s, e, bone, grey

    def _segment(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        scan, cfg = self.scan, self.cfg
        nz = scan.shape[0]
        for i, h in enumerate(self.halos):
            wa, wb = max(0, s - h), min(nz, e + h)
            ga, gb = max(0, wa - self.hs), min(nz, wb + self.hs)
            grey = scan.read_slab(ga, gb)
            raw = binarize(grey, self.thr, sigma_vox=cfg.smooth_sigma_vox)[wa - ga : wb - ga]
            valid = grey[wa - ga : wb - ga] != 0 if scan.no_data_zero else None
            if valid is not None:
                raw &= valid
            out = despeckle_core(
                raw, (s - wa, e - wa), min_bone_voxels=cfg.min_bone_voxels,
                min_marrow_voxels=cfg.min_marrow_voxels, valid=valid,
                cut_start=wa > 0, cut_end=wb < nz, check=i < len(self.halos) - 1,
            )
            if out is not None:
                return out, grey[s - ga : e - ga]
            self.retries += 1
            logger.debug("%s: slices %d..%d need a despeckle halo > %d", scan.name, s, e, h)
        raise AssertionError("unreachable: the last halo is exact")


#: Longitudinal sections kept by pass 1 at these offsets from the slice centre, in eighths
#: of the slice: the one nearest the bone axis is the QC section (and the review's).
SECTION_EIGHTHS = (-2, -1, 0, 1, 2)


def section_positions(n: int) -> np.ndarray:
    """Rows (or columns) of a slice ``n`` pixels wide where pass 1 keeps sections."""
    return np.array(sorted({min(n - 1, max(0, n // 2 + k * n // 8))
                            for k in SECTION_EIGHTHS}), dtype=np.intp)


#: Voxels of the low-resolution bone kept by pass 1 for the renderings (at most).
PREVIEW_VOXELS = 4_000_000


@dataclass
class Preview:
    """The bone of a scan block-averaged by ``factor`` voxels along each axis: ``counts`` are
    bone voxels per block (``factor³`` = all bone), blocks cut by the scan's end count what
    they hold. Kept by pass 1 at no extra reading, for the femur's 3-D rendering."""

    factor: int
    counts: np.ndarray  # (ceil(Z/f), Y // f, X // f) uint16

    @classmethod
    def for_shape(cls, shape: tuple[int, int, int]) -> Preview:
        """The smallest factor (1-8) that keeps the preview within :data:`PREVIEW_VOXELS`."""
        nz, ny, nx = shape
        f = next((k for k in range(1, 9)
                  if -(-nz // k) * (ny // k) * (nx // k) <= PREVIEW_VOXELS), 8)
        return cls(f, np.zeros((-(-nz // f), max(ny // f, 1), max(nx // f, 1)), np.uint16))

    def add(self, s: int, bone: np.ndarray) -> None:
        """Add slices ``[s, s + len(bone))``."""
        f = self.factor
        _, by, bx = self.counts.shape
        plane = bone[:, :by * f, :bx * f]
        per_slice = plane.reshape(len(bone), by, f, bx, f).sum(axis=(2, 4), dtype=np.uint16)
        for k in range(len(bone)):
            self.counts[(s + k) // f] += per_slice[k]

    def bone_fraction(self) -> np.ndarray:
        """Bone fraction of each block, float32 in [0, 1]."""
        return (self.counts / np.float32(self.factor ** 3)).astype(np.float32)


@dataclass
class Pass1:
    hist: np.ndarray
    femur: FemurStream | None  # the per-slice femur summaries (auto VOI only)
    rows: np.ndarray  # (K,) slice rows of the sections y = const
    row_grey: np.ndarray  # (K, Z, X)
    row_bone: np.ndarray  # (K, Z, X)
    cols: np.ndarray  # (K,) slice columns of the sections x = const
    col_grey: np.ndarray  # (K, Z, Y)
    any_bone: bool
    volume: np.ndarray | None = None
    valid: np.ndarray | None = None
    preview: Preview | None = None  # the bone at low resolution, for the 3-D renderings

    def through_axis(self, sp: tuple[float, float, float]) -> tuple[int, int]:
        """Indices into :attr:`rows` and :attr:`cols` of the sections nearest the bone
        axis (the median envelope centroid); the central ones without an envelope."""
        c = (np.empty((0, 2)) if self.femur is None
             else self.femur.centroid_mm[np.isfinite(self.femur.centroid_mm[:, 0])])
        if c.size == 0:
            return int(np.argmin(np.abs(self.rows - self.rows[len(self.rows) // 2]))), \
                int(np.argmin(np.abs(self.cols - self.cols[len(self.cols) // 2])))
        yc, xc = np.median(c[:, 0]) / sp[1], np.median(c[:, 1]) / sp[2]
        return int(np.argmin(np.abs(self.rows - yc))), int(np.argmin(np.abs(self.cols - xc)))


def scan_histogram(scan: Scan) -> np.ndarray:
    """Grey histogram of a whole scan, read slice by slice (no-data zeros excluded)."""
    hist = np.zeros(scan.gmax + 1, dtype=np.int64)
    for i in range(scan.shape[0]):
        hist += grey_histogram(scan.read_slice(i), gmax=scan.gmax, no_data_zero=scan.no_data_zero)
    return hist


def stream_pass(scan: Scan | AlignedSource, seg: Segmenter, *, keep_volume: bool,
           need_hist: bool, need_maps: bool = True, need_preview: bool = False) -> Pass1:
    """Stream the whole scan once: histogram, the femur's per-slice summaries
    (:class:`~ctmorph.segment.femur.FemurStream`, with ``need_maps``), the QC longitudinal
    sections and (``need_preview``) the low-resolution bone of :class:`Preview`."""
    nz, ny, nx = scan.shape
    sp = scan.spacing
    sec_rows, sec_cols = section_positions(ny), section_positions(nx)
    hist = np.zeros(scan.gmax + 1, dtype=np.int64)
    row_grey = np.empty((sec_rows.size, nz, nx), dtype=scan.dtype)
    row_bone = np.empty((sec_rows.size, nz, nx), dtype=bool)
    col_grey = np.empty((sec_cols.size, nz, ny), dtype=scan.dtype)
    femur = FemurStream(scan.shape, sp) if need_maps and not keep_volume else None
    volume = np.empty(scan.shape, dtype=bool) if keep_volume else None
    valid = np.empty(scan.shape, dtype=bool) if keep_volume and scan.no_data_zero else None
    any_bone = False
    preview = Preview.for_shape(scan.shape) if need_preview else None
    step, map_step = chunk_slices(ny * nx)
    for s, e, bone, grey in seg.chunks(step):
        any_bone = any_bone or bool(bone.any())
        if preview is not None:
            preview.add(s, bone)
        if need_hist:
            for k in range(e - s):
                hist += grey_histogram(grey[k], gmax=scan.gmax, no_data_zero=scan.no_data_zero)
        row_grey[:, s:e] = grey[:, sec_rows, :].transpose(1, 0, 2)
        row_bone[:, s:e] = bone[:, sec_rows, :].transpose(1, 0, 2)
        col_grey[:, s:e] = grey[:, :, sec_cols].transpose(2, 0, 1)
        if volume is not None:
            volume[s:e] = bone
            if valid is not None:
                valid[s:e] = grey != 0
        if femur is None:
            continue
        for t in range(s, e, map_step):
            femur.add(t, bone[t - s : min(e, t + map_step) - s])
    return Pass1(hist, femur, sec_rows, row_grey, row_bone, sec_cols, col_grey, any_bone,
                  volume, valid, preview)


def fit_axis(p1: Pass1, sp: tuple[float, float, float], name: str) -> BoneAxis | None:
    """Bone axis from the pass-1 envelope centroids of the slices with at least half the
    median cross-section (condyle tips and stubs left out); None when it cannot be fitted."""
    assert p1.femur is not None
    area = p1.femur.counts["envelope"].astype(np.float64)
    nonzero = area[area > 0]
    if nonzero.size == 0:
        return None
    centroid = p1.femur.centroid_mm
    valid = (area >= 0.5 * float(np.median(nonzero))) & np.isfinite(centroid[:, 0])
    try:
        return fit_bone_axis(centroid, valid, dz=sp[0])
    except SegmentationError as exc:
        logger.warning("%s: bone axis not fitted (%s); the slices are used as they are",
                       name, exc)
        return None


def locate_voi(seg: Segmenter, femur: FemurStream, cfg: AnalysisConfig, *, offset_mm: float,
            height_mm: float, sections: np.ndarray) -> FemurVoi:
    """The growth plate and the VOI's slices from the pass-1 summaries; a reference
    (``cfg.ref_slice``) or a VOI (``cfg.voi_first_slice``, ``cfg.voi_last_slice``) given by
    hand, as section numbers, replaces the automatic one."""
    ref = (None if cfg.ref_slice is None
           else section_index(sections, cfg.ref_slice, "ref_slice"))
    voi_range = None
    if cfg.voi_first_slice is not None and cfg.voi_last_slice is not None:
        i0 = section_index(sections, cfg.voi_first_slice, "voi_first_slice")
        i1 = section_index(sections, cfg.voi_last_slice, "voi_last_slice")
        voi_range = (min(i0, i1), max(i0, i1) + 1)
    return femur.locate(slices=lambda a, b: seg.chunk(a, b)[0], offset_mm=offset_mm,
                        height_mm=height_mm, distal_end=cfg.distal_end, ref_index=ref,
                        voi_range=voi_range)


