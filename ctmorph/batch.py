"""Many scans: pooled threshold, per-scan results, failures isolated, outputs written atomically.

One failed scan never loses the others: its row carries ``status=failed`` and the reason,
and the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._atomic import atomic_path, atomic_write_text
from .columns import COLUMN_BY_NAME, order_columns
from .config import AnalysisConfig
from .errors import ConfigError, CtmorphError, ScanError
from .io import Scan, find_scan_dirs, read_scan
from .pipeline import STAGES, ScanResult, measure_scan, scan_histogram, software_versions
from .segment.threshold import otsu_threshold

__all__ = ["run_analysis", "RunSummary", "read_groups", "write_table"]

logger = logging.getLogger(__name__)

#: ``progress_factory(scan_name, stages) -> callable(stage)``; the returned callable may also
#: have a ``close()`` method, called when the scan is finished.
ProgressFactory = Callable[[str, Sequence[str]], Callable[[str], None]]


@dataclass
class RunSummary:
    """What a run produced."""

    rows: list[dict[str, Any]]
    out_dir: Path
    threshold: float | None
    threshold_method: str
    seconds: float
    failed: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0

    @property
    def n_ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def read_groups(path: str | Path) -> dict[str, str]:
    """Read a ``scan,group`` CSV into ``{scan: group}``.

    Raises
    ------
    ConfigError
        If the file is missing, lacks the columns, or lists a scan twice.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the groups file ({exc.strerror})") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "scan" not in fields or "group" not in fields:
        raise ConfigError(f"{p}: a groups file needs the columns 'scan,group', found {fields}")
    groups: dict[str, str] = {}
    for line_no, rec in enumerate(reader, start=2):
        rec = {k.strip().lower(): (v or "").strip() for k, v in rec.items() if k}
        scan, group = rec.get("scan", ""), rec.get("group", "")
        if not scan:
            continue
        if scan in groups:
            raise ConfigError(f"{p}: line {line_no}: scan {scan!r} is listed twice")
        groups[scan] = group
    return groups


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if not math.isfinite(value) else repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def write_table(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write rows as CSV atomically, columns in registry order (union of all rows' keys)."""
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    cols = order_columns(names)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in cols])
    atomic_write_text(path, buf.getvalue())


def _write_columns(names: Sequence[str], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["column", "unit", "description", "reference"])
    for n in names:
        c = COLUMN_BY_NAME.get(n)
        w.writerow([n, c.unit if c else "", c.description if c else "", c.reference if c else ""])
    atomic_write_text(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _failed_row(name: str, group: str | None, error: str) -> dict[str, Any]:
    return {"scan": name, "group": group or "", "status": "failed", "error": error}


def scan_fingerprint(scan: Scan) -> str:
    """Cheap identity of a scan's files (names, sizes, modification times) for resumption.

    The content hash (``input_hash``) is the provenance; this one only decides whether a
    finished scan must be recomputed, without reading every slice again.
    """
    h = hashlib.sha256()
    files = list(scan.files)
    if scan.log is not None and scan.log.path is not None:
        files.append(Path(scan.log.path))
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "stat:" + h.hexdigest()[:24]


def _cached_histogram(scan: Scan, cache: Path) -> np.ndarray:
    """The scan's grey histogram, reused from ``cache`` when the fingerprint matches."""
    fp = scan_fingerprint(scan)
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if str(z["fingerprint"]) == fp:
                    return z["hist"]
        except (OSError, KeyError, ValueError):
            pass
    hist = scan_histogram(scan)
    with atomic_path(cache, suffix=".npz.tmp") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, hist=hist, fingerprint=np.array(fp))
    return hist


def _previous_row(folder: Path, fingerprint: str, settings_key: str) -> dict[str, Any] | None:
    """The stored row of a finished scan if its inputs and settings are unchanged."""
    path = folder / "morphometry.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("fingerprint") != fingerprint or info.get("settings_key") != settings_key:
        return None
    row = info.get("row")
    return row if isinstance(row, dict) and row.get("status") == "ok" else None


@dataclass(frozen=True)
class _Job:
    name: str
    folder: Path
    group: str
    config: AnalysisConfig
    threshold: float | None
    method: str
    out: Path
    write_qc: bool
    force: bool
    numba_threads: int = 0


def _settings_key(job: _Job) -> str:
    cal = ""
    if job.config.calibration:
        cal = hashlib.sha256(Path(job.config.calibration).read_bytes()).hexdigest()[:16]
    return f"{job.config.digest()}|{job.threshold!r}|{cal}|{__version__}"


