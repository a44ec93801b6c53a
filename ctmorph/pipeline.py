"""One scan: load → segment → VOI → measure → a result row with provenance.

:func:`analyze_scan` is the public entry point (docs/DESIGN.md §6) and returns one row of
``morphometry.csv``; :func:`measure_scan` returns the row together with the details the batch
writes next to it (per-scan JSON, QC pictures).
"""

from __future__ import annotations

import logging
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .calibration import (
    attenuation_to_grey,
    check_settings,
    density_to_grey,
    grey_to_attenuation,
    grey_to_density,
    load_calibration,
    scan_window,
)
from .config import AnalysisConfig
from .errors import CalibrationError, CtmorphError, SegmentationError
from .io import Scan, read_scan
from .morphometry import (
    anisotropy,
    connectivity,
    cortical_morphometry,
    pattern_factor,
    smi,
    trabecular_analysis,
)
from .morphometry.anisotropy import anisotropy_chunked
from .morphometry.connectivity import connectivity_chunked
from .morphometry.density import density_metrics, density_metrics_chunked
from .morphometry.pattern import pattern_factor_chunked
from .morphometry.smi import smi_chunked
from .morphometry.trabecular import trabecular_chunked
from .morphometry.zsource import Block, ZSource, block_ranges
from .qc import AxialQc, QcData, ReviewViews, qc_flags
from .segment.axis import AlignedSource, BoneAxis, fit_bone_axis
from .segment.femur import FemurStream, FemurVoi, proximal_slices, section_index
from .segment.threshold import binarize, despeckle_core, grey_histogram, otsu_threshold
from .segment.voi import envelope_region, open_roi_mask, whole_bone_extent

__all__ = ["analyze_scan", "measure_scan", "ScanResult", "QcData", "STAGES", "software_versions"]

logger = logging.getLogger(__name__)

#: Bone-axis tilt (degrees from the slice normal) from which an auto-ROI scan is resampled
#: along the axis. Below it the growth plate still lies within a few slices and resampling
#: (linear interpolation) would cost more than it gains.
ALIGN_MIN_DEG = 3.0

#: Stages reported to the progress callback, in order ("thickness": Tb.Th, Tb.Sp and Tb.N;
#: "structure": Conn, SMI, DA, Tb.Pf, then density, the cortical VOI and the QC data). A pool
#: worker re-divides numba's threads at each one.
STAGES = ("read", "growth plate", "voi", "thickness", "structure")

Progress = Callable[[str], None]


@dataclass
class ScanResult:
    """The row of ``morphometry.csv`` plus everything written beside it."""

    row: dict[str, Any]
    details: dict[str, Any]
    qc: QcData | None
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def software_versions() -> dict[str, str]:
    """Versions of ctmorph, Python and the numerical libraries, for provenance."""
    import numba
    import scipy
    import skimage
    import tifffile

    return {
        "ctmorph": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "numba": numba.__version__,
        "tifffile": tifffile.__version__,
    }


def structure_metrics(
    bone: np.ndarray, voi: np.ndarray, *, spacing: tuple[float, float, float]
) -> dict[str, float]:
    """Connectivity, SMI and MIL anisotropy of the bone in the VOI (context around it).

    Returns the ``Euler``, ``Euler.corrected``, ``Conn``, ``Conn.D`` (1/mm³), ``SMI``,
    ``SMI+``, ``SMI-``, ``SMI.concave_fraction``, ``DA``, ``MIL.min/mid/max`` (mm) and
    ``MIL.dir.z/y/x`` and ``Tb.Pf`` (1/mm) columns; see :mod:`ctmorph.columns` for definitions.
    """
    out: dict[str, float] = {}
    out.update(connectivity(bone, voi, spacing=spacing))
    s = smi(bone, voi, spacing=spacing)
    out.update({"SMI": s["SMI"], "SMI+": s["SMI+"], "SMI-": s["SMI-"],
                "SMI.concave_fraction": s["concave_fraction"]})
    out.update(anisotropy(bone, voi, spacing=spacing).as_dict())
    out["Tb.Pf"] = pattern_factor(bone, voi, spacing=spacing)
    return {k: float(v) for k, v in out.items()}


