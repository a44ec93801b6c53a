"""Many scans: pooled threshold, per-scan results, failures isolated, outputs written atomically.

One failed scan never loses the others: its row carries ``status=failed`` and the reason,
and the run goes on. Scans come from folders (with a groups file or one group) or from a
manifest (:mod:`ctmorph.manifest`); :func:`check_study` validates a study from the file
headers without analysing it (``ctmorph analyze --dry-run``).

With ``jobs > 1`` the scans run in a pool of processes in two phases: every scan's header and
(for a pooled Otsu threshold) grey histogram, then the measurements, largest scans first.
Each worker gives numba the usable cores divided by the workers busy measuring, re-evaluated
at every pipeline stage, so the last scans of a run get all cores once the queue drains.
Thread counts never change the numbers.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import logging.handlers
import math
import multiprocessing
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._atomic import atomic_path, atomic_write_text
from ._memory import configure_for_scan
from .columns import COLUMN_BY_NAME, order_columns
from .config import AnalysisConfig
from .errors import ConfigError, CtmorphError, ScanError
from .io import Scan, find_scan_dirs, read_scan
from .manifest import Manifest, read_manifest
from .pipeline import STAGES, ScanResult, measure_scan, scan_histogram, software_versions
from .segment.threshold import otsu_threshold

__all__ = [
    "run_analysis",
    "RunSummary",
    "check_study",
    "ScanCheck",
    "default_jobs",
    "read_groups",
    "write_table",
]

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
    #: wall-clock seconds each analysed scan took in its process (reading to QC pictures)
    scan_seconds: dict[str, float] = field(default_factory=dict)

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


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


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
    #: where the scan's settings came from (manifest path, line, overrides), for its JSON
    manifest: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    #: the process that measures the scan is ctmorph's (CLI or pool worker): it may tune malloc
    own_process: bool = field(default=False, compare=False, hash=False)


def _settings_key(job: _Job) -> str:
    cal = ""
    if job.config.calibration:
        cal = hashlib.sha256(Path(job.config.calibration).read_bytes()).hexdigest()[:16]
    return f"{job.config.digest()}|{job.threshold!r}|{cal}|{__version__}"


# ---------------------------------------------------------------------------------------------
# Pool workers: numba threads shared among the busy workers, log records sent to the parent


@dataclass
class _ThreadBudget:
    """Numba threads for the scan a pool worker measures: ``total // busy``, at least 1.

    ``busy`` is a counter shared by the workers of one pool (a ``multiprocessing.Value``); a
    worker counts itself in while it measures a scan, and applies the budget at every pipeline
    stage, so a scan that ends up alone gets all ``total`` threads from its next stage on.
    """

    busy: Any
    total: int

    def start(self) -> None:
        with self.busy.get_lock():
            self.busy.value += 1

    def finish(self) -> None:
        with self.busy.get_lock():
            self.busy.value = max(0, self.busy.value - 1)

    def threads(self) -> int:
        """Threads this worker may use now."""
        return max(1, self.total // max(1, self.busy.value))

    def apply(self) -> int:
        """Set numba's thread count to :meth:`threads` (within the process's maximum)."""
        import numba

        n = max(1, min(self.threads(), numba.config.NUMBA_NUM_THREADS))
        if numba.get_num_threads() != n:
            numba.set_num_threads(n)
        return n


#: The pool worker's thread budget. Set once per worker process by :func:`_init_worker` (the
#: usual ProcessPoolExecutor initializer pattern); empty in the parent and in serial runs.
_WORKER_BUDGET: list[_ThreadBudget] = []


def _init_worker(log_queue: Any, level: int, busy: Any, total: int, parent: int) -> None:
    """Pool worker set-up: die with the parent, send log records to it, join the budget."""
    if hasattr(os, "sched_getaffinity"):  # Linux: an orphaned worker must not keep computing
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(logging.handlers.QueueHandler(log_queue))
    root.setLevel(logging.WARNING)
    logging.getLogger("ctmorph").setLevel(level)
    _WORKER_BUDGET[:] = [_ThreadBudget(busy, total)]


class _Relay(logging.Handler):
    """Hands a worker's log record to the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def _process_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """A spawn pool of ``jobs`` workers whose log records reach this process's handlers."""
    ctx = multiprocessing.get_context("spawn")
    log_queue = ctx.Queue()
    busy = ctx.Value("i", 0)
    listener = logging.handlers.QueueListener(log_queue, _Relay())
    listener.start()
    level = logging.getLogger("ctmorph").getEffectiveLevel()
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_init_worker,
        initargs=(log_queue, level, busy, default_jobs(), os.getpid()),
    )
    try:
        yield pool
    except BaseException:  # Ctrl-C or an error: do not start the queued scans
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        listener.stop()


def _run_job(
    job: _Job, progress: Callable[[str], None] | None = None
) -> tuple[dict, bool, float]:
    """Analyse one scan (or reuse its stored result); returns (row, reused, wall seconds)."""
    t0 = time.perf_counter()
    if job.numba_threads:
        import numba

        numba.set_num_threads(job.numba_threads)
    budget = _WORKER_BUDGET[0] if _WORKER_BUDGET else None
    threads_used: dict[str, int] = {}

    def step(stage: str) -> None:
        if budget is not None:
            threads_used[stage] = budget.apply()
        if progress is not None:
            progress(stage)

    if budget is not None:
        budget.start()
    try:
        scan = read_scan(job.folder, voxel_size_um=job.config.voxel_size_um)
        if job.own_process:  # a large scan: keep the resident set close to what is alive
            configure_for_scan(math.prod(scan.shape) * scan.dtype.itemsize)
        fingerprint = scan_fingerprint(scan)
        key = _settings_key(job)
        if not job.force:
            prev = _previous_row(job.out / job.name, fingerprint, key)
            if prev is not None:
                prev["group"] = job.group
                return prev, True, time.perf_counter() - t0
        res = measure_scan(
            job.folder, job.config, threshold=job.threshold, threshold_method=job.method,
            progress=step,
        )
        res.row["group"] = job.group
        res.details["fingerprint"] = fingerprint
        res.details["settings_key"] = key
        if job.manifest is not None:
            res.details["manifest"] = job.manifest
        if threads_used:
            res.details["numba_threads"] = threads_used
        _write_scan_outputs(res, job.out / job.name, job.write_qc)
        return res.row, False, time.perf_counter() - t0
    except CtmorphError as exc:
        logger.error("%s", exc)
        return _failed_row(job.name, job.group, str(exc)), False, time.perf_counter() - t0
    except Exception as exc:  # one broken scan must not lose the others
        logger.error("%s: internal error: %s", job.name, exc)
        logger.debug("%s", traceback.format_exc())
        msg = f"{job.name}: internal error: {type(exc).__name__}: {exc}"
        return _failed_row(job.name, job.group, msg), False, time.perf_counter() - t0
    finally:
        if budget is not None:
            budget.finish()


# ---------------------------------------------------------------------------------------------
# Which scans, with which group and settings


@dataclass
class _Planned:
    name: str
    folder: Path | None
    group: str | None
    config: AnalysisConfig
    error: str | None = None
    manifest: dict[str, Any] | None = None


def _plan(
    paths: Sequence[str | Path],
    cfg: AnalysisConfig,
    *,
    manifest: Manifest | str | Path | None,
    groups: Mapping[str, str] | None,
    group: str | None,
) -> list[_Planned]:
    """The run's scans in order, each with its group, settings or the reason it cannot run."""
    if manifest is not None:
        if paths or groups is not None or group is not None:
            raise ConfigError(
                "a manifest lists the scans and their groups: give no scan folders, groups "
                "file or group with it"
            )
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(manifest, cfg)
        return [
            _Planned(e.name, e.folder, e.group, e.config(cfg), manifest=manifest.provenance(e))
            for e in manifest.entries
        ]
    found: list[tuple[str, Path | None, str | None]] = []  # name, folder, early error
    for p in paths:
        try:
            for d in find_scan_dirs([p]):
                found.append((d.name, d, None))
        except ScanError as exc:
            found.append((Path(p).name or str(p), None, str(exc)))
    seen: set[str] = set()
    for name, _, _ in found:
        if name in seen:
            raise ConfigError(
                f"two scan folders are both named {name!r}; scan names must be unique"
            )
        seen.add(name)
    planned = []
    for name, folder, err in found:
        g: str | None = ""
        if group is not None:
            g = group
        elif groups is not None:
            g = groups.get(name) or None
            if g is None and not err:
                err = f"{name}: scan is not listed with a group in the groups file"
        planned.append(_Planned(name, folder, g, cfg, error=err or (None if folder else
                                                                      "not found")))
    return planned