def _run_job(job: _Job, progress: Callable[[str], None] | None = None) -> tuple[dict, bool]:
    """Analyse one scan (or reuse its stored result); returns (row, reused)."""
    if job.numba_threads:
        import numba

        numba.set_num_threads(job.numba_threads)
    try:
        scan = read_scan(job.folder, voxel_size_um=job.config.voxel_size_um)
        fingerprint = scan_fingerprint(scan)
        key = _settings_key(job)
        if not job.force:
            prev = _previous_row(job.out / job.name, fingerprint, key)
            if prev is not None:
                prev["group"] = job.group
                return prev, True
        res = measure_scan(
            job.folder, job.config, threshold=job.threshold, threshold_method=job.method,
            progress=progress,
        )
        res.row["group"] = job.group
        res.details["fingerprint"] = fingerprint
        res.details["settings_key"] = key
        _write_scan_outputs(res, job.out / job.name, job.write_qc)
        return res.row, False
    except CtmorphError as exc:
        logger.error("%s", exc)
        return _failed_row(job.name, job.group, str(exc)), False
    except Exception as exc:  # one broken scan must not lose the others
        logger.error("%s: internal error: %s", job.name, exc)
        logger.debug("%s", traceback.format_exc())
        msg = f"{job.name}: internal error: {type(exc).__name__}: {exc}"
        return _failed_row(job.name, job.group, msg), False


def run_analysis(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: AnalysisConfig | None = None,
    *,
    groups: Mapping[str, str] | None = None,
    group: str | None = None,
    progress_factory: ProgressFactory | None = None,
    write_qc: bool = True,
    jobs: int = 1,
    force: bool = False,
    on_scan_done: Callable[[dict[str, Any]], None] | None = None,
    scheduler: str | None = None,
    security: Any = None,
) -> RunSummary:
    """Analyse every scan folder under ``paths`` and write the run's outputs into ``out_dir``.

    Parameters
    ----------
    paths : sequence of path
        Scan folders, or parent folders whose subfolders are scans.
    out_dir : path
        Output folder: ``morphometry.csv``, ``columns.csv``, ``run.json`` and one folder per
        scan with ``morphometry.json`` and QC pictures.
    config : AnalysisConfig, optional
        Settings; with ``threshold="otsu"`` one Otsu threshold is computed on the pooled
        histogram of all readable scans and used for every scan.
    groups : mapping, optional
        ``{scan: group}``; a scan missing from it fails with that reason.
    group : str, optional
        One group label for every scan (instead of ``groups``).
    progress_factory : callable, optional
        Makes a per-scan stage callback (the CLI passes progress bars).
    write_qc : bool
        Write QC pictures per scan.
    jobs : int
        Scans analysed in parallel processes (numba threads are divided among them); the
        numbers do not depend on it.
    force : bool
        Recompute every scan; otherwise a scan whose files, settings and threshold are
        unchanged since its ``morphometry.json`` was written is not recomputed.
    on_scan_done : callable, optional
        Called with each scan's row as it finishes (the CLI's run progress bar).
    scheduler : str, optional
        Run the scans on this Dask cluster instead of local processes: ``tcp://HOST:PORT``,
        ``tls://HOST:PORT`` or a scheduler file (needs ``ctmorph[distributed]``; see
        docs/cluster.md). Workers must see the scan and output folders at the same paths.
    security : distributed.security.Security, optional
        TLS settings for a ``tls://`` scheduler.

    Returns
    -------
    RunSummary
    """
    kwargs = dict(groups=groups, group=group, progress_factory=progress_factory,
                  write_qc=write_qc, jobs=jobs, force=force, on_scan_done=on_scan_done)
    if not scheduler:
        return _analyse(paths, out_dir, config, client=None, **kwargs)
    from .distributed import check_versions, connect

    with connect(scheduler, security=security) as client:  # fails fast, before any reading
        check_versions(client)
        return _analyse(paths, out_dir, config, client=client, **kwargs)


