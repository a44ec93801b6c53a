"""The calibration fit: rods of known density → the study's attenuation → density line."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..errors import CalibrationError
from ..io import Scan, read_scan
from .convert import scan_window
from .model import Calibration, RodMeasurement, StrPath, parse_densities
from .rods import measure_rods
from .settings import CHECKED_SETTINGS, same_setting, scan_settings, show_setting

__all__ = [
    "calibrate",
]

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# Calibration fit
# ---------------------------------------------------------------------------------------------


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = slope * x + intercept``; (slope, intercept, R²)."""
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = float(ym - slope * xm)
    ss_tot = float(np.sum((y - ym) ** 2))
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    return slope, intercept, 1.0 - ss_res / ss_tot


def _check_phantom_settings(scans: Sequence[Scan]) -> dict[str, Any]:
    first = scan_settings(scans[0])
    for other in scans[1:]:
        theirs = scan_settings(other)
        for key in CHECKED_SETTINGS:
            if not same_setting(key, first.get(key), theirs.get(key)):
                raise CalibrationError(
                    f"phantom folders disagree on reconstruction settings: {scans[0].path} has "
                    f"{key}={show_setting(first.get(key))}, {other.path} has {key}="
                    f"{show_setting(theirs.get(key))}; calibrate only with scans reconstructed "
                    "alike"
                )
    return {k: v for k, v in first.items() if k not in ("cs_min", "cs_max")}


