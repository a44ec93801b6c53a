"""Threshold sensitivity of a run (``ctmorph analyze --sensitivity P``).

After the main run, every successfully analysed scan is analysed again with the global
threshold lowered and raised by P % (each a complete, resumable sub-run of
:func:`ctmorph.batch.run_analysis` into ``OUT/sensitivity/minusP/`` and ``plusP/``, QC pictures
off), and ``OUT/sensitivity.csv`` collects every parameter of every scan at the three
thresholds. ``ctmorph report`` then says whether the group conclusions survive
(:mod:`ctmorph.report.sensitivity`).

Which quantity the percentage applies to: the threshold the user states, since that is the
number the methods report and a reader would vary. A grey threshold (given, or the pooled
Otsu threshold of the main run when every scan has one grey scale, then fixed) is multiplied by
1 ± P/100; a density threshold (``--threshold-density``) is multiplied in g/cm³ HA, and an
attenuation threshold (``--threshold-attenuation``, or the pooled Otsu threshold of a study
whose scans have different CS windows or bit depths, so that no single grey value exists) in
attenuation; both are converted to grey per scan as in the main run. Grey values have an
arbitrary zero (the CS-to-image window), so ±P % of a grey value is not ±P % of attenuation or
density; for the Otsu threshold ±5 % is about the spread of Otsu thresholds between comparable
studies, which is the question the check answers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import ProgressFactory, RunSummary, run_analysis, write_table
from .columns import MORPHOMETRY_PARAMETERS, order_columns
from .config import AnalysisConfig
from .errors import ConfigError, ScanError
from .io import find_scan_dirs

__all__ = ["SensitivityRun", "check_percent", "variant_name", "run_sensitivity",
           "PROVENANCE_COLUMNS"]

logger = logging.getLogger(__name__)

#: Columns of a morphometry row that are settings or provenance, not measured parameters.
PROVENANCE_COLUMNS = frozenset({
    "scan", "group", "status", "error", "voxel_um", "threshold", "threshold_method",
    "threshold_density", "threshold_attenuation", "calibration_mismatch", "qc_flags", "roi",
    "roi_mask", "distal_end",
    "voi_offset_mm", "voi_height_mm", "voi_offset_frac", "voi_height_frac", "smooth_sigma_vox",
    "thickness_convention", "n_slices",
    "input_hash", "config_hash", "ctmorph_version",
})


def check_percent(percent: float) -> float:
    """``percent`` as a float when 0 < percent < 50, else a ConfigError.

    Raises
    ------
    ConfigError
        For NaN, infinities, 0 or less and 50 or more (a threshold halved or more is not a
        sensitivity check but another analysis).
    """
    try:
        p = float(percent)
    except (TypeError, ValueError):
        raise ConfigError(f"sensitivity must be a percentage, got {percent!r}") from None
    if not (math.isfinite(p) and 0 < p < 50):
        raise ConfigError(f"sensitivity must be a percentage between 0 and 50 (exclusive), "
                          f"got {percent!r}")
    return p


def variant_name(pct: float) -> str:
    """Sub-run folder name: ``-5`` -> ``minus5``, ``2.5`` -> ``plus2.5``."""
    return f"{'minus' if pct < 0 else 'plus'}{abs(pct):g}"


@dataclass
class SensitivityRun:
    """What the sensitivity sub-runs produced.

    Attributes
    ----------
    percent : float
        P: the thresholds were the main one × (1 − P/100) and × (1 + P/100).
    unit : str
        ``"grey"``, ``"attenuation"`` or ``"g/cm³ HA"``: what the percentage applied to.
    base : float
        The main threshold in ``unit``.
    thresholds : dict
        ``{threshold_change_pct: threshold in unit}``, including 0.
    runs : dict
        ``{threshold_change_pct: RunSummary}`` of the two sub-runs.
    table : Path
        ``OUT/sensitivity.csv``.
    failed : list of (scan, threshold_change_pct, error)
        Scans analysed at the main threshold that failed in a sub-run.
    seconds : float
        Wall time of both sub-runs.
    """

    percent: float
    unit: str
    base: float
    thresholds: dict[float, float]
    runs: dict[float, RunSummary]
    table: Path
    failed: list[tuple[str, float, str]] = field(default_factory=list)
    seconds: float = 0.0
    reused: int = 0


def _parameter_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Measured numeric columns of the ok rows, in registry order."""
    names: list[str] = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        for k, v in r.items():
            if k in PROVENANCE_COLUMNS or k in names or isinstance(v, bool):
                continue
            # an empty registry parameter (BMD without calibration) keeps its column
            if isinstance(v, numbers.Real) or (k in MORPHOMETRY_PARAMETERS and v is None):
                names.append(k)
    return order_columns(names)


def _scan_folders(paths: Sequence[str | Path], names: set[str]) -> list[Path]:
    """The scan folders under ``paths`` whose names are in ``names`` (argument order)."""
    found: list[Path] = []
    for p in paths:
        try:
            found += [d for d in find_scan_dirs([p]) if d.name in names and d not in found]
        except ScanError:  # reported by the main run already
            continue
    return found