@dataclass
class _Probe:
    """What the headers (and, when asked, the pixels) of one scan say."""

    name: str
    shape: tuple[int, int, int] | None = None
    bit_depth: int | None = None
    voxel_um: float | None = None
    hist: np.ndarray | None = None
    error: str | None = None


def _probe(name: str, folder: Path, cfg: AnalysisConfig, hist_cache: Path | None) -> _Probe:
    """Read one scan's headers, and its grey histogram when ``hist_cache`` is given."""
    try:
        scan = read_scan(folder, voxel_size_um=cfg.voxel_size_um)
        hist = _cached_histogram(scan, hist_cache) if hist_cache is not None else None
    except CtmorphError as exc:
        return _Probe(name, error=str(exc))
    except Exception as exc:  # one broken scan must not lose the others
        return _Probe(name, error=f"{name}: internal error: {type(exc).__name__}: {exc}")
    return _Probe(name, scan.shape, scan.dtype.itemsize * 8, scan.voxel_size_um, hist)


def _bit_depth_problems(probes: Sequence[_Probe]) -> dict[str, str]:
    """Scans whose bit depth differs from most scans' (ties: the first scan's), with why.

    One study-wide grey threshold means nothing across bit depths.
    """
    depths = [p.bit_depth for p in probes if p.error is None and p.bit_depth is not None]
    if not depths:
        return {}
    counts = Counter(depths)
    top = max(counts.values())
    common = next(d for d in depths if counts[d] == top)
    return {
        p.name: (f"{p.name}: slices are {p.bit_depth}-bit but most scans of the run are "
                 f"{common}-bit; one study-wide grey threshold needs one bit depth")
        for p in probes if p.error is None and p.bit_depth not in (None, common)
    }