def _analyse(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: AnalysisConfig | None,
    *,
    client: Any,
    groups: Mapping[str, str] | None,
    group: str | None,
    progress_factory: ProgressFactory | None,
    write_qc: bool,
    jobs: int,
    force: bool,
    on_scan_done: Callable[[dict[str, Any]], None] | None,
) -> RunSummary:
    cfg = config or AnalysisConfig()
    out = Path(out_dir).resolve()  # absolute: workers elsewhere write into it
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    scans: list[tuple[str, Path | None, str | None]] = []  # name, folder, early error
    for p in paths:
        try:
            for d in find_scan_dirs([p]):
                scans.append((d.name, d, None))
        except ScanError as exc:
            scans.append((Path(p).name or str(p), None, str(exc)))
    seen: set[str] = set()
    for name, _, _ in scans:
        if name in seen:
            raise ConfigError(
                f"two scan folders are both named {name!r}; scan names must be unique"
            )
        seen.add(name)

    def group_of(name: str) -> tuple[str | None, str | None]:
        if group is not None:
            return group, None
        if groups is None:
            return "", None
        g = groups.get(name)
        if not g:
            return None, f"{name}: scan is not listed with a group in the groups file"
        return g, None

    pending: list[tuple[str, Path, str]] = []
    rows: dict[str, dict[str, Any]] = {}
    for name, folder, err in scans:
        g, gerr = group_of(name)
        if err or gerr or folder is None:
            rows[name] = _failed_row(name, g, err or gerr or "not found")
        else:
            pending.append((name, folder, g or ""))

    threshold: float | None = None
    method = "fixed"
    if cfg.threshold_density is not None:
        method = f"density {cfg.threshold_density:g} g/cm³ HA"
    elif cfg.threshold == "otsu":
        pooled = None
        n_pooled = 0
        for name, folder, g in list(pending):
            try:
                scan = read_scan(folder, voxel_size_um=cfg.voxel_size_um)
                h = _cached_histogram(scan, out / name / "histogram.npz")
            except CtmorphError as exc:
                rows[name] = _failed_row(name, g, str(exc))
                pending.remove((name, folder, g))
                continue
            if pooled is None:
                pooled = h.copy()
            elif pooled.size != h.size:
                rows[name] = _failed_row(
                    name, g, f"{name}: bit depth differs from the other scans of the run; "
                    "one pooled threshold needs scans of one bit depth",
                )
                pending.remove((name, folder, g))
                continue
            else:
                pooled += h
            n_pooled += 1
        if pooled is not None:
            threshold = otsu_threshold(pooled)
            method = f"otsu (pooled over {n_pooled} scans)"
            logger.info("pooled Otsu threshold over %d scans: %g", n_pooled, threshold)
    else:
        threshold = float(cfg.threshold)

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    jobs = min(jobs, max(1, len(pending)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    work = [
        _Job(name, folder.resolve(), g, cfg, threshold, method, out, write_qc, force, threads)
        for name, folder, g in pending
    ]
    reused = 0
    if client is not None:
        from .distributed import map_unordered, numba_threads_per_task

        threads = numba_threads_per_task(client)
        work = [dataclasses.replace(job, numba_threads=threads) for job in work]
        results = map_unordered(client, _run_job, work, key_prefix="ctmorph-scan")
        with contextlib.closing(results):  # Ctrl-C: cancel the scans not started
            for job, outcome in results:
                if isinstance(outcome, BaseException):  # worker died, KilledWorker, ...
                    row, was_reused = _failed_row(
                        job.name, job.group,
                        f"{job.name}: worker failed: {type(outcome).__name__}: {outcome}",
                    ), False
                else:
                    row, was_reused = outcome
                rows[job.name] = row
                reused += was_reused
                if on_scan_done:
                    on_scan_done(row)
    elif jobs == 1:
        for job in work:
            bar = progress_factory(job.name, STAGES) if progress_factory else None
            try:
                row, was_reused = _run_job(job, bar)
            finally:
                if bar is not None and hasattr(bar, "close"):
                    bar.close()
            rows[job.name] = row
            reused += was_reused
            if on_scan_done:
                on_scan_done(row)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_run_job, job): job for job in work}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    row, was_reused = fut.result()
                except Exception as exc:  # a worker died (e.g. out of memory)
                    row, was_reused = _failed_row(
                        job.name, job.group, f"{job.name}: worker failed: {exc}"
                    ), False
                rows[job.name] = row
                reused += was_reused
                if on_scan_done:
                    on_scan_done(row)
    if reused:
        logger.info("%d scans unchanged since the last run were not recomputed", reused)

    ordered = [rows[name] for name, _, _ in scans]
    write_table(ordered, out / "morphometry.csv")
    if write_qc:
        from .qc import write_qc_overview

        write_qc_overview(out, ordered)
    names: list[str] = []
    for r in ordered:
        names.extend(k for k in r if k not in names)
    _write_columns(order_columns(names), out / "columns.csv")
    summary = RunSummary(
        rows=ordered,
        out_dir=out,
        threshold=threshold,
        threshold_method=method,
        seconds=time.perf_counter() - t0,
        failed=[(r["scan"], r["error"]) for r in ordered if r["status"] != "ok"],
        reused=reused,
    )
    run_info = {
        "config": cfg.to_dict(),
        "config_hash": cfg.digest(),
        "threshold": threshold,
        "threshold_method": method,
        "scans": [r["scan"] for r in ordered],
        "failed": dict(summary.failed),
        "seconds": round(summary.seconds, 3),
        "versions": software_versions(),
    }
    atomic_write_text(out / "run.json", json.dumps(run_info, indent=2, default=_json_default))
    return summary


def _write_scan_outputs(res: ScanResult, folder: Path, write_qc: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"row": res.row, **res.details}
    atomic_write_text(
        folder / "morphometry.json", json.dumps(payload, indent=2, default=_json_default)
    )
    if res.maps:
        import tifffile

        um = float(res.row["voxel_um"])
        for name, m in res.maps.items():
            with atomic_path(folder / "maps" / f"{name}.tif") as tmp:
                # ImageJ hyperstack with the voxel size, values in mm
                tifffile.imwrite(
                    tmp, m.astype(np.float32), imagej=True,
                    resolution=(1000.0 / um, 1000.0 / um),
                    metadata={"spacing": um / 1000.0, "unit": "mm", "axes": "ZYX"},
                )
    if write_qc and res.qc is not None:
        from .qc import write_qc_pictures

        write_qc_pictures(res.qc, folder / "qc", res.row["scan"])