class ThicknessHistogram:
    """Histogram of local-thickness values with bins one voxel wide, added chunk by chunk.

    Bin ``k`` holds the values ``v`` with ``floor(v / bin_mm) = k`` (the last bin also takes
    the top edge); counts are voxels, so the histogram is volume-weighted like Tb.Th and Tb.Sp.
    """

    def __init__(self, bin_mm: float) -> None:
        self.bin_mm = float(bin_mm)
        self.counts = np.zeros(0, dtype=np.int64)
        self.vmax = 0.0

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (mm)."""
        if values.size == 0:
            return
        self.vmax = max(self.vmax, float(values.max()))
        idx = np.floor(values.astype(np.float64) / self.bin_mm).astype(np.int64)
        c = np.bincount(np.maximum(idx, 0))
        if c.size > self.counts.size:
            c[: self.counts.size] += self.counts
            self.counts = c
        else:
            self.counts[: c.size] += c

    def result(self) -> dict[str, list]:
        """``{"bin_edges_mm": [...], "counts": [...]}``."""
        n = max(1, int(np.ceil(self.vmax / self.bin_mm + 1e-9)))
        counts = np.zeros(n, dtype=np.int64)
        k = min(n, self.counts.size)
        counts[:k] = self.counts[:k]
        counts[n - 1] += int(self.counts[n:].sum())
        return {"bin_edges_mm": [round(float(e), 9) for e in np.arange(n + 1) * self.bin_mm],
                "counts": [int(c) for c in counts]}


def thickness_histogram(values: np.ndarray, bin_mm: float) -> dict[str, list]:
    """Histogram of local-thickness values (mm) with bins one voxel wide
    (see :class:`ThicknessHistogram`).

    Returns ``{"bin_edges_mm": [...], "counts": [...]}``.
    """
    h = ThicknessHistogram(bin_mm)
    h.add(values)
    return h.result()


def scan_histogram(scan: Scan) -> np.ndarray:
    """Grey histogram of a whole scan, read slice by slice (no-data zeros excluded)."""
    hist = np.zeros(scan.gmax + 1, dtype=np.int64)
    for i in range(scan.shape[0]):
        hist += grey_histogram(scan.read_slice(i), gmax=scan.gmax, no_data_zero=scan.no_data_zero)
    return hist


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
                             views=views)
    except CtmorphError as exc:
        if views:
            exc.review = views[0]  # type: ignore[attr-defined]
        raise


def _measure_scan(
    path: str | Path | Scan,
    config: AnalysisConfig | None,
    *,
    threshold: float | None,
    threshold_method: str | None,
    threshold_attenuation: float | None,
    progress: Progress | None,
    views: list[ReviewViews],
) -> ScanResult:
    cfg = config or AnalysisConfig()
    step = progress or (lambda stage: None)
    t_start = time.perf_counter()
    step("read")
    scan = path if isinstance(path, Scan) else read_scan(path, voxel_size_um=cfg.voxel_size_um)
    spacing = scan.spacing
    nz, ny, nx = scan.shape

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
    roi_mask = None
    if cfg.roi == "mask":
        roi_mask = open_roi_mask(cfg.roi_mask, shape=scan.shape)  # checked before any work

    seg = _Segmenter(scan, thr, cfg)
    # pass 1: stream the scan; keep per-slice summaries and the QC section only
    # (--roi full/envelope: the whole scan is the VOI and is kept)
    p1 = _pass1(scan, seg, keep_volume=cfg.roi in ("full", "envelope"), need_hist=hist is None,
                need_maps=cfg.roi == "auto")
    if hist is None:
        hist = p1.hist
    if not p1.any_bone:
        raise SegmentationError(f"{scan.name}: no voxel is above the threshold {thr:g}")
    # a femur mounted at an angle: fit its axis to the envelope centroids and, when the tilt
    # matters, run everything else in a frame resampled along the axis
    src: Scan | AlignedSource = scan
    axis: BoneAxis | None = None
    if cfg.roi == "auto" and cfg.align == "auto":
        axis = _fit_axis(p1, spacing, scan.name)
        if axis is not None and axis.tilt_deg >= ALIGN_MIN_DEG:
            logger.info("%s: bone axis tilted %.1f° from the slice normal: aligning",
                        scan.name, axis.tilt_deg)
            src = AlignedSource(scan, axis)
            seg = _Segmenter(src, thr, cfg)
            p1 = _pass1(src, seg, keep_volume=False, need_hist=False)

    if cfg.roi == "auto":  # the review's sections, kept for a scan that fails from here on
        iy, ix = p1.through_axis(spacing)
        views.append(ReviewViews(p1.row_grey[iy], p1.col_grey[ix], np.asarray(src.sections),
                                 spacing[1], cfg.distal_end if cfg.distal_end != "auto"
                                 else None))

    step("growth plate")
    profiles: dict[str, np.ndarray] = {}
    plate_confidence: float | None = None
    finder_flags: list[str] = []  # the growth-plate finder's and the VOI's named doubts
    cortical_range: tuple[int, int] | None = None
    plate_end_mm: float | None = None
    offset_mm, height_mm = cfg.roi_offset_mm, cfg.roi_height_mm
    bone_length_mm: float | None = None
    slab = None
    if cfg.roi == "auto":
        try:
            if cfg.roi_offset_frac is not None or cfg.roi_height_frac is not None:
                area = p1.femur.counts["envelope"] * (spacing[1] * spacing[2])
                first, last = whole_bone_extent(area, spacing[0])
                bone_length_mm = (last - first + 1) * spacing[0]
                if cfg.roi_offset_frac is not None:
                    offset_mm = cfg.roi_offset_frac * bone_length_mm
                if cfg.roi_height_frac is not None:
                    height_mm = cfg.roi_height_frac * bone_length_mm
                logger.info("%s: bone length %.2f mm: VOI %.2f mm from %.2f mm proximal of "
                            "the reference", scan.name, bone_length_mm, height_mm, offset_mm)
            plate = _locate(seg, p1.femur, cfg, offset_mm=offset_mm, height_mm=height_mm,
                            sections=np.asarray(src.sections))
        except SegmentationError as exc:
            raise SegmentationError(f"{scan.name}: {exc}") from None
        z0, z1, ref_index, distal_end = plate.z0, plate.z1, plate.ref_index, plate.distal_end
        plate_end_mm = plate.end_distance_mm
        if plate.plate is not None:
            plate_confidence = plate.plate.confidence
            finder_flags += list(plate.plate.flags)
        profiles = plate.profiles
        ctx = int(round(cfg.context_mm / spacing[0]))
        a, b = max(0, z0 - ctx), min(nz, z1 + ctx)

        step("voi")
        mid = (z0 + z1) // 2
        axial_at = {"top": z1 - 1, "middle": mid, "bottom": z0}
        if distal_end == "last":
            axial_at = {"top": z0, "middle": mid, "bottom": z1 - 1}
        # in-plane the envelope's box (+2 px) holds every bone voxel of the femur and all of
        # the marrow space (the endocortical region), so cropping to it changes no sphere
        slab = _load_slab(seg, a, b, plate.filled, p1.femur, pad=2,
                          want_grey=cal is not None, axial_at=axial_at,
                          store_voi=(z0 - a, z1 - a))
        region = slab.region
        if slab.store is None:
            voi = np.zeros_like(region)
            voi[z0 - a : z1 - a] = region[z0 - a : z1 - a]
            per_slice = region.sum(axis=(1, 2))
        else:  # a large slab, measured block by block from the store
            voi = None
            per_slice = slab.store.region_count
        voi_slices = per_slice[z0 - a : z1 - a] > 0
        if not voi_slices.any():
            raise SegmentationError(
                f"{scan.name}: the trabecular VOI is empty: no endocortical region in slices "
                f"{z0}..{z1 - 1}"
            )
        n_empty = int(np.count_nonzero(~voi_slices))
        if n_empty > 0.1 * (z1 - z0):
            raise SegmentationError(
                f"{scan.name}: the trabecular VOI is incomplete: {n_empty} of {z1 - z0} slices "
                "have no endocortical region"
            )
        area = per_slice[z0 - a : z1 - a].astype(np.float64)
        thin = int(np.count_nonzero(area < 0.25 * float(np.median(area))))
        if thin:  # the VOI reaches past the marrow cavity (a bone end, the cortex closing)
            finder_flags.append(f"VOI leaves the endocortical region ({thin} of {z1 - z0} "
                                "slices with less than a quarter of its marrow space)")
        region_area = np.full(nz, np.nan)
        region_area[a:b] = per_slice * (spacing[1] * spacing[2])
        profiles["region_area_mm2"] = region_area
        bone_s, grey_s = slab.bone, slab.grey  # grey only when calibrated (density)
        valid_s = (grey_s != 0) if src.no_data_zero and grey_s is not None else None
    elif cfg.roi == "mask":
        step("voi")
        assert roi_mask is not None
        z0, z1 = roi_mask.z_range
        ref_index = distal_end = None
        ctx = int(round(cfg.context_mm / spacing[0]))
        a, b = max(0, z0 - ctx), min(nz, z1 + ctx)
        bone_s = np.empty((b - a, ny, nx), dtype=bool)
        grey_s = np.empty((b - a, ny, nx), dtype=scan.dtype)
        chunk = _chunk_slices(ny * nx)[0]
        for s in range(a, b, chunk):
            e = min(b, s + chunk)
            bone_s[s - a : e - a], grey_s[s - a : e - a] = seg.chunk(s, e)
        valid_s = (grey_s != 0) if src.no_data_zero else None
        # the mask's wall is not a surface: marrow spheres may reach past it (DESIGN §4)
        region = valid_s if valid_s is not None else np.ones(bone_s.shape, dtype=bool)
        voi = np.zeros(bone_s.shape, dtype=bool)
        voi[z0 - a : z1 - a] = roi_mask.read(z0, z1)
        voi &= region
    else:  # full, envelope: the whole scan, kept by pass 1
        step("voi")
        ref_index, distal_end = None, None
        a, b = 0, nz
        bone_s = p1.volume
        grey_s = scan.read_volume() if cal is not None else None
        valid_s = p1.valid
        region = valid_s if valid_s is not None else np.ones(bone_s.shape, dtype=bool)
        if cfg.roi == "envelope":
            # the specimen's outer surface bounds the marrow, as the endocortical one does
            region = envelope_region(bone_s, spacing=spacing) & region
        voi = region
        zs = np.flatnonzero(voi.any(axis=(1, 2)))
        z0, z1 = (int(zs[0]), int(zs[-1]) + 1) if zs.size else (0, nz)
    if voi is not None and not voi.any():
        raise SegmentationError(f"{scan.name}: the VOI is empty")

    if cfg.cortical_offset_mm is not None and cfg.roi == "auto" and ref_index is None:
        raise SegmentationError(
            f"{scan.name}: the cortical VOI is placed from the growth-plate reference, and this "
            "scan has none (a VOI given by hand, no plate found): give its ref_slice too"
        )
    if cfg.cortical_offset_mm is not None and ref_index is not None:
        # checked before the trabecular measure, so a scan that fails here fails fast
        span = proximal_slices(
            ref_index, distal_end, nz, int(round(cfg.cortical_offset_mm / spacing[0])),
            int(round(cfg.cortical_height_mm / spacing[0])),
        )
        c0, c1 = span or (0, 0)
        if c1 <= c0:
            raise SegmentationError(
                f"{scan.name}: the scan ends before the cortical VOI "
                f"({cfg.cortical_offset_mm:g}-{cfg.cortical_offset_mm + cfg.cortical_height_mm:g}"
                " mm proximal of the growth plate)"
            )
        cortical_range = (c0, c1)

    step("thickness")
    store = slab.store if slab is not None else None
    crop = slab.crop if slab is not None else (slice(0, ny), slice(0, nx))
    try:
        if store is None:
            metrics, histograms, maps = _measure_arrays(bone_s, voi, region, spacing, cfg, crop,
                                                        (b - a, ny, nx), step)
        else:
            metrics, histograms, maps = _measure_store(store, spacing, cfg, crop, (ny, nx), step)
    except SegmentationError as exc:
        raise SegmentationError(f"{scan.name}: {exc}") from None

    if cal is not None and store is not None:
        metrics.update(
            density_metrics_chunked(
                store, scan_window=window, gmax=scan.gmax, calibration=cal,
                tmd_erosion_vox=cfg.tmd_erosion_vox, no_data_zero=src.no_data_zero,
            )
        )
    elif cal is not None:
        metrics.update(
            density_metrics(
                grey_s, bone_s, voi, scan_window=window, gmax=scan.gmax,
                calibration=cal, tmd_erosion_vox=cfg.tmd_erosion_vox, valid=valid_s,
            )
        )

    cortical: dict[str, Any] = {}
    if cortical_range is not None:
        c0, c1 = cortical_range
        cs = _load_slab(seg, c0, c1, plate.filled, p1.femur, pad=2, want_grey=cal is not None,
                        want_envelope=True)
        # cortical bone: bone outside the endocortical region, so trabeculae attached to the
        # endosteal surface are not counted as cortex
        cslab = cs.bone & ~cs.region
        try:
            cortical = cortical_morphometry(
                cslab, cs.envelope, spacing=spacing,
                thickness_convention=cfg.thickness_convention,
            )
        except SegmentationError as exc:
            raise SegmentationError(f"{scan.name}: cortical VOI: {exc}") from None
        cortical = {"ct_first_slice": int(src.sections[c0]),
                    "ct_last_slice": int(src.sections[c1 - 1]), **cortical}
        if cal is not None:
            dens = density_metrics(
                cs.grey, cslab, np.ones_like(cslab), scan_window=window, gmax=scan.gmax,
                calibration=cal, tmd_erosion_vox=cfg.tmd_erosion_vox,
                valid=(cs.grey != 0) if src.no_data_zero else None,
            )
            cortical["Ct.TMD"] = dens["TMD"]

    sections = src.sections
    row: dict[str, Any] = {
        "scan": scan.name,
        "status": "ok",
        "error": "",
        "voxel_um": scan.voxel_size_um,
        "threshold": thr,
        "threshold_attenuation": threshold_attenuation,
        "threshold_method": method,
        "threshold_density": (
            float(grey_to_density(thr, cal, window, scan.gmax)) if cal is not None else None
        ),
        "calibration_mismatch": "; ".join(mismatch) if cal is not None else None,
        "roi": cfg.roi,
        "distal_end": distal_end or "",
        "ref_slice": int(sections[ref_index]) if ref_index is not None else None,
        "voi_source": plate.source if cfg.roi == "auto" else None,
        "plate_confidence": plate_confidence,
        "voi_first_slice": int(sections[z0]),
        "voi_last_slice": int(sections[z1 - 1]),
        "voi_offset_mm": offset_mm if cfg.roi == "auto" else None,
        "voi_height_mm": (z1 - z0) * spacing[0],
        "voi_offset_frac": cfg.roi_offset_frac,
        "voi_height_frac": cfg.roi_height_frac,
        "bone_length_mm": bone_length_mm,
        "roi_mask": cfg.roi_mask,
        "plate_end_distance_mm": plate_end_mm,
        "axis_tilt_deg": axis.tilt_deg if axis is not None else None,
        "axis_aligned": src is not scan,
    }
    row.update(metrics)
    row.update(cortical)
    row.update(
        {
            "smooth_sigma_vox": cfg.smooth_sigma_vox,
            "thickness_convention": cfg.thickness_convention,
            "n_slices": nz,
            "input_hash": scan.input_hash(),
            "config_hash": cfg.digest(),
            "ctmorph_version": __version__,
        }
    )

    # QC: the longitudinal section through the bone axis (from pass 1), VOI on it from the
    # loaded slab
    iy, ix = p1.through_axis(spacing)
    cy = int(p1.rows[iy])
    long_voi = np.zeros((nz, nx), dtype=bool)
    axials: list[AxialQc] = []
    if slab is not None:
        ys, xs = slab.crop
        if ys.start <= cy < ys.stop:
            if store is None:
                long_voi[a:b, xs] = voi[:, cy - ys.start, :]
            else:
                for c0, c1 in block_ranges(0, b - a, 64):
                    long_voi[a + c0 : a + c1, xs] = store.read(c0, c1).voi[:, cy - ys.start, :]
        for label, (idx, grey2, bone2) in slab.axials.items():
            voi2 = np.zeros((ny, nx), dtype=bool)
            voi2[ys, xs] = (voi[idx - a] if store is None
                            else store.read(idx - a, idx - a + 1).voi[0])
            axials.append(AxialQc(label, idx, int(sections[idx]), grey2, bone2, voi2))
        if store is not None:
            store.close()
    else:
        long_voi[a:b] = voi[:, cy, :]
        labels = (("bottom", z0), ("middle", (z0 + z1) // 2), ("top", z1 - 1))
        for label, idx in labels:
            axials.append(AxialQc(label, idx, int(sections[idx]), src.read_slab(idx, idx + 1)[0],
                                  bone_s[idx - a].copy(), voi[idx - a].copy()))
    qc = QcData(
        longitudinal=p1.row_grey[iy],
        longitudinal_bone=p1.row_bone[iy],
        sagittal=p1.col_grey[ix] if cfg.roi == "auto" else None,
        distal_end=distal_end,
        mm_per_px=spacing[1],
        longitudinal_voi=long_voi,
        axials=axials,
        histogram=hist,
        threshold=thr,
        ref_index=ref_index,
        voi_range=(z0, z1),
        sections=np.asarray(sections),
        cortical_range=cortical_range,
        axis_tilt_deg=axis.tilt_deg if axis is not None else None,
        profiles=profiles,
    )
    details = {
        "scan": scan.describe(),
        "config": cfg.to_dict(),
        "threshold": {"grey": thr, "attenuation": threshold_attenuation, "method": method},
        "voi": {
            "ref_index": ref_index,
            "z0": z0,
            "z1": z1,
            "context_slices": [a, b],
            "distal_end": distal_end,
            "axis": None if axis is None else {
                "tilt_deg": axis.tilt_deg,
                "direction_zyx": [float(v) for v in axis.direction],
                "point_mm": [float(v) for v in axis.point],
                "slices_used": axis.n_slices_used,
                "residual_mm": axis.residual_mm,
                "aligned": src is not scan,
            },
        },
        "results": metrics,
        "histograms": histograms,
        "calibration": cal.to_dict() if cal is not None else None,
        "versions": software_versions(),
        "input_hash": row["input_hash"],
        "config_hash": row["config_hash"],
    }
    row["qc_flags"] = "; ".join([*finder_flags, *qc_flags(row)])
    logger.info("%s: done in %.1f s", scan.name, time.perf_counter() - t_start)
    return ScanResult(row=row, details=details, qc=qc, maps=maps)


def _measure_arrays(bone_s: np.ndarray, voi: np.ndarray, region: np.ndarray,
                    spacing: tuple[float, float, float], cfg: AnalysisConfig,
                    crop: tuple[slice, slice], full_shape: tuple[int, int, int],
                    step: Progress,
                    ) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """Trabecular and structure metrics, thickness histograms and (``save_maps``) maps of a
    VOI held in memory (``bone_s``, ``voi``, ``region`` on the in-plane ``crop``); ``step``
    is told when the structure metrics start."""
    tb = trabecular_analysis(bone_s, voi, spacing=spacing, marrow_space=region,
                             convention=cfg.thickness_convention)
    metrics = dict(tb.metrics)
    step("structure")
    metrics.update(structure_metrics(bone_s, voi, spacing=spacing))
    # the local-thickness maps the numbers came from, over the VOI's bounding box
    z0b, z1b, y0b, y1b, x0b, x1b = tb.box
    in_box = (slice(z0b, z1b), slice(y0b, y1b), slice(x0b, x1b))
    voi_b, bone_b = voi[in_box], bone_s[in_box]
    marrow_b = voi_b & region[in_box] & ~bone_b
    histograms = {
        "Tb.Th": thickness_histogram(tb.thickness[voi_b & bone_b], spacing[0]),
        "Tb.Sp": thickness_histogram(tb.separation[marrow_b], spacing[0]),
    }
    del marrow_b
    maps: dict[str, np.ndarray] = {}
    if cfg.save_maps:
        ys, xs = crop
        for name, m in (("thickness", tb.thickness), ("separation", tb.separation)):
            full = np.zeros(full_shape, dtype=np.float32)
            full[:, ys, xs][in_box] = np.where(voi_b, m, np.float32(0.0))
            maps[name] = full
    return metrics, histograms, maps


def _measure_store(store: _SlabStore, spacing: tuple[float, float, float], cfg: AnalysisConfig,
                   crop: tuple[slice, slice], plane: tuple[int, int], step: Progress,
                   ) -> tuple[dict[str, float], dict[str, Any], dict[str, np.ndarray]]:
    """:func:`_measure_arrays` of a slab kept in a :class:`_SlabStore`, block by block: the
    same numbers (counts identical, means to float64 rounding) in bounded memory."""
    hists = {k: ThicknessHistogram(spacing[0]) for k in ("Tb.Th", "Tb.Sp")}
    names = {"Tb.Th": "thickness", "Tb.Sp": "separation"}
    maps: dict[str, np.ndarray] = {}
    if cfg.save_maps:
        maps = {n: np.zeros((store.shape[0], *plane), dtype=np.float32) for n in names.values()}
    ys, xs = crop

    def on_chunk(kind: str, c0: int, c1: int, values: np.ndarray, sel: np.ndarray) -> None:
        hists[kind].add(values[sel])
        if maps:
            maps[names[kind]][c0:c1, ys, xs] = np.where(sel, values, np.float32(0.0))

    metrics = trabecular_chunked(store, spacing=spacing, convention=cfg.thickness_convention,
                                 on_chunk=on_chunk)
    step("structure")
    metrics.update(structure_metrics_chunked(store, spacing=spacing))
    return metrics, {k: h.result() for k, h in hists.items()}, maps


# --------------------------------------------------------------------------------------------
# streaming: exact segmentation of slabs, pass 1 summaries, plate, VOI slab

#: Voxels segmented at once (smoothing and despeckle labels cost ~7 B/voxel), voxels per
#: envelope-map computation (~20 B/voxel), and the first despeckle halos tried (slices) before
#: ``max(min_bone_voxels, min_marrow_voxels) - 1`` (from which only a pore walled by no-data
#: voxels can be refused) and the always-exact ``min_bone_voxels + min_marrow_voxels``.
_CHUNK_VOXELS = 16_000_000
_MAP_VOXELS = 4_000_000
_HALOS = (16,)
#: Scans whose grey + bone volume fits in this many bytes are segmented once and kept
#: (no re-reading for the growth plate and the VOI slab); bigger scans are streamed.
_CACHE_BYTES = 384 * 2**20


def _chunk_slices(pixels_per_slice: int) -> tuple[int, int]:
    """Slices per segmentation chunk and per envelope-map chunk for this slice size."""
    step = max(16, min(512, _CHUNK_VOXELS // max(1, pixels_per_slice)))
    return step, max(4, min(step, _MAP_VOXELS // max(1, pixels_per_slice)))


class _Segmenter:
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
        self.halos = sorted({h for h in (*_HALOS, firm) if 0 < h < full}) + [full]
        self.retries = 0
        size = int(np.prod(scan.shape))
        cache = size * (1 + np.dtype(scan.dtype).itemsize) <= _CACHE_BYTES
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
_SECTION_EIGHTHS = (-2, -1, 0, 1, 2)


def _section_positions(n: int) -> np.ndarray:
    """Rows (or columns) of a slice ``n`` pixels wide where pass 1 keeps sections."""
    return np.array(sorted({min(n - 1, max(0, n // 2 + k * n // 8))
                            for k in _SECTION_EIGHTHS}), dtype=np.intp)


@dataclass
class _Pass1:
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


def _pass1(scan: Scan | AlignedSource, seg: _Segmenter, *, keep_volume: bool,
           need_hist: bool, need_maps: bool = True) -> _Pass1:
    """Stream the whole scan once: histogram, the femur's per-slice summaries
    (:class:`~ctmorph.segment.femur.FemurStream`, with ``need_maps``) and the QC longitudinal
    sections."""
    nz, ny, nx = scan.shape
    sp = scan.spacing
    sec_rows, sec_cols = _section_positions(ny), _section_positions(nx)
    hist = np.zeros(scan.gmax + 1, dtype=np.int64)
    row_grey = np.empty((sec_rows.size, nz, nx), dtype=scan.dtype)
    row_bone = np.empty((sec_rows.size, nz, nx), dtype=bool)
    col_grey = np.empty((sec_cols.size, nz, ny), dtype=scan.dtype)
    femur = FemurStream(scan.shape, sp) if need_maps and not keep_volume else None
    volume = np.empty(scan.shape, dtype=bool) if keep_volume else None
    valid = np.empty(scan.shape, dtype=bool) if keep_volume and scan.no_data_zero else None
    any_bone = False
    step, map_step = _chunk_slices(ny * nx)
    for s in range(0, nz, step):
        e = min(nz, s + step)
        bone, grey = seg.chunk(s, e)
        any_bone = any_bone or bool(bone.any())
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
    return _Pass1(hist, femur, sec_rows, row_grey, row_bone, sec_cols, col_grey, any_bone,
                  volume, valid)


def _fit_axis(p1: _Pass1, sp: tuple[float, float, float], name: str) -> BoneAxis | None:
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


def _locate(seg: _Segmenter, femur: FemurStream, cfg: AnalysisConfig, *, offset_mm: float,
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


@dataclass
class _Slab:
    crop: tuple[slice, slice]
    bone: np.ndarray | None  # (z1 - z0, Y', X') on crop; None when in ``store``
    region: np.ndarray | None
    grey: np.ndarray | None
    envelope: np.ndarray | None
    axials: dict[str, tuple[int, np.ndarray, np.ndarray]]
    store: _SlabStore | None = None


def _load_slab(seg: _Segmenter, z0: int, z1: int, filled: np.ndarray, femur: FemurStream, *,
               pad: int,
               want_grey: bool, want_envelope: bool = False,
               axial_at: dict[str, int] | None = None,
               store_voi: tuple[int, int] | None = None) -> _Slab:
    """Bone, endocortical region (and grey, envelope) of slices ``[z0, z1)`` at full
    resolution, cropped in-plane to the envelope's box over those slices + ``pad`` pixels.

    With ``store_voi`` (the VOI's slices, relative to ``z0``) a slab of more than
    ``_CHUNKED_MEASURE_VOXELS`` voxels goes into a :class:`_SlabStore` (``_Slab.store``)
    instead of the ``bone`` and ``region`` arrays (then None)."""
    scan = seg.scan
    _, ny, nx = scan.shape
    bb = femur.bbox[z0:z1]
    bb = bb[bb[:, 0] >= 0]
    if bb.size == 0:
        ys, xs = slice(0, 0), slice(0, 0)
    else:
        ys = slice(max(0, int(bb[:, 0].min()) - pad), min(ny, int(bb[:, 1].max()) + pad))
        xs = slice(max(0, int(bb[:, 2].min()) - pad), min(nx, int(bb[:, 3].max()) + pad))
    shape = (z1 - z0, ys.stop - ys.start, xs.stop - xs.start)
    store = None
    if store_voi is not None and math.prod(shape) > _CHUNKED_MEASURE_VOXELS:
        grey_dtype = np.dtype(scan.dtype) if want_grey else None
        per_voxel = 1 + (grey_dtype.itemsize if grey_dtype is not None else 0)
        store = _SlabStore(shape, store_voi, grey_dtype=grey_dtype,
                           in_memory=math.prod(shape) * per_voxel <= _STORE_RAM_BYTES)
        logger.info("%s: VOI slab of %d x %d x %d voxels measured in z-blocks (%s)", scan.name,
                    *shape, "in memory" if store.in_memory else "temporary file")
    bone_s = np.empty(shape, dtype=bool) if store is None else None
    region_s = np.empty(shape, dtype=bool) if store is None else None
    grey_s = np.empty(shape, dtype=scan.dtype) if want_grey and store is None else None
    env_s = np.empty(shape, dtype=bool) if want_envelope else None
    wanted = {v: k for k, v in (axial_at or {}).items()}
    axials: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    step, map_step = _chunk_slices(ny * nx)
    for s in range(z0, z1, step):
        e = min(z1, s + step)
        bone, grey = seg.chunk(s, e)
        if bone_s is not None:
            bone_s[s - z0 : e - z0] = bone[:, ys, xs]
        if grey_s is not None:
            grey_s[s - z0 : e - z0] = grey[:, ys, xs]
        for z in range(s, e):
            if z in wanted:
                axials[wanted[z]] = (z, grey[z - s].copy(), bone[z - s].copy())
        for t in range(s, e, map_step):
            u = min(e, t + map_step)
            b = bone[t - s : u - s]
            maps = femur.maps(b)
            reg = femur.region(b, t, filled, maps)
            if store is not None:
                store.write(t - z0, np.ascontiguousarray(b[:, ys, xs]),
                            np.ascontiguousarray(reg[:, ys, xs]),
                            grey[t - s : u - s, ys, xs] if want_grey else None)
            else:
                region_s[t - z0 : u - z0] = reg[:, ys, xs]
            if env_s is not None:
                env_s[t - z0 : u - z0] = maps.envelope[:, ys, xs]
    return _Slab((ys, xs), bone_s, region_s, grey_s, env_s, axials, store)


# --------------------------------------------------------------------------------------------
# bounded memory: a large VOI slab is kept packed and measured block by block

#: Slab voxels (VOI + context, cropped in-plane) above which the slab is packed into a
#: :class:`_SlabStore` and measured from z-blocks; smaller slabs are measured in memory.
_CHUNKED_MEASURE_VOXELS = 48_000_000
#: Packed slabs up to this many bytes stay in memory; larger ones go to a temporary file.
_STORE_RAM_BYTES = 64 * 2**20


class _Planes:
    """Slices of one dtype, written once in z order, kept in memory or in an unnamed
    temporary file (``TMPDIR``); :meth:`read` returns any slice range."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, *, in_memory: bool,
                 prefix: str) -> None:
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._mem = np.empty(shape, dtype=self._dtype) if in_memory else None
        self._file = None if in_memory else tempfile.TemporaryFile(prefix=prefix)

    @property
    def in_memory(self) -> bool:
        return self._mem is not None

    def write(self, z0: int, planes: np.ndarray) -> None:
        """Store slices ``[z0, z0 + len(planes))``, right after the last ones written."""
        if self._mem is not None:
            self._mem[z0:z0 + planes.shape[0]] = planes
        else:
            self._file.write(np.ascontiguousarray(planes, dtype=self._dtype).data)

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Slices ``[z0, z1)``: a view when in memory, a fresh array from the file."""
        if self._mem is not None:
            return self._mem[z0:z1]
        plane = self._shape[1] * self._shape[2]
        self._file.seek(z0 * plane * self._dtype.itemsize)
        raw = np.fromfile(self._file, dtype=self._dtype, count=(z1 - z0) * plane)
        return raw.reshape(z1 - z0, *self._shape[1:])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._mem = None


class _SlabStore:
    """The VOI slab, one byte per voxel (bit 0 bone, bit 1 endocortical region), in memory
    or in an unnamed temporary file (``TMPDIR``), written once in z order.

    As a :class:`~ctmorph.morphometry.zsource.ZSource` it reads ``bone``, the VOI (the region
    on slices ``voi_z``) and the marrow space (the region) of any slice range. With
    ``grey_dtype`` (calibrated scans) it also keeps the raw grey values, for
    :meth:`read_grey`.
    """

    def __init__(self, shape: tuple[int, int, int], voi_z: tuple[int, int], *,
                 in_memory: bool, grey_dtype: np.dtype | None = None) -> None:
        self._shape = tuple(int(s) for s in shape)
        self.voi_z = voi_z
        self._packed = _Planes(self._shape, np.uint8, in_memory=in_memory,
                               prefix="ctmorph-slab-")
        self._grey = None if grey_dtype is None else _Planes(
            self._shape, grey_dtype, in_memory=in_memory, prefix="ctmorph-grey-")
        self._written = 0
        self.region_count = np.zeros(self._shape[0], dtype=np.int64)  # per slice
        self._ybox = [self._shape[1], 0]
        self._xbox = [self._shape[2], 0]

    @property
    def in_memory(self) -> bool:
        return self._packed.in_memory

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def write(self, z0: int, bone: np.ndarray, region: np.ndarray,
              grey: np.ndarray | None = None) -> None:
        """Store slices ``[z0, z0 + len(bone))``; calls come in z order without gaps.
        ``grey`` is required when the store keeps grey values, ignored otherwise."""
        if z0 != self._written:
            raise AssertionError(f"slab store written out of order ({z0} != {self._written})")
        if self._grey is not None:
            self._grey.write(z0, grey)
        packed = bone.view(np.uint8) | (region.view(np.uint8) << 1)
        z1 = z0 + packed.shape[0]
        self.region_count[z0:z1] = np.count_nonzero(region, axis=(1, 2))
        v0, v1 = max(z0, self.voi_z[0]), min(z1, self.voi_z[1])
        if v1 > v0:
            part = region[v0 - z0:v1 - z0]
            rows = np.flatnonzero(part.any(axis=(0, 2)))
            cols = np.flatnonzero(part.any(axis=(0, 1)))
            if rows.size:
                y, x = self._ybox, self._xbox
                self._ybox = [min(y[0], int(rows[0])), max(y[1], int(rows[-1]) + 1)]
                self._xbox = [min(x[0], int(cols[0])), max(x[1], int(cols[-1]) + 1)]
        self._packed.write(z0, packed)
        self._written = z1

    def read_grey(self, z0: int, z1: int) -> np.ndarray:
        """Raw grey values of slices ``[z0, z1)`` (a store made with ``grey_dtype``)."""
        if self._grey is None:
            raise ValueError("this slab store keeps no grey values")
        grey = self._grey.read(z0, z1)
        return grey.copy() if self._grey.in_memory else grey

    def read_phase(self, z0: int, z1: int, kind: str) -> np.ndarray:
        """One mask of slices ``[z0, z1)`` (see :func:`~ctmorph.morphometry.zsource.read_phase`),
        built from the packed bytes without the others."""
        raw = self._packed.read(z0, z1)
        if kind == "bone":
            return (raw & 1).view(bool)
        if kind == "marrow":
            return raw == 2
        if kind == "space":
            return raw != 0
        if kind == "voi":
            return self._voi((raw >> 1).view(bool), z0, z1)
        raise ValueError(f"unknown phase {kind!r}")

    def _voi(self, region: np.ndarray, z0: int, z1: int) -> np.ndarray:
        """The VOI of slices ``[z0, z1)``: ``region`` (modified in place) off ``voi_z`` cleared."""
        v0, v1 = self.voi_z
        region[: max(0, min(z1, v0) - z0)] = False
        region[max(0, max(z0, v1) - z0):] = False
        return region

    def read(self, z0: int, z1: int) -> Block:
        raw = self._packed.read(z0, z1)
        region = (raw >> 1).view(bool)
        return Block((raw & 1).view(bool), self._voi(region.copy(), z0, z1), region)

    def voi_box(self) -> tuple[int, int, int, int, int, int]:
        if self._ybox[1] <= self._ybox[0]:
            raise SegmentationError("the VOI is empty (no voxel selected)")
        v0, v1 = self.voi_z
        zs = v0 + np.flatnonzero(self.region_count[v0:v1])
        return (int(zs[0]), int(zs[-1]) + 1, *self._ybox, *self._xbox)

    def close(self) -> None:
        self._packed.close()
        if self._grey is not None:
            self._grey.close()


def structure_metrics_chunked(src: ZSource, *, spacing: tuple[float, float, float],
                              chunk_slices: int | None = None) -> dict[str, float]:
    """:func:`structure_metrics` of a source read in z-blocks (bounded memory); same keys."""
    out: dict[str, float] = {}
    out.update(connectivity_chunked(src, spacing=spacing, chunk_slices=chunk_slices))
    s = smi_chunked(src, spacing=spacing, chunk_slices=chunk_slices)
    out.update({"SMI": s["SMI"], "SMI+": s["SMI+"], "SMI-": s["SMI-"],
                "SMI.concave_fraction": s["concave_fraction"]})
    out.update(anisotropy_chunked(src, spacing=spacing, chunk_slices=chunk_slices).as_dict())
    out["Tb.Pf"] = pattern_factor_chunked(src, spacing=spacing, chunk_slices=chunk_slices)
    return {k: float(v) for k, v in out.items()}
