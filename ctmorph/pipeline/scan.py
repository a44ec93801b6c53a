"""One scan: load → segment → VOI → measure → a result row with provenance.

:func:`analyze_scan` is the public entry point (docs/DESIGN.md §6) and returns one row of
``morphometry.csv``; :func:`measure_scan` returns the row together with the details the batch
writes next to it (per-scan JSON, QC pictures)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..calibration import (
    Calibration,
    attenuation_to_grey,
    check_settings,
    density_to_grey,
    grey_to_attenuation,
    grey_to_density,
    load_calibration,
    scan_window,
)
from ..config import AnalysisConfig
from ..errors import CalibrationError, CtmorphError, SegmentationError
from ..io import Scan, read_scan
from ..morphometry import (
    cortical_morphometry,
)
from ..morphometry.density import density_metrics, density_metrics_chunked
from ..morphometry.zsource import ArraySource, block_ranges
from ..qc import AxialQc, QcData, ReviewViews, qc_flags
from ..segment.axis import AlignedSource, BoneAxis
from ..segment.femur import FemurVoi, proximal_slices
from ..segment.femur.stream import check_voi_slices
from ..segment.threshold import otsu_threshold
from ..segment.voi import envelope_region, open_roi_mask, whole_bone_extent
from .measure import Progress, measure_voi
from .provenance import software_versions
from .render import RenderingsBeside, SlabView
from .store import Slab, load_slab
from .stream import (
    Pass1,
    Segmenter,
    chunk_slices,
    fit_axis,
    locate_voi,
    scan_histogram,
    stream_pass,
)

__all__ = [
    "analyze_scan",
    "measure_scan",
    "voi_slab",
    "ScanResult",
    "STAGES",
    "ALIGN_MIN_DEG",
    "Progress",
]

logger = logging.getLogger(__name__)


#: Bone-axis tilt (degrees from the slice normal) from which an auto-ROI scan is resampled
#: along the axis. Below it the growth plate still lies within a few slices and resampling
#: (linear interpolation) would cost more than it gains.
ALIGN_MIN_DEG = 3.0

#: Stages reported to the progress callback, in order ("thickness": Tb.Th, Tb.Sp and Tb.N;
#: "structure": Conn, SMI, DA, Tb.Pf, then density, the cortical VOI and the QC data; "render":
#: the 3-D renderings, when asked for). A pool worker re-divides numba's threads at each one.
STAGES = ("read", "growth plate", "voi", "thickness", "structure", "render")



@dataclass
class ScanResult:
    """The row of ``morphometry.csv`` plus everything written beside it."""

    row: dict[str, Any]
    details: dict[str, Any]
    qc: QcData | None
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def analyze_scan(
    path: str | Path, config: AnalysisConfig | None = None, *, threshold: float | None = None
) -> dict[str, Any]:
    """Analyse one scan folder and return its row of ``morphometry.csv``.

    Parameters
    ----------
    path : str or Path
        An NRecon reconstruction folder (or a plain TIFF stack with ``config.voxel_size_um``).
    config : AnalysisConfig, optional
        Analysis settings (defaults: automatic VOI, Otsu threshold of this scan).
    threshold : float, optional
        Global threshold in grey values, overriding ``config.threshold`` (the batch passes
        the study-wide pooled Otsu threshold here).

    Returns
    -------
    dict
        Column name → value, with the names and units of docs/DESIGN.md §3 (see
        :mod:`ctmorph.columns`).
    """
    return measure_scan(path, config, threshold=threshold).row


def measure_scan(
    path: str | Path | Scan,
    config: AnalysisConfig | None = None,
    *,
    threshold: float | None = None,
    threshold_method: str | None = None,
    threshold_attenuation: float | None = None,
    progress: Progress | None = None,
    renders: bool = False,
) -> ScanResult:
    """Analyse one scan; see :func:`analyze_scan`. Also returns details and QC arrays.

    Parameters
    ----------
    path : str, Path or Scan
        The scan folder, or the scan already opened by :func:`ctmorph.io.read_scan`.
    config : AnalysisConfig, optional
        Settings.
    threshold : float, optional
        The grey threshold of this scan (the batch's study threshold, converted to this
        scan's grey scale), overriding ``config.threshold``.
    threshold_method : str, optional
        How ``threshold`` was found, for the row.
    threshold_attenuation : float, optional
        ``threshold`` in attenuation as the study states it (reported as is); by default
        computed from the scan's CS window.
    progress : callable, optional
        Called with each stage name of :data:`STAGES`.
    renders : bool
        Also make the 3-D renderings of the VOI and the distal femur (``QcData.renders``,
        :mod:`ctmorph.pipeline.render`; a few seconds).

    Raises
    ------
    CtmorphError
        Any input, segmentation or configuration problem, with a one-line message that
        names the scan. When the failure came after the scan's longitudinal sections were
        made (``roi="auto"``), the exception's ``review`` attribute holds them
        (:class:`ctmorph.qc.ReviewViews`), so a person can place the VOI by hand.
    """
    views: list[ReviewViews] = []
    try:
        return _measure_scan(path, config, threshold=threshold,
                             threshold_method=threshold_method,
                             threshold_attenuation=threshold_attenuation, progress=progress,
                             renders=renders, views=views)
    except CtmorphError as exc:
        if views:
            exc.review = views[0]  # type: ignore[attr-defined]
        raise


@dataclass
class _Threshold:
    """Stage 1: the scan's grey threshold, how it was found, and the calibration it uses."""

    grey: float
    attenuation: float | None
    method: str
    hist: np.ndarray | None  # the scan's own histogram when its Otsu threshold was taken
    cal: Calibration | None
    window: tuple[float, float] | None
    mismatch: list[str]


@dataclass
class _Frame:
    """Stage 2: the streaming pass, in the frame the rest of the scan is measured in."""

    src: Scan | AlignedSource
    seg: Segmenter
    p1: Pass1
    axis: BoneAxis | None
    hist: np.ndarray


@dataclass
class _Voi:
    """Stage 3: where the VOI is and its slab (``a .. b`` = VOI ``z0 .. z1`` plus context)."""

    z0: int
    z1: int
    a: int
    b: int
    ref_index: int | None = None
    distal_end: str | None = None
    bone: np.ndarray | None = None
    grey: np.ndarray | None = None
    valid: np.ndarray | None = None
    voi: np.ndarray | None = None  # None: a large slab, measured from slab.store
    region: np.ndarray | None = None
    slab: Slab | None = None
    located: FemurVoi | None = None
    flags: list[str] = field(default_factory=list)
    profiles: dict[str, np.ndarray] = field(default_factory=dict)
    offset_mm: float | None = None
    bone_length_mm: float | None = None
    cortical_range: tuple[int, int] | None = None


def _measure_scan(
    path: str | Path | Scan,
    config: AnalysisConfig | None,
    *,
    threshold: float | None,
    threshold_method: str | None,
    threshold_attenuation: float | None,
    progress: Progress | None,
    renders: bool,
    views: list[ReviewViews],
) -> ScanResult:
    cfg = config or AnalysisConfig()
    step = progress or (lambda stage: None)
    t_start = time.perf_counter()
    step("read")
    scan = path if isinstance(path, Scan) else read_scan(path, voxel_size_um=cfg.voxel_size_um)
    thr = _threshold(scan, cfg, threshold, threshold_method, threshold_attenuation)
    roi_mask = None
    if cfg.roi == "mask":
        roi_mask = open_roi_mask(cfg.roi_mask, shape=scan.shape)  # checked before any work
    frame = _stream(scan, cfg, thr, views, preview=renders)
    step("growth plate")
    if cfg.roi == "auto":
        v = _auto_voi(scan, frame, cfg, thr, step)
    elif cfg.roi == "mask":
        step("voi")
        v = _mask_voi(scan, frame, cfg, roi_mask)
    else:  # full, envelope: the whole scan, kept by pass 1
        step("voi")
        v = _whole_voi(scan, frame, cfg, thr)
    if v.voi is not None and not v.voi.any():
        raise SegmentationError(f"{scan.name}: the VOI is empty")
    v.cortical_range = _cortical_range(scan, cfg, v)
    step("thickness")
    in_memory = v.slab is None or v.slab.store is None
    with (RenderingsBeside(_slab_view(scan, frame, v), in_memory=in_memory) if renders
          else contextlib.nullcontext()) as pictures:
        metrics, histograms, maps = _measure_voi(scan, frame, cfg, thr, v, step)
        cortical = _measure_cortex(scan, frame, cfg, thr, v)
        row = _row(scan, frame, cfg, thr, v, metrics, cortical)
        qc = _qc(scan, frame, cfg, thr, v)
        if renders:
            step("render")
            qc.renders = pictures.result()
    details = _details(scan, frame, cfg, thr, v, row, metrics, histograms)
    row["qc_flags"] = "; ".join([*v.flags, *qc_flags(row)])
    logger.info("%s: done in %.1f s", scan.name, time.perf_counter() - t_start)
    return ScanResult(row=row, details=details, qc=qc, maps=maps)


def _threshold(scan: Scan, cfg: AnalysisConfig, threshold: float | None,
               threshold_method: str | None, threshold_attenuation: float | None) -> _Threshold:
    """The scan's grey threshold: density, attenuation, the study's, its own Otsu or fixed."""
    cal = load_calibration(cfg.calibration) if cfg.calibration else None
    window = None
    mismatch: list[str] = []
    if cal is not None:
        window = scan_window(scan)
        mismatch = check_settings(cal, scan.log.settings() if scan.log else None)
        if mismatch:
            msg = (f"{scan.name}: reconstruction settings differ from the calibration "
                   f"{cfg.calibration}: {'; '.join(mismatch)}")
            if cfg.strict_calibration:
                raise CalibrationError(msg)
            logger.warning("%s", msg)

    hist: np.ndarray | None = None
    if cal is not None and cfg.threshold_density is not None:
        thr = density_to_grey(cfg.threshold_density, cal, window, scan.gmax)
        method = f"density {cfg.threshold_density:g} g/cm³ HA"
    elif cfg.threshold_attenuation is not None:
        thr = attenuation_to_grey(cfg.threshold_attenuation, scan_window(scan), scan.gmax)
        threshold_attenuation = cfg.threshold_attenuation
        method = "fixed attenuation"
    elif threshold is not None:
        thr = float(threshold)
        method = threshold_method or "given"
    elif cfg.threshold == "otsu":
        hist = scan_histogram(scan)  # one extra streamed read: the threshold comes first
        thr = otsu_threshold(hist)
        method = "otsu (this scan only)"
    else:
        thr = float(cfg.threshold)
        method = "fixed"
    if thr >= scan.gmax or thr < 0:
        raise SegmentationError(
            f"{scan.name}: threshold {thr:g} is outside the grey range 0..{scan.gmax} of the slices"
        )
    if threshold_attenuation is None and scan.cs_window is not None:
        threshold_attenuation = float(grey_to_attenuation(thr, scan_window(scan), scan.gmax))
    return _Threshold(thr, threshold_attenuation, method, hist, cal, window, mismatch)


def _stream(scan: Scan, cfg: AnalysisConfig, thr: _Threshold, views: list[ReviewViews], *,
            preview: bool) -> _Frame:
    """Pass 1 over the scan (per-slice summaries and the QC sections only; ``--roi
    full/envelope`` keep the whole scan; the femur's low-resolution ``preview`` for the
    renderings), and for a tilted femur again along its axis."""
    seg = Segmenter(scan, thr.grey, cfg)
    preview = preview and cfg.roi == "auto"
    p1 = stream_pass(scan, seg, keep_volume=cfg.roi in ("full", "envelope"),
                     need_hist=thr.hist is None, need_maps=cfg.roi == "auto",
                     need_preview=preview)
    hist = thr.hist if thr.hist is not None else p1.hist
    if not p1.any_bone:
        raise SegmentationError(f"{scan.name}: no voxel is above the threshold {thr.grey:g}")
    # a femur mounted at an angle: fit its axis to the envelope centroids and, when the tilt
    # matters, run everything else in a frame resampled along the axis
    src: Scan | AlignedSource = scan
    axis: BoneAxis | None = None
    if cfg.roi == "auto" and cfg.align == "auto":
        axis = fit_axis(p1, scan.spacing, scan.name)
        if axis is not None and axis.tilt_deg >= ALIGN_MIN_DEG:
            logger.info("%s: bone axis tilted %.1f° from the slice normal: aligning",
                        scan.name, axis.tilt_deg)
            src = AlignedSource(scan, axis)
            seg = Segmenter(src, thr.grey, cfg)
            p1 = stream_pass(src, seg, keep_volume=False, need_hist=False,
                             need_preview=preview)
    if cfg.roi == "auto":  # the review's sections, kept for a scan that fails from here on
        iy, ix = p1.through_axis(scan.spacing)
        views.append(ReviewViews(p1.row_grey[iy], p1.col_grey[ix], np.asarray(src.sections),
                                 scan.spacing[1], cfg.distal_end if cfg.distal_end != "auto"
                                 else None))
    return _Frame(src, seg, p1, axis, hist)


def _auto_voi(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold,
              step: Progress) -> _Voi:
    """The growth plate, the trabecular VOI from it, and its slab (``--roi auto``)."""
    spacing, nz = scan.spacing, scan.shape[0]
    offset_mm, height_mm = cfg.roi_offset_mm, cfg.roi_height_mm
    bone_length_mm: float | None = None
    try:
        if cfg.roi_offset_frac is not None or cfg.roi_height_frac is not None:
            area = frame.p1.femur.counts["envelope"] * (spacing[1] * spacing[2])
            first, last = whole_bone_extent(area, spacing[0])
            bone_length_mm = (last - first + 1) * spacing[0]
            if cfg.roi_offset_frac is not None:
                offset_mm = cfg.roi_offset_frac * bone_length_mm
            if cfg.roi_height_frac is not None:
                height_mm = cfg.roi_height_frac * bone_length_mm
            logger.info("%s: bone length %.2f mm: VOI %.2f mm from %.2f mm proximal of "
                        "the reference", scan.name, bone_length_mm, height_mm, offset_mm)
        located = locate_voi(frame.seg, frame.p1.femur, cfg, offset_mm=offset_mm,
                             height_mm=height_mm, sections=np.asarray(frame.src.sections))
    except SegmentationError as exc:
        raise SegmentationError(f"{scan.name}: {exc}") from None
    z0, z1 = located.z0, located.z1
    ctx = int(round(cfg.context_mm / spacing[0]))
    a, b = max(0, z0 - ctx), min(nz, z1 + ctx)
    v = _Voi(z0, z1, a, b, located.ref_index, located.distal_end, located=located,
             offset_mm=offset_mm, bone_length_mm=bone_length_mm)
    if located.plate is not None:
        v.flags += list(located.plate.flags)
    v.profiles = located.profiles

    step("voi")
    mid = (z0 + z1) // 2
    axial_at = {"top": z1 - 1, "middle": mid, "bottom": z0}
    if v.distal_end == "last":
        axial_at = {"top": z0, "middle": mid, "bottom": z1 - 1}
    # in-plane the envelope's box (+2 px) holds every bone voxel of the femur and all of
    # the marrow space (the endocortical region), so cropping to it changes no sphere
    slab = load_slab(frame.seg, a, b, located.filled, frame.p1.femur, pad=2,
                     want_grey=thr.cal is not None, axial_at=axial_at,
                     store_voi=(z0 - a, z1 - a))
    v.slab, v.region = slab, slab.region
    if slab.store is None:
        v.voi = np.zeros_like(slab.region)
        v.voi[z0 - a : z1 - a] = slab.region[z0 - a : z1 - a]
        per_slice = slab.region.sum(axis=(1, 2))
    else:  # a large slab, measured block by block from the store
        per_slice = slab.store.region_count
    try:
        check_voi_slices(per_slice[z0 - a : z1 - a], z0)
    except SegmentationError as exc:
        raise SegmentationError(f"{scan.name}: {exc}") from None
    area = per_slice[z0 - a : z1 - a].astype(np.float64)
    thin = int(np.count_nonzero(area < 0.25 * float(np.median(area))))
    if thin:  # the VOI reaches past the marrow cavity (a bone end, the cortex closing)
        v.flags.append(f"VOI leaves the endocortical region ({thin} of {z1 - z0} "
                       "slices with less than a quarter of its marrow space)")
    region_area = np.full(nz, np.nan)
    region_area[a:b] = per_slice * (spacing[1] * spacing[2])
    v.profiles["region_area_mm2"] = region_area
    v.bone, v.grey = slab.bone, slab.grey  # grey only when calibrated (density)
    v.valid = (v.grey != 0) if frame.src.no_data_zero and v.grey is not None else None
    return v


def _mask_voi(scan: Scan, frame: _Frame, cfg: AnalysisConfig, roi_mask) -> _Voi:
    """A VOI drawn by hand (``--roi-mask``) and its slab."""
    nz, ny, nx = scan.shape
    z0, z1 = roi_mask.z_range
    ctx = int(round(cfg.context_mm / scan.spacing[0]))
    a, b = max(0, z0 - ctx), min(nz, z1 + ctx)
    bone_s = np.empty((b - a, ny, nx), dtype=bool)
    grey_s = np.empty((b - a, ny, nx), dtype=scan.dtype)
    chunk = chunk_slices(ny * nx)[0]
    for s in range(a, b, chunk):
        e = min(b, s + chunk)
        bone_s[s - a : e - a], grey_s[s - a : e - a] = frame.seg.chunk(s, e)
    valid_s = (grey_s != 0) if frame.src.no_data_zero else None
    # the mask's wall is not a surface: marrow spheres may reach past it (docs/DESIGN.md §4)
    region = valid_s if valid_s is not None else np.ones(bone_s.shape, dtype=bool)
    voi = np.zeros(bone_s.shape, dtype=bool)
    voi[z0 - a : z1 - a] = roi_mask.read(z0, z1)
    voi &= region
    return _Voi(z0, z1, a, b, bone=bone_s, grey=grey_s, valid=valid_s, voi=voi, region=region)


def _whole_voi(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold) -> _Voi:
    """Every voxel with data (``--roi full``), or inside the specimen (``--roi envelope``)."""
    nz = scan.shape[0]
    bone_s = frame.p1.volume
    grey_s = scan.read_volume() if thr.cal is not None else None
    valid_s = frame.p1.valid
    region = valid_s if valid_s is not None else np.ones(bone_s.shape, dtype=bool)
    if cfg.roi == "envelope":
        # the specimen's outer surface bounds the marrow, as the endocortical one does
        region = envelope_region(bone_s, spacing=scan.spacing) & region
    zs = np.flatnonzero(region.any(axis=(1, 2)))
    z0, z1 = (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, nz)
    return _Voi(z0, z1, 0, nz, bone=bone_s, grey=grey_s, valid=valid_s, voi=region,
                region=region)


def _cortical_range(scan: Scan, cfg: AnalysisConfig, v: _Voi) -> tuple[int, int] | None:
    """The cortical VOI's slices (``--cortical-offset-mm``), checked before the trabecular
    measure so that a scan that fails here fails fast."""
    if cfg.cortical_offset_mm is None:
        return None
    if cfg.roi == "auto" and v.ref_index is None:
        raise SegmentationError(
            f"{scan.name}: the cortical VOI is placed from the growth-plate reference, and this "
            "scan has none (a VOI given by hand, no plate found): give its ref_slice too"
        )
    if v.ref_index is None:
        return None
    dz = scan.spacing[0]
    span = proximal_slices(v.ref_index, v.distal_end, scan.shape[0],
                           int(round(cfg.cortical_offset_mm / dz)),
                           int(round(cfg.cortical_height_mm / dz)))
    c0, c1 = span or (0, 0)
    if c1 <= c0:
        raise SegmentationError(
            f"{scan.name}: the scan ends before the cortical VOI "
            f"({cfg.cortical_offset_mm:g}-{cfg.cortical_offset_mm + cfg.cortical_height_mm:g}"
            " mm proximal of the growth plate)"
        )
    return c0, c1


def _measure_voi(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold, v: _Voi,
                 step: Progress
                 ) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """The trabecular and structure measures of the VOI, and its density when calibrated."""
    sv = _slab_view(scan, frame, v)
    store = v.slab.store if v.slab is not None else None
    # a slab held as arrays is read as one block (the whole-array functions' numbers); a
    # packed store in bounded blocks
    chunk = None if store is not None else sv.src.shape[0]
    try:
        metrics, histograms, maps = measure_voi(sv.src, scan.spacing, cfg, sv.crop, sv.plane,
                                                step, chunk_slices=chunk)
    except SegmentationError as exc:
        raise SegmentationError(f"{scan.name}: {exc}") from None
    if thr.cal is not None and store is not None:
        metrics.update(density_metrics_chunked(
            store, scan_window=thr.window, gmax=scan.gmax, calibration=thr.cal,
            tmd_erosion_vox=cfg.tmd_erosion_vox, no_data_zero=frame.src.no_data_zero))
    elif thr.cal is not None:
        metrics.update(density_metrics(
            v.grey, v.bone, v.voi, scan_window=thr.window, gmax=scan.gmax,
            calibration=thr.cal, tmd_erosion_vox=cfg.tmd_erosion_vox, valid=v.valid))
    return metrics, histograms, maps


def _measure_cortex(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold,
                    v: _Voi) -> dict[str, Any]:
    """The cortical parameters of the cortical VOI (empty without one)."""
    if v.cortical_range is None:
        return {}
    c0, c1 = v.cortical_range
    cs = load_slab(frame.seg, c0, c1, v.located.filled, frame.p1.femur, pad=2,
                   want_grey=thr.cal is not None, want_envelope=True)
    # cortical bone: bone outside the endocortical region, so trabeculae attached to the
    # endosteal surface are not counted as cortex
    cslab = cs.bone & ~cs.region
    try:
        cortical = cortical_morphometry(cslab, cs.envelope, spacing=scan.spacing,
                                        thickness_convention=cfg.thickness_convention)
    except SegmentationError as exc:
        raise SegmentationError(f"{scan.name}: cortical VOI: {exc}") from None
    cortical = {"ct_first_slice": int(frame.src.sections[c0]),
                "ct_last_slice": int(frame.src.sections[c1 - 1]), **cortical}
    if thr.cal is not None:
        dens = density_metrics(
            cs.grey, cslab, np.ones_like(cslab), scan_window=thr.window, gmax=scan.gmax,
            calibration=thr.cal, tmd_erosion_vox=cfg.tmd_erosion_vox,
            valid=(cs.grey != 0) if frame.src.no_data_zero else None,
        )
        cortical["Ct.TMD"] = dens["TMD"]
    return cortical


def _row(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold, v: _Voi,
         metrics: dict[str, float], cortical: dict[str, Any]) -> dict[str, Any]:
    """The row of ``morphometry.csv`` (columns of :mod:`ctmorph.columns`), without its flags."""
    sections, spacing, cal = frame.src.sections, scan.spacing, thr.cal
    auto = cfg.roi == "auto"
    row: dict[str, Any] = {
        "scan": scan.name,
        "status": "ok",
        "error": "",
        "voxel_um": scan.voxel_size_um,
        "threshold": thr.grey,
        "threshold_attenuation": thr.attenuation,
        "threshold_method": thr.method,
        "threshold_density": (
            float(grey_to_density(thr.grey, cal, thr.window, scan.gmax))
            if cal is not None else None
        ),
        "calibration_mismatch": "; ".join(thr.mismatch) if cal is not None else None,
        "roi": cfg.roi,
        "distal_end": v.distal_end or "",
        "ref_slice": int(sections[v.ref_index]) if v.ref_index is not None else None,
        "voi_source": v.located.source if auto else None,
        "plate_confidence": (v.located.plate.confidence
                             if auto and v.located.plate is not None else None),
        "voi_first_slice": int(sections[v.z0]),
        "voi_last_slice": int(sections[v.z1 - 1]),
        "voi_offset_mm": v.offset_mm if auto else None,
        "voi_height_mm": (v.z1 - v.z0) * spacing[0],
        "voi_offset_frac": cfg.roi_offset_frac,
        "voi_height_frac": cfg.roi_height_frac,
        "bone_length_mm": v.bone_length_mm,
        "roi_mask": cfg.roi_mask,
        "plate_end_distance_mm": v.located.end_distance_mm if auto else None,
        "axis_tilt_deg": frame.axis.tilt_deg if frame.axis is not None else None,
        "axis_aligned": frame.src is not scan,
    }
    row.update(metrics)
    row.update(cortical)
    row.update({
        "smooth_sigma_vox": cfg.smooth_sigma_vox,
        "thickness_convention": cfg.thickness_convention,
        "n_slices": scan.shape[0],
        "input_hash": scan.input_hash(),
        "config_hash": cfg.digest(),
        "ctmorph_version": __version__,
    })
    return row


def _qc(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold, v: _Voi) -> QcData:
    """The QC pictures' data: the longitudinal section through the bone axis (from pass 1)
    with the VOI on it from the loaded slab, and three axial sections of the VOI."""
    _, ny, nx = scan.shape
    nz = scan.shape[0]
    p1, sections, a, b = frame.p1, frame.src.sections, v.a, v.b
    iy, ix = p1.through_axis(scan.spacing)
    cy = int(p1.rows[iy])
    long_voi = np.zeros((nz, nx), dtype=bool)
    axials: list[AxialQc] = []
    store = v.slab.store if v.slab is not None else None
    if v.slab is not None:
        ys, xs = v.slab.crop
        if ys.start <= cy < ys.stop:
            if store is None:
                long_voi[a:b, xs] = v.voi[:, cy - ys.start, :]
            else:
                for c0, c1 in block_ranges(0, b - a, 64):
                    long_voi[a + c0 : a + c1, xs] = store.read(c0, c1).voi[:, cy - ys.start, :]
        for label, (idx, grey2, bone2) in v.slab.axials.items():
            voi2 = np.zeros((ny, nx), dtype=bool)
            voi2[ys, xs] = (v.voi[idx - a] if store is None
                            else store.read(idx - a, idx - a + 1).voi[0])
            axials.append(AxialQc(label, idx, int(sections[idx]), grey2, bone2, voi2))
        if store is not None:
            store.close()
    else:
        long_voi[a:b] = v.voi[:, cy, :]
        labels = (("bottom", v.z0), ("middle", (v.z0 + v.z1) // 2), ("top", v.z1 - 1))
        for label, idx in labels:
            axials.append(AxialQc(label, idx, int(sections[idx]),
                                  frame.src.read_slab(idx, idx + 1)[0],
                                  v.bone[idx - a].copy(), v.voi[idx - a].copy()))
    return QcData(
        longitudinal=p1.row_grey[iy],
        longitudinal_bone=p1.row_bone[iy],
        sagittal=p1.col_grey[ix] if cfg.roi == "auto" else None,
        distal_end=v.distal_end,
        mm_per_px=scan.spacing[1],
        longitudinal_voi=long_voi,
        axials=axials,
        histogram=frame.hist,
        threshold=thr.grey,
        ref_index=v.ref_index,
        voi_range=(v.z0, v.z1),
        sections=np.asarray(sections),
        cortical_range=v.cortical_range,
        axis_tilt_deg=frame.axis.tilt_deg if frame.axis is not None else None,
        profiles=v.profiles,
    )


def _slab_view(scan: Scan, frame: _Frame, v: _Voi) -> SlabView:
    """The VOI slab as a source (arrays or the packed store) with its place in the scan: what
    the measures and the renderings (:mod:`.render`) read."""
    _, ny, nx = scan.shape
    store = v.slab.store if v.slab is not None else None
    return SlabView(store if store is not None else ArraySource(v.bone, v.voi, v.region), v.a,
                    (v.z0, v.z1),
                    v.slab.crop if v.slab is not None else (slice(0, ny), slice(0, nx)),
                    (ny, nx), scan.spacing, frame.p1.preview, v.distal_end != "last",
                    scan.name)


def voi_slab(path: str | Path | Scan, config: AnalysisConfig | None = None, *,
             threshold: float | None = None) -> SlabView:
    """The VOI slab of one scan, located as :func:`measure_scan` does but not measured, with
    pass 1's low-resolution bone: what ``ctmorph render`` draws.

    Parameters
    ----------
    path : str, Path or Scan
        The scan folder or the opened scan.
    config : AnalysisConfig, optional
        Settings (threshold, ROI, VOI placement).
    threshold : float, optional
        The scan's grey threshold (e.g. the study's, from its ``morphometry.json``).

    Raises
    ------
    CtmorphError
        As :func:`measure_scan`, with a one-line message naming the scan.
    """
    cfg = config or AnalysisConfig()
    scan = path if isinstance(path, Scan) else read_scan(path, voxel_size_um=cfg.voxel_size_um)
    thr = _threshold(scan, cfg, threshold, None, None)
    frame = _stream(scan, cfg, thr, [], preview=True)
    if cfg.roi == "auto":
        v = _auto_voi(scan, frame, cfg, thr, lambda stage: None)
    elif cfg.roi == "mask":
        v = _mask_voi(scan, frame, cfg, open_roi_mask(cfg.roi_mask, shape=scan.shape))
    else:
        v = _whole_voi(scan, frame, cfg, thr)
    return _slab_view(scan, frame, v)


def _details(scan: Scan, frame: _Frame, cfg: AnalysisConfig, thr: _Threshold, v: _Voi,
             row: dict[str, Any], metrics: dict[str, float], histograms: dict[str, Any]
             ) -> dict[str, Any]:
    """Everything written to the scan's ``morphometry.json`` beside the row."""
    axis = frame.axis
    return {
        "scan": scan.describe(),
        "config": cfg.to_dict(),
        "threshold": {"grey": thr.grey, "attenuation": thr.attenuation, "method": thr.method},
        "voi": {
            "ref_index": v.ref_index,
            "z0": v.z0,
            "z1": v.z1,
            "context_slices": [v.a, v.b],
            "distal_end": v.distal_end,
            "axis": None if axis is None else {
                "tilt_deg": axis.tilt_deg,
                "direction_zyx": [float(x) for x in axis.direction],
                "point_mm": [float(x) for x in axis.point],
                "slices_used": axis.n_slices_used,
                "residual_mm": axis.residual_mm,
                "aligned": frame.src is not scan,
            },
        },
        "results": metrics,
        "histograms": histograms,
        "calibration": thr.cal.to_dict() if thr.cal is not None else None,
        "versions": software_versions(),
        "input_hash": row["input_hash"],
        "config_hash": row["config_hash"],
    }
