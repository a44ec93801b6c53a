"""One scan: load → segment → VOI → measure → a result row with provenance.

:func:`analyze_scan` is the public entry point (DESIGN.md §6) and returns one row of
``morphometry.csv``; :func:`measure_scan` returns the row together with the details the batch
writes next to it (per-scan JSON, QC pictures).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .calibration import (
    check_settings,
    density_metrics,
    density_to_grey,
    grey_to_density,
    load_calibration,
    scan_window,
)
from .config import AnalysisConfig
from .errors import CalibrationError, SegmentationError
from .io import Scan, read_scan
from .morphometry import (
    anisotropy,
    connectivity,
    cortical_morphometry,
    pattern_factor,
    smi,
    trabecular_analysis,
)
from .segment.femur import auto_trabecular_voi, periosteal_envelope
from .segment.threshold import binarize, despeckle, grey_histogram, otsu_threshold

__all__ = ["analyze_scan", "measure_scan", "ScanResult", "QcData", "STAGES", "software_versions"]

logger = logging.getLogger(__name__)

#: Stages reported to the progress callback, in order.
STAGES = ("load", "segment", "voi", "measure")

Progress = Callable[[str], None]


@dataclass
class QcData:
    """Small arrays for the QC pictures of one scan (no full volumes)."""

    longitudinal: np.ndarray  # (Z, X) grey section through the stack centre
    longitudinal_bone: np.ndarray  # (Z, X) bool
    longitudinal_voi: np.ndarray  # (Z, X) bool
    axial: np.ndarray  # (Y, X) grey slice at the VOI middle
    axial_bone: np.ndarray  # (Y, X) bool
    axial_voi: np.ndarray  # (Y, X) bool
    axial_index: int
    histogram: np.ndarray  # grey histogram of the scan
    threshold: float
    ref_index: int | None
    voi_range: tuple[int, int]  # [z0, z1) array indices
    sections: np.ndarray
    profiles: dict[str, np.ndarray] = field(default_factory=dict)


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


def thickness_histogram(values: np.ndarray, bin_mm: float) -> dict[str, list]:
    """Histogram of local-thickness values with bins one voxel wide.

    Returns ``{"bin_edges_mm": [...], "counts": [...]}`` (counts of voxels, so the histogram
    is volume-weighted like Tb.Th and Tb.Sp).
    """
    vmax = float(values.max()) if values.size else 0.0
    n = max(1, int(np.ceil(vmax / bin_mm + 1e-9)))
    counts, edges = np.histogram(values, bins=n, range=(0.0, n * bin_mm))
    return {"bin_edges_mm": [round(float(e), 9) for e in edges],
            "counts": [int(c) for c in counts]}


def scan_histogram(scan: Scan) -> np.ndarray:
    """Grey histogram of a whole scan, read slice by slice (no-data zeros excluded)."""
    hist = np.zeros(scan.gmax + 1, dtype=np.int64)
    for i in range(scan.shape[0]):
        hist += grey_histogram(scan.read_slice(i), gmax=scan.gmax, no_data_zero=scan.no_data_zero)
    return hist


def _proximal_range(
    ref: int, distal_end: str, offset_mm: float, height_mm: float, dz: float, nz: int
) -> tuple[int, int]:
    """Array index range ``[z0, z1)`` from ``offset_mm`` to ``offset_mm + height_mm``
    proximal of slice ``ref``, clipped to the stack (empty when it lies beyond the end)."""
    a = int(round(offset_mm / dz))
    n = int(round(height_mm / dz))
    if distal_end == "first":
        z0, z1 = ref + a, ref + a + n
    else:
        z0, z1 = ref - a - n + 1, ref - a + 1
    if z0 < 0 or z1 > nz:
        return 0, 0
    return z0, z1


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
        Column name → value, with the names and units of DESIGN.md §3 (see
        :mod:`ctmorph.columns`).
    """
    return measure_scan(path, config, threshold=threshold).row