def _voi_problem(p: _Probe, cfg: AnalysisConfig) -> str | None:
    """A VOI that cannot fit in the scan whatever the growth plate's position (auto ROI)."""
    if cfg.roi != "auto" or p.shape is None or p.voxel_um is None:
        return None
    length = p.shape[0] * p.voxel_um / 1000.0
    ends = [("trabecular", cfg.roi_offset_mm + cfg.roi_height_mm)]
    if cfg.cortical_offset_mm is not None:
        ends.append(("cortical", cfg.cortical_offset_mm + cfg.cortical_height_mm))
    for what, end in ends:
        if end >= length:
            return (f"{p.name}: the scan is {length:.3g} mm long, too short for the {what} VOI "
                    f"ending {end:g} mm proximal of the growth plate")
    return None


def _threshold_problem(p: _Probe, cfg: AnalysisConfig) -> str | None:
    if cfg.threshold_density is not None or cfg.threshold == "otsu" or p.bit_depth is None:
        return None
    gmax = 2 ** p.bit_depth - 1
    if not 0 <= float(cfg.threshold) < gmax:
        return (f"{p.name}: threshold {float(cfg.threshold):g} is outside the grey range "
                f"0..{gmax} of its {p.bit_depth}-bit slices")
    return None


# ---------------------------------------------------------------------------------------------
# Dry run