def calibrate(
    phantom_dirs: StrPath | Sequence[StrPath],
    densities: Sequence[float] | str,
    *,
    core_fraction: float = 0.6,
    edge_margin_vox: float = 3.0,
    min_rod_diameter_mm: float = 0.5,
    threshold_attenuation: float | None = None,
    smooth_sigma_vox: float = 1.5,
    qc_dir: StrPath | None = None,
) -> Calibration:
    """Fit the attenuation -> g/cm³ HA line on scans of HA rods.

    Parameters
    ----------
    phantom_dirs : path or sequence of paths
        NRecon reconstruction folders of the phantom rods: one rod per folder, or several rods
        in one folder, or a mix. Each folder's grey values are converted to attenuation through
        its own CS window, so the folders may have different windows and bit depths.
    densities : sequence of float or str
        Nominal HA densities in g/cm³ (``"0.25,0.75"`` accepted), one per rod, in folder order;
        for a folder holding several rods, its densities in increasing order (they are matched
        to its rods by increasing attenuation).
    core_fraction, edge_margin_vox, min_rod_diameter_mm, threshold_attenuation, smooth_sigma_vox
        Rod detection, see :func:`find_rods`.
    qc_dir : path, optional
        Folder for one QC picture per rod (``<scan>_rod<k>.png``: the rod's middle core slice,
        its detected outline and the measured core). None: no pictures.

    Returns
    -------
    Calibration
        ``density = slope * attenuation + intercept``; least squares when there are more than
        two rods (R² reported), the line through both when there are two.

    Raises
    ------
    CalibrationError
        One line naming the folder: phantom folders reconstructed with different settings
        (:data:`CHECKED_SETTINGS`), a folder without a CS window, no rod found, fewer or more
        rods than densities, densities of a multi-rod folder not increasing, all densities
        equal, or a non-monotonic fit (a denser rod attenuating no more than a lighter one).

    Examples
    --------
    >>> cal = calibrate(["HA025", "HA075"], [0.25, 0.75])  # doctest: +SKIP
    >>> cal.density(0.05)  # doctest: +SKIP
    """
    if isinstance(phantom_dirs, str | PathLike):
        phantom_dirs = [phantom_dirs]
    if not phantom_dirs:
        raise CalibrationError("no phantom folder given")
    densities = parse_densities(densities, folders=len(phantom_dirs))
    scans = [read_scan(d) for d in phantom_dirs]
    for scan in scans:
        scan_window(scan)
    settings = _check_phantom_settings(scans)
    params = {
        "core_fraction": core_fraction,
        "edge_margin_vox": edge_margin_vox,
        "min_rod_diameter_mm": min_rod_diameter_mm,
        "threshold_attenuation": threshold_attenuation,
        "smooth_sigma_vox": smooth_sigma_vox,
    }
    found = [measure_rods(scan, **params) for scan in scans]

    counts = [len(f) for f in found]
    if sum(counts) != len(densities):
        per_folder = ", ".join(f"{s.path}: {c}" for s, c in zip(scans, counts, strict=True))
        raise CalibrationError(
            f"{len(densities)} densities given but {sum(counts)} HA rods found ({per_folder}); "
            "give one density per rod"
        )
    rods: list[RodMeasurement] = []
    qcs: list[dict[str, Any]] = []
    k = 0
    for scan, items in zip(scans, found, strict=True):
        mine = densities[k : k + len(items)]
        k += len(items)
        if len(mine) > 1 and any(b <= a for a, b in zip(mine, mine[1:], strict=False)):
            raise CalibrationError(
                f"{scan.path}: holds {len(items)} rods; give their densities in increasing "
                f"order (got {', '.join(f'{d:g}' for d in mine)})"
            )
        for (measurement, qc), density in zip(items, mine, strict=True):
            rods.append(replace(measurement, density_g_cm3=density))
            qcs.append(qc)

    att = np.array([r.mean_attenuation for r in rods])
    dens = np.array([r.density_g_cm3 for r in rods], dtype=np.float64)
    if np.ptp(dens) == 0:
        raise CalibrationError(f"all rods have the same density ({dens[0]:g} g/cm³); need two")
    for a in rods:
        for b in rods:
            if a.density_g_cm3 < b.density_g_cm3 and a.mean_attenuation >= b.mean_attenuation:
                raise CalibrationError(
                    f"non-monotonic calibration: the {a.density_g_cm3:g} g/cm³ rod ({a.folder}) "
                    f"attenuates {a.mean_attenuation:.5g}, not less than the "
                    f"{b.density_g_cm3:g} g/cm³ rod ({b.folder}) at {b.mean_attenuation:.5g}; "
                    "are the densities given in the folders' order?"
                )
    slope, intercept, r2 = _fit_line(att, dens)
    if not slope > 0:  # guarded by the monotonicity check; kept for safety
        raise CalibrationError(f"calibration slope {slope:.4g} is not positive")
    if len(rods) > 2 and r2 < 0.99:
        logger.warning("calibration fit R² = %.4f over %d rods: check the rods", r2, len(rods))

    order = np.argsort(dens, kind="stable")
    rods = [rods[i] for i in order]
    qcs = [qcs[i] for i in order]
    if qc_dir is not None:
        rods = _write_rod_pictures(Path(qc_dir), rods, qcs)
    calibration = Calibration(
        slope=slope,
        intercept=intercept,
        r_squared=r2,
        rods=tuple(rods),
        settings=settings,
        parameters=params,
    )
    logger.info("%s", calibration.summary())
    return calibration


def _write_rod_pictures(
    folder: Path, rods: Sequence[RodMeasurement], qcs: Sequence[dict[str, Any]]
) -> list[RodMeasurement]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    seen: dict[str, int] = {}
    for rod, qc in zip(rods, qcs, strict=True):
        seen[rod.scan] = seen.get(rod.scan, 0) + 1
        path = folder / f"{rod.scan}_rod{seen[rod.scan]}.png"
        fig, ax = plt.subplots(figsize=(4.5, 4.8))
        ax.imshow(qc["image"], cmap="gray", interpolation="nearest")
        ax.contour(qc["section"], levels=[0.5], colors=["#ffb000"], linewidths=0.8)
        if qc["core"].any():
            ax.contour(qc["core"], levels=[0.5], colors=["#00c8ff"], linewidths=0.8)
        ax.set_title(
            f"{rod.scan}: {rod.density_g_cm3:g} g/cm³ HA, section {qc['section_no']}\n"
            f"attenuation {rod.mean_attenuation:.5g} ± {rod.sd_attenuation:.2g} "
            f"({rod.n_voxels} voxels, {rod.n_slices} slices)\n"
            "orange: rod outline, blue: measured core",
            fontsize=7,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
        plt.close(fig)
        out.append(replace(rod, qc_picture=str(path)))
    return out