def run_sensitivity(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: AnalysisConfig,
    main: RunSummary,
    *,
    percent: float,
    manifest: Any = None,
    groups: Mapping[str, str] | None = None,
    group: str | None = None,
    jobs: int = 1,
    force: bool = False,
    verify_inputs: bool = False,
    strict: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    scheduler: str | None = None,
    security: Any = None,
    progress_factory: ProgressFactory | None = None,
    on_start: Callable[[int], None] | None = None,
    on_scan_done: Callable[[dict[str, Any], float], None] | None = None,
) -> SensitivityRun:
    """Re-analyse the successful scans of a run at its threshold × (1 ± percent/100).

    Parameters
    ----------
    paths : sequence of path
        The scan paths of the main run.
    out_dir : path
        The main run's output folder; sub-runs go to ``sensitivity/minusP`` and
        ``sensitivity/plusP`` in it, the table to ``sensitivity.csv``.
    config : AnalysisConfig
        The main run's settings. The sub-runs change only the threshold (a grey value,
        ``threshold_attenuation`` or ``threshold_density`` in g/cm³ HA) and switch the
        thickness maps off.
    main : RunSummary
        The main run (its successful scans and the threshold it used).
    percent : float
        P, with 0 < P < 50 (%).
    manifest : ctmorph.manifest.Manifest, optional
        The main run's manifest (then ``paths`` is empty); the sub-runs get its entries of
        the successful scans, with their per-scan settings.
    groups, group, jobs, force, verify_inputs, strict, overrides, scheduler, security,
    progress_factory, on_start, on_scan_done
        As for :func:`ctmorph.batch.run_analysis`; QC pictures are never written.

    Returns
    -------
    SensitivityRun

    Raises
    ------
    ConfigError
        A bad percentage, no successful scan in ``main``, or a main threshold that is not a
        positive number (a percentage of it means nothing).
    """
    pct = check_percent(percent)
    out = Path(out_dir)
    ok_rows = [r for r in main.rows if r.get("status") == "ok"]
    if not ok_rows:
        raise ConfigError(f"{out}: no scan was analysed successfully; no threshold to vary")
    if config.threshold_density is not None:
        unit, base = "g/cm³ HA", float(config.threshold_density)
    elif main.threshold is None and main.threshold_attenuation is not None:
        unit, base = "attenuation", float(main.threshold_attenuation)
    else:
        unit, base = "grey", float(main.threshold) if main.threshold is not None else math.nan
    if not (math.isfinite(base) and base > 0):
        raise ConfigError(f"{out}: the threshold sensitivity needs a positive main threshold, "
                          f"got {base:g} {unit}")
    ok_names = {r["scan"] for r in ok_rows}
    if manifest is not None:
        folders: list[Path] = []
        manifest = dataclasses.replace(
            manifest, entries=tuple(e for e in manifest.entries if e.name in ok_names))
        n_scans = len(manifest.entries)
    else:
        folders = _scan_folders(paths, ok_names)
        n_scans = len(folders)
    t0 = time.perf_counter()
    runs: dict[float, RunSummary] = {}
    thresholds: dict[float, float] = {0.0: base}
    for change in (-pct, pct):
        value = base * (1.0 + change / 100.0)
        thresholds[change] = value
        setting = {"grey": "threshold", "attenuation": "threshold_attenuation"}.get(
            unit, "threshold_density")
        cfg = config.replace(**{setting: value}, save_maps=False)
        sub = out / "sensitivity" / variant_name(change)
        logger.info("sensitivity: %d scans at %s %% of the threshold (%.6g %s) into %s",
                    n_scans, f"{change:+g}", value, unit, sub)
        runs[change] = run_analysis(
            folders, sub, cfg, manifest=manifest, groups=groups, group=group, jobs=jobs,
            force=force, verify_inputs=verify_inputs, strict=strict, overrides=overrides,
            scheduler=scheduler,
            security=security, write_qc=False,
            progress_factory=progress_factory, on_start=on_start, on_scan_done=on_scan_done,
        )
    seconds = time.perf_counter() - t0

    params = _parameter_names(ok_rows + [r for s in runs.values() for r in s.rows])
    keep = ["scan", "group", "threshold_change_pct", "threshold_unit", "status", "error",
            "threshold", "threshold_attenuation", "threshold_density", *params]
    table: list[dict[str, Any]] = []
    failed: list[tuple[str, float, str]] = []
    for change in sorted(thresholds):
        rows = ok_rows if change == 0 else runs[change].rows
        by_name = {r["scan"]: r for r in rows}
        for r0 in ok_rows:  # the main run's order; a scan missing from a sub-run fails there
            r = by_name.get(r0["scan"])
            if r is None:
                r = {"scan": r0["scan"], "group": r0.get("group", ""), "status": "failed",
                     "error": f"{r0['scan']}: not found again by the sensitivity run"}
            if r.get("status") != "ok":
                failed.append((r["scan"], change, str(r.get("error", ""))))
            rec = {k: r.get(k) for k in keep}
            rec["threshold_change_pct"] = change
            rec["threshold_unit"] = unit
            table.append(rec)
    for col in ("threshold_attenuation", "threshold_density"):
        if not any(r.get(col) is not None for r in table):
            for rec in table:
                rec.pop(col)
    path = out / "sensitivity.csv"
    write_table(table, path)
    for scan, change, err in failed:
        logger.error("sensitivity: %s failed at %+g %% of the threshold: %s", scan, change, err)
    return SensitivityRun(percent=pct, unit=unit, base=base, thresholds=thresholds, runs=runs,
                          table=path, failed=failed, seconds=seconds,
                          reused=sum(s.reused for s in runs.values()))