@dataclass(frozen=True)
class ScanCheck:
    """One scan as a dry run sees it.

    Attributes
    ----------
    name, group : str
    folder : Path or None
    n_slices : int or None
    slice_shape : (int, int) or None
        ``(ny, nx)`` pixels.
    voxel_um : float or None
        Voxel size in µm (log or override).
    bit_depth : int or None
        8 or 16, from the slice headers.
    problem : str or None
        Why the scan cannot be analysed; None when it is valid.
    """

    name: str
    group: str
    folder: Path | None
    n_slices: int | None = None
    slice_shape: tuple[int, int] | None = None
    voxel_um: float | None = None
    bit_depth: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_study(
    paths: Sequence[str | Path] = (),
    config: AnalysisConfig | None = None,
    *,
    manifest: Manifest | str | Path | None = None,
    groups: Mapping[str, str] | None = None,
    group: str | None = None,
) -> list[ScanCheck]:
    """Validate every scan of a study without analysing it and without writing anything.

    Reads logs and slice-file headers only, never pixel data (a slice whose pixel data is
    corrupt behind a valid header passes here and fails that scan in the run). Checks: the
    folder exists, the log parses, the voxel size is known, the slices are complete, of one
    size and one bit depth; the bit depth is the study's (for a grey threshold); the scan has
    a group; the VOIs of its (overridden) settings fit in its length; a fixed threshold is
    inside its grey range.

    Parameters
    ----------
    paths, config, manifest, groups, group
        As for :func:`run_analysis`.

    Returns
    -------
    list of ScanCheck
        In run order.

    Raises
    ------
    ConfigError
        Problems of the whole study: an invalid manifest, two scans with one name, a
        manifest given together with folders or groups.
    """
    cfg = config or AnalysisConfig()
    planned = _plan(paths, cfg, manifest=manifest, groups=groups, group=group)
    probes: dict[str, _Probe] = {}
    for item in planned:
        if item.error is None and item.folder is not None:
            probes[item.name] = _probe(item.name, item.folder, item.config, None)
    grey_threshold = cfg.threshold_density is None
    depth = _bit_depth_problems(list(probes.values())) if grey_threshold else {}
    checks = []
    for item in planned:
        p = probes.get(item.name, _Probe(item.name))
        problem = (item.error or p.error or depth.get(item.name)
                   or _voi_problem(p, item.config) or _threshold_problem(p, item.config))
        checks.append(ScanCheck(
            name=item.name, group=item.group or "", folder=item.folder,
            n_slices=p.shape[0] if p.shape else None,
            slice_shape=(p.shape[1], p.shape[2]) if p.shape else None,
            voxel_um=p.voxel_um, bit_depth=p.bit_depth, problem=problem,
        ))
    return checks


# ---------------------------------------------------------------------------------------------
# The run