def measure_scan(
    path: str | Path,
    config: AnalysisConfig | None = None,
    *,
    threshold: float | None = None,
    threshold_method: str | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Analyse one scan; see :func:`analyze_scan`. Also returns details and QC arrays.

    Raises
    ------
    CtmorphError
        Any input, segmentation or configuration problem, with a one-line message that
        names the scan.
    """
    cfg = config or AnalysisConfig()
    step = progress or (lambda stage: None)
    t_start = time.perf_counter()
    step("load")
    scan = read_scan(path, voxel_size_um=cfg.voxel_size_um)
    grey = scan.read_volume()
    spacing = scan.spacing
    valid = grey != 0 if scan.no_data_zero else None
    hist = np.zeros(scan.gmax + 1, dtype=np.int64)
    for z in range(grey.shape[0]):
        hist += grey_histogram(grey[z], gmax=scan.gmax, no_data_zero=scan.no_data_zero)

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

    if cal is not None and cfg.threshold_density is not None:
        thr = density_to_grey(cfg.threshold_density, cal, window, scan.gmax)
        method = f"density {cfg.threshold_density:g} g/cm³ HA"
    elif threshold is not None:
        thr = float(threshold)
        method = threshold_method or "given"
    elif cfg.threshold == "otsu":
        thr = otsu_threshold(hist)
        method = "otsu (this scan only)"
    else:
        thr = float(cfg.threshold)
        method = "fixed"
    if thr >= scan.gmax or thr < 0:
        raise SegmentationError(
            f"{scan.name}: threshold {thr:g} is outside the grey range 0..{scan.gmax} of the slices"
        )

    step("segment")
    bone = binarize(grey, thr, sigma_vox=cfg.smooth_sigma_vox)
    if valid is not None:
        bone &= valid
    bone = despeckle(
        bone,
        min_bone_voxels=cfg.min_bone_voxels,
        min_marrow_voxels=cfg.min_marrow_voxels,
        valid=valid,
    )
    if not bone.any():
        raise SegmentationError(f"{scan.name}: no voxel is above the threshold {thr:g}")

    step("voi")
    nz = grey.shape[0]
    profiles: dict[str, np.ndarray] = {}
    if cfg.roi == "auto":
        try:
            tv = auto_trabecular_voi(
                bone,
                spacing=spacing,
                offset_mm=cfg.roi_offset_mm,
                height_mm=cfg.roi_height_mm,
                distal_end=cfg.distal_end,
            )
        except SegmentationError as exc:
            raise SegmentationError(f"{scan.name}: {exc}") from None
        z0, z1, ref_index, distal_end = tv.z0, tv.z1, tv.ref_index, tv.distal_end
        ctx = int(round(cfg.context_mm / spacing[0]))
        a, b = max(0, z0 - ctx), min(nz, z1 + ctx)
        region, voi_full = tv.region, tv.voi
        profiles = dict(tv.profiles)
    else:
        z0, z1, ref_index, distal_end = 0, nz, None, None
        a, b = 0, nz
        region = valid if valid is not None else np.ones(bone.shape, dtype=bool)
        voi_full = region
    voi = voi_full[a:b]
    if not voi.any():
        raise SegmentationError(f"{scan.name}: the VOI is empty")

    step("measure")
    try:
        tb = trabecular_analysis(
            bone[a:b],
            voi,
            spacing=spacing,
            marrow_space=region[a:b],
            convention=cfg.thickness_convention,
        )
    except SegmentationError as exc:
        raise SegmentationError(f"{scan.name}: {exc}") from None
    metrics = dict(tb.metrics)
    metrics.update(structure_metrics(bone[a:b], voi, spacing=spacing))
    # the local-thickness maps the numbers came from, over the VOI's bounding box
    z0b, z1b, y0b, y1b, x0b, x1b = tb.box
    in_box = (slice(z0b, z1b), slice(y0b, y1b), slice(x0b, x1b))
    voi_b, bone_b = voi[in_box], bone[a:b][in_box]
    marrow_b = voi_b & region[a:b][in_box] & ~bone_b
    histograms = {
        "Tb.Th": thickness_histogram(tb.thickness[voi_b & bone_b], spacing[0]),
        "Tb.Sp": thickness_histogram(tb.separation[marrow_b], spacing[0]),
    }
    maps: dict[str, np.ndarray] = {}
    if cfg.save_maps:
        for name, m in (("thickness", tb.thickness), ("separation", tb.separation)):
            full = np.zeros(voi.shape, dtype=np.float32)
            full[in_box] = np.where(voi_b, m, np.float32(0.0))
            maps[name] = full

    if cal is not None:
        metrics.update(
            density_metrics(
                grey[a:b], bone[a:b], voi, scan_window=window, gmax=scan.gmax,
                calibration=cal, tmd_erosion_vox=cfg.tmd_erosion_vox,
                valid=None if valid is None else valid[a:b],
            )
        )

    cortical: dict[str, Any] = {}
    if cfg.cortical_offset_mm is not None and ref_index is not None:
        c0, c1 = _proximal_range(ref_index, distal_end, cfg.cortical_offset_mm,
                                 cfg.cortical_height_mm, spacing[0], nz)
        if c1 <= c0:
            raise SegmentationError(
                f"{scan.name}: the scan ends before the cortical VOI "
                f"({cfg.cortical_offset_mm:g}-{cfg.cortical_offset_mm + cfg.cortical_height_mm:g}"
                " mm proximal of the growth plate)"
            )
        # cortical bone: bone outside the endocortical region, so trabeculae attached to the
        # endosteal surface are not counted as cortex
        slab = bone[c0:c1] & ~region[c0:c1]
        try:
            cortical = cortical_morphometry(
                slab, periosteal_envelope(bone[c0:c1], spacing=spacing), spacing=spacing,
                thickness_convention=cfg.thickness_convention,
            )
        except SegmentationError as exc:
            raise SegmentationError(f"{scan.name}: cortical VOI: {exc}") from None
        cortical = {"ct_first_slice": int(scan.sections[c0]),
                    "ct_last_slice": int(scan.sections[c1 - 1]), **cortical}
        if cal is not None:
            dens = density_metrics(
                grey[c0:c1], slab, np.ones_like(slab), scan_window=window, gmax=scan.gmax,
                calibration=cal, tmd_erosion_vox=cfg.tmd_erosion_vox,
                valid=None if valid is None else valid[c0:c1],
            )
            cortical["Ct.TMD"] = dens["TMD"]

    sections = scan.sections
    row: dict[str, Any] = {
        "scan": scan.name,
        "status": "ok",
        "error": "",
        "voxel_um": scan.voxel_size_um,
        "threshold": thr,
        "threshold_method": method,
        "threshold_density": (
            float(grey_to_density(thr, cal, window, scan.gmax)) if cal is not None else None
        ),
        "calibration_mismatch": "; ".join(mismatch) if cal is not None else None,
        "roi": cfg.roi,
        "distal_end": distal_end or "",
        "ref_slice": int(sections[ref_index]) if ref_index is not None else None,
        "voi_first_slice": int(sections[z0]),
        "voi_last_slice": int(sections[z1 - 1]),
        "voi_offset_mm": cfg.roi_offset_mm if cfg.roi == "auto" else None,
        "voi_height_mm": (z1 - z0) * spacing[0],
    }
    row.update(metrics)
    row.update(cortical)
    row.update(
        {
            "smooth_sigma_vox": cfg.smooth_sigma_vox,
            "thickness_convention": cfg.thickness_convention,
            "n_slices": nz,
            "seconds": round(time.perf_counter() - t_start, 3),
            "input_hash": scan.input_hash(),
            "config_hash": cfg.digest(),
            "ctmorph_version": __version__,
        }
    )

    mid = (z0 + z1) // 2
    cy = bone.shape[1] // 2
    qc = QcData(
        longitudinal=np.asarray(grey[:, cy, :]),
        longitudinal_bone=bone[:, cy, :].copy(),
        longitudinal_voi=voi_full[:, cy, :].copy(),
        axial=np.asarray(grey[mid]),
        axial_bone=bone[mid].copy(),
        axial_voi=voi_full[mid].copy(),
        axial_index=mid,
        histogram=hist,
        threshold=thr,
        ref_index=ref_index,
        voi_range=(z0, z1),
        sections=np.asarray(sections),
        profiles=profiles,
    )
    details = {
        "scan": scan.describe(),
        "config": cfg.to_dict(),
        "threshold": {"grey": thr, "method": method},
        "voi": {
            "ref_index": ref_index,
            "z0": z0,
            "z1": z1,
            "context_slices": [a, b],
            "distal_end": distal_end,
        },
        "results": metrics,
        "histograms": histograms,
        "calibration": cal.to_dict() if cal is not None else None,
        "versions": software_versions(),
        "input_hash": row["input_hash"],
        "config_hash": row["config_hash"],
    }
    logger.info("%s: done in %.1f s", scan.name, row["seconds"])
    return ScanResult(row=row, details=details, qc=qc, maps=maps)