def run_analysis(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: AnalysisConfig | None = None,
    *,
    manifest: Manifest | str | Path | None = None,
    groups: Mapping[str, str] | None = None,
    group: str | None = None,
    progress_factory: ProgressFactory | None = None,
    write_qc: bool = True,
    jobs: int = 1,
    force: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_scan_done: Callable[[dict[str, Any]], None] | None = None,
    scheduler: str | None = None,
    security: Any = None,
    tune_allocator: bool = False,
) -> RunSummary:
    """Analyse every scan folder under ``paths`` and write the run's outputs into ``out_dir``.

    Parameters
    ----------
    paths : sequence of path
        Scan folders, or parent folders whose subfolders are scans (empty with ``manifest``).
    out_dir : path
        Output folder: ``morphometry.csv``, ``columns.csv``, ``run.json`` and one folder per
        scan with ``morphometry.json`` and QC pictures.
    config : AnalysisConfig, optional
        Settings; with ``threshold="otsu"`` one Otsu threshold is computed on the pooled
        histogram of all readable scans and used for every scan.
    manifest : Manifest or path, optional
        A study manifest (:mod:`ctmorph.manifest`): the scans, their groups and per-scan
        settings, which enter that scan's settings, resume key and JSON. Excludes ``paths``,
        ``groups`` and ``group``.
    groups : mapping, optional
        ``{scan: group}``; a scan missing from it fails with that reason.
    group : str, optional
        One group label for every scan (instead of ``groups``).
    progress_factory : callable, optional
        Makes a per-scan stage callback (the CLI passes progress bars); serial runs only.
    write_qc : bool
        Write QC pictures per scan.
    jobs : int
        Scans analysed in parallel processes (numba threads are divided among the busy ones);
        the numbers do not depend on it. :func:`default_jobs` gives the usable cores.
    force : bool
        Recompute every scan; otherwise a scan whose files, settings and threshold are
        unchanged since its ``morphometry.json`` was written is not recomputed.
    on_start : callable, optional
        Called with the number of scans about to be analysed, once the threshold is known.
    on_scan_done : callable, optional
        Called with each scan's row as it finishes (the CLI's run progress bar).
    scheduler : str, optional
        Run the scans on this Dask cluster instead of local processes: ``tcp://HOST:PORT``,
        ``tls://HOST:PORT`` or a scheduler file (needs ``ctmorph[distributed]``; see
        docs/cluster.md). Workers must see the scan and output folders at the same paths.
    security : distributed.security.Security, optional
        TLS settings for a ``tls://`` scheduler.
    tune_allocator : bool
        This process belongs to the caller (the CLI): a scan of at least
        :data:`ctmorph._memory.LARGE_SCAN_BYTES` may fix glibc's malloc thresholds in it to
        bound its resident set. ``jobs > 1`` pool workers always may (ctmorph starts them);
        Dask workers never are.

    Returns
    -------
    RunSummary

    Notes
    -----
    Scans whose bit depth differs from most scans' fail (one grey threshold per study)
    unless the threshold is given in density units.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    kwargs = dict(manifest=manifest, groups=groups, group=group,
                  progress_factory=progress_factory, write_qc=write_qc, jobs=jobs, force=force,
                  on_start=on_start, on_scan_done=on_scan_done)
    if not scheduler:
        kwargs["tune_allocator"] = tune_allocator
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
    manifest: Manifest | str | Path | None,
    groups: Mapping[str, str] | None,
    group: str | None,
    progress_factory: ProgressFactory | None,
    write_qc: bool,
    jobs: int,
    force: bool,
    on_start: Callable[[int], None] | None,
    on_scan_done: Callable[[dict[str, Any]], None] | None,
    tune_allocator: bool = False,
) -> RunSummary:
    cfg = config or AnalysisConfig()
    planned = _plan(paths, cfg, manifest=manifest, groups=groups, group=group)
    out = Path(out_dir).resolve()  # absolute: workers elsewhere write into it
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    rows: dict[str, dict[str, Any]] = {}
    pending: list[_Planned] = []
    for item in planned:
        if item.error is not None or item.folder is None:
            rows[item.name] = _failed_row(item.name, item.group, item.error or "not found")
        else:
            pending.append(item)
    pooled_otsu = cfg.threshold_density is None and cfg.threshold == "otsu"
    jobs = min(jobs, max(1, len(pending)))
    use_pool = client is None and jobs > 1
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(_process_pool(jobs)) if use_pool else None

        # phase 1: headers (and histograms for a pooled Otsu threshold), in the pool
        if pooled_otsu:
            logger.info("grey histograms of %d scans for the pooled Otsu threshold", len(pending))
        probe_args = [(i.name, i.folder.resolve(), i.config,
                       out / i.name / "histogram.npz" if pooled_otsu else None) for i in pending]
        if pool is not None:
            probes = list(pool.map(_probe, *zip(*probe_args, strict=True)))
        else:
            probes = [_probe(*a) for a in probe_args]
        bad = _bit_depth_problems(probes) if cfg.threshold_density is None else {}
        for p in probes:
            problem = p.error or bad.get(p.name) or _threshold_problem(p, cfg)
            if problem:
                logger.error("%s", problem)
                g = next(i.group for i in pending if i.name == p.name)
                rows[p.name] = _failed_row(p.name, g, problem)
        ok = {p.name: p for p in probes if p.name not in rows}
        pending = [i for i in pending if i.name in ok]

        threshold: float | None = None
        method = "fixed"
        if cfg.threshold_density is not None:
            method = f"density {cfg.threshold_density:g} g/cm³ HA"
        elif pooled_otsu:
            hists = [ok[i.name].hist for i in pending]
            if hists:
                threshold = otsu_threshold(np.sum(hists, axis=0))
                method = f"otsu (pooled over {len(hists)} scans)"
                logger.info("pooled Otsu threshold over %d scans: %g", len(hists), threshold)
        else:
            threshold = float(cfg.threshold)

        # phase 2: the measurements, largest scans first when parallel
        work = [
            _Job(i.name, i.folder.resolve(), i.group or "", i.config, threshold, method, out,
                 write_qc, force, manifest=i.manifest,
                 own_process=pool is not None or (client is None and tune_allocator))
            for i in pending
        ]
        if pool is not None:
            work.sort(key=lambda j: -math.prod(ok[j.name].shape or (0,)))
        if on_start:
            on_start(len(work))
        reused = 0
        scan_seconds: dict[str, float] = {}

        def done(job: _Job, outcome: Any) -> None:
            nonlocal reused
            if isinstance(outcome, BaseException):  # worker died, KilledWorker, ...
                row, was_reused, secs = _failed_row(
                    job.name, job.group,
                    f"{job.name}: worker failed: {type(outcome).__name__}: {outcome}",
                ), False, float("nan")
            else:
                row, was_reused, secs = outcome
            rows[job.name] = row
            reused += was_reused
            scan_seconds[job.name] = secs
            if on_scan_done:
                on_scan_done(row)

        if client is not None:
            from .distributed import map_unordered, numba_threads_per_task

            threads = numba_threads_per_task(client)
            work = [dataclasses.replace(job, numba_threads=threads) for job in work]
            results = map_unordered(client, _run_job, work, key_prefix="ctmorph-scan")
            with contextlib.closing(results):  # Ctrl-C: cancel the scans not started
                for job, outcome in results:
                    done(job, outcome)
        elif pool is not None:
            futures: dict[Future, _Job] = {pool.submit(_run_job, job): job for job in work}
            for fut in as_completed(futures):
                try:
                    outcome = fut.result()
                except Exception as exc:  # a worker died (e.g. out of memory)
                    outcome = exc
                done(futures[fut], outcome)
        else:
            for job in work:
                bar = progress_factory(job.name, STAGES) if progress_factory else None
                try:
                    outcome = _run_job(job, bar)
                finally:
                    if bar is not None and hasattr(bar, "close"):
                        bar.close()
                done(job, outcome)
    if reused:
        logger.info("%d scans unchanged since the last run were not recomputed", reused)

    ordered = [rows[item.name] for item in planned]
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
        scan_seconds=scan_seconds,
    )
    run_info = {
        "config": cfg.to_dict(),
        "config_hash": cfg.digest(),
        "manifest": next((i.manifest["path"] for i in planned if i.manifest), None),
        "threshold": threshold,
        "threshold_method": method,
        "scans": [r["scan"] for r in ordered],
        "failed": dict(summary.failed),
        "jobs": jobs,
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
