"""Many scans: one study threshold, per-scan results, failures isolated, outputs atomic.

One failed scan never loses the others and never changes their numbers: its row carries
``status=failed`` and the reason, a scan that cannot be measured never enters the pooled
threshold, and the run goes on. Scans come from folders (with a groups file or one group) or
from a manifest (:mod:`ctmorph.manifest`); :func:`check_study` validates a study from the file
headers without analysing it (``ctmorph analyze --dry-run``).

The study threshold is one physical threshold (docs/DESIGN.md §2): pooled and applied in attenuation
through each scan's own CS window (:mod:`ctmorph.segment.pooling`), so scans reconstructed with
different windows or bit depths are segmented at the same attenuation.

With ``jobs > 1`` the scans run in a pool of processes (:class:`ctmorph.workers.WorkerPool`) in
two phases: every scan's header and (for a pooled Otsu threshold) grey histogram, then the
measurements, largest scans first. A worker that dies (out of memory, a crash) fails only the
scan it was measuring; a fresh worker takes its place. Each worker gives numba the usable cores
divided by the workers busy measuring, re-evaluated at every pipeline stage. Thread counts
never change the numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import logging.handlers
import math
import multiprocessing
import os
import signal
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._atomic import atomic_path, atomic_write_text, ensure_output_dir
from ._memory import configure_for_scan
from .columns import order_columns
from .config import AnalysisConfig
from .errors import ConfigError, CtmorphError, OutputError, ScanError
from .io import Scan, find_scan_dirs, read_scan, scan_name
from .manifest import Manifest, read_groups, read_manifest
from .outputs import (
    MARKER,
    finished_result,
    json_text,
    write_columns,
    write_scan_outputs,
    write_table,
)
from .pipeline import STAGES, measure_scan, scan_histogram, software_versions
from .segment.pooling import GreyScale, StudyThreshold, pooled_otsu
from .workers import WorkerDied, WorkerPool, describe_exit

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
    """What a run produced.

    Attributes
    ----------
    rows : list of dict
        One row per scan, in run order.
    out_dir : Path
    threshold : float or None
        The study threshold as a grey value, when every scan has the same grey scale (CS
        window and bit depth); None when the scans' grey thresholds differ (then see
        ``threshold_attenuation``), and for a density threshold.
    threshold_method : str
    seconds : float
        Wall time of the run.
    failed : list of (scan, error)
    reused : int
        Scans not recomputed because nothing changed.
    scan_seconds : dict
        Wall-clock seconds each scan took in its process (reading to QC pictures).
    threshold_attenuation : float or None
        The study threshold in attenuation (NRecon CS units), when the scans have CS windows.
    threshold_scans : tuple of str
        The scans whose histograms made a pooled Otsu threshold (empty otherwise).
    """

    rows: list[dict[str, Any]]
    out_dir: Path
    threshold: float | None
    threshold_method: str
    seconds: float
    failed: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0
    scan_seconds: dict[str, float] = field(default_factory=dict)
    threshold_attenuation: float | None = None
    threshold_scans: tuple[str, ...] = ()

    @property
    def n_ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.rows)

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def _failed_row(name: str, group: str | None, error: str) -> dict[str, Any]:
    return {"scan": name, "group": group or "", "status": "failed", "error": error}


def scan_fingerprint(scan: Scan) -> str:
    """Cheap identity of a scan's files (names, sizes, modification times) for resumption.

    The content hash (``input_hash``) is the provenance, and is compared too with
    ``verify_inputs``; this one decides without reading every slice again.
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
    """The scan's grey histogram, reused from ``cache`` when the fingerprint matches.

    The cache is an ``.npz`` whose members carry a fixed date, so identical inputs give an
    identical file (``np.savez`` would stamp the current time).
    """
    fp = scan_fingerprint(scan)
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if str(z["fingerprint"]) == fp:
                    return z["hist"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass
    hist = scan_histogram(scan)
    with atomic_path(cache, suffix=".npz.tmp") as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for key, arr in (("hist", hist), ("fingerprint", np.array(fp))):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                            buf.getvalue())
    return hist


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class _Job:
    name: str
    scan: Scan
    group: str
    config: AnalysisConfig
    threshold: float | None
    method: str
    out: Path
    write_qc: bool
    force: bool
    numba_threads: int = 0
    #: the study threshold in attenuation, reported in the row (None: from the scan's window)
    threshold_attenuation: float | None = None
    #: compare the inputs' content hash before reusing a finished scan
    verify_inputs: bool = False
    #: where the scan's own settings came from, for its JSON: ``manifest`` (path, line,
    #: overrides) and ``overrides`` (the --overrides file: path, line, values)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: the process that measures the scan is ctmorph's (CLI or pool worker): it may tune malloc
    own_process: bool = field(default=False, compare=False, hash=False)


def _settings_key(job: _Job) -> str:
    cal = ""
    if job.config.calibration:
        cal = hashlib.sha256(Path(job.config.calibration).read_bytes()).hexdigest()[:16]
    return f"{job.config.digest()}|{job.threshold!r}|{cal}|{__version__}"


@dataclass
class _Outcome:
    """What one scan's job returns to the parent."""

    row: dict[str, Any]
    reused: bool
    seconds: float
    #: numba threads used per pipeline stage (pool workers)
    threads: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Pool workers: numba threads shared among the busy workers, log records sent to the parent


@dataclass
class _ThreadBudget:
    """Numba threads for the scan a pool worker measures: ``total // busy``, at least 1.

    ``busy`` is an array shared by the workers of one pool (a ``multiprocessing.Array``, one
    flag per worker slot); a worker raises its flag while it measures a scan and applies the
    budget at every pipeline stage, so a scan that ends up alone gets all ``total`` threads
    from its next stage on. The pool lowers the flag of a worker that died.
    """

    busy: Any
    total: int
    slot: int = 0

    def start(self) -> None:
        self.busy[self.slot] = 1

    def finish(self) -> None:
        self.busy[self.slot] = 0

    def threads(self) -> int:
        """Threads this worker may use now."""
        return max(1, self.total // max(1, sum(self.busy[:])))

    def apply(self) -> int:
        """Set numba's thread count to :meth:`threads` (within the process's maximum)."""
        import numba

        n = max(1, min(self.threads(), numba.config.NUMBA_NUM_THREADS))
        if numba.get_num_threads() != n:
            numba.set_num_threads(n)
        return n


#: The pool worker's thread budget. Set once per worker process by :func:`_init_worker` (the
#: usual pool initializer pattern); empty in the parent and in serial runs.
_WORKER_BUDGET: list[_ThreadBudget] = []


def _init_worker(slot: int, log_queue: Any, level: int, busy: Any, total: int,
                 parent: int) -> None:
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
    _WORKER_BUDGET[:] = [_ThreadBudget(busy, total, slot)]


class _Relay(logging.Handler):
    """Hands a worker's log record to the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def _process_pool(jobs: int) -> Iterator[WorkerPool]:
    """A pool of ``jobs`` spawned workers whose log records reach this process's handlers."""
    ctx = multiprocessing.get_context("spawn")
    log_queue = ctx.Queue()
    busy = ctx.Array("b", jobs, lock=False)
    listener = logging.handlers.QueueListener(log_queue, _Relay())
    listener.start()
    level = logging.getLogger("ctmorph").getEffectiveLevel()

    def lower_flag(slot: int) -> None:
        busy[slot] = 0

    try:
        with WorkerPool(jobs, initializer=_init_worker, on_death=lower_flag,
                        initargs=(log_queue, level, busy, default_jobs(), os.getpid())) as pool:
            yield pool
    finally:
        listener.stop()


def _worker_died_message(name: str, exc: WorkerDied) -> str:
    why = " (out of memory?)" if exc.exitcode == -signal.SIGKILL else ""
    return (f"{name}: the worker process measuring it {describe_exit(exc.exitcode)}{why}; "
            "the other scans were not affected. Re-run with --jobs 1 to give each scan all "
            "the memory")


#: Row columns that are facts of the current run, not of the measurement: a reused row takes
#: them from the current run (its group, how the threshold was found, ...).
_RUN_FACTS = ("group", "threshold_method", "threshold_attenuation")
#: Keys of a scan's JSON saying where its own settings came from.
_PROVENANCE = ("manifest", "overrides")


def _reuse(job: _Job, fingerprint: str, key: str) -> dict[str, Any] | None:
    """The finished row of the scan with the current run's facts, or None to recompute."""
    folder = job.out / job.name
    info = finished_result(
        folder, fingerprint=fingerprint, settings_key=key, write_qc=job.write_qc,
        input_hash=job.scan.input_hash() if job.verify_inputs else None,
    )
    if info is None:
        return None
    row = dict(info["row"])
    row["group"] = job.group
    row["threshold_method"] = job.method
    if job.threshold_attenuation is not None:
        row["threshold_attenuation"] = job.threshold_attenuation
    if any(info["row"].get(k) != row.get(k) for k in _RUN_FACTS) or \
            any(info.get(k) != job.provenance.get(k) for k in _PROVENANCE):
        info["row"] = row
        for k in _PROVENANCE:
            info.pop(k, None)
        info.update(job.provenance)
        atomic_write_text(folder / MARKER, json_text(info))
    return row


def _keep_review_views(exc: CtmorphError, job: _Job) -> None:
    """A failed scan's longitudinal sections (when it got that far), so ``ctmorph review``
    can show it and a person can place its reference by hand."""
    views = getattr(exc, "review", None)
    if views is None or not job.write_qc:
        return
    from .qc import write_review_views

    try:
        write_review_views(views, job.out / job.name / "qc")
    except OutputError as err:
        logger.error("%s", err)


def _run_job(job: _Job, progress: Callable[[str], None] | None = None) -> _Outcome:
    """Analyse one scan (or reuse its stored result)."""
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
        scan = job.scan
        if job.own_process:  # a large scan: keep the resident set close to what is alive
            configure_for_scan(math.prod(scan.shape) * scan.dtype.itemsize)
        fingerprint = scan_fingerprint(scan)
        key = _settings_key(job)
        if not job.force:
            row = _reuse(job, fingerprint, key)
            if row is not None:
                return _Outcome(row, True, time.perf_counter() - t0)
        logger.debug("%s: measured in process %d", job.name, os.getpid())
        res = measure_scan(
            scan, job.config, threshold=job.threshold, threshold_method=job.method,
            threshold_attenuation=job.threshold_attenuation, progress=step,
        )
        res.row["group"] = job.group
        extra: dict[str, Any] = {"fingerprint": fingerprint, "settings_key": key,
                                 **job.provenance}
        write_scan_outputs(res, job.out / job.name, write_qc=job.write_qc, extra=extra)
        return _Outcome(res.row, False, time.perf_counter() - t0, threads_used)
    except CtmorphError as exc:
        logger.error("%s", exc)
        _keep_review_views(exc, job)
        return _Outcome(_failed_row(job.name, job.group, str(exc)), False,
                        time.perf_counter() - t0)
    except Exception as exc:  # one broken scan must not lose the others
        logger.error("%s: internal error: %s", job.name, exc)
        logger.debug("%s", traceback.format_exc())
        msg = f"{job.name}: internal error: {type(exc).__name__}: {exc}"
        return _Outcome(_failed_row(job.name, job.group, msg), False, time.perf_counter() - t0)
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
    provenance: dict[str, Any] = field(default_factory=dict)


def _check_unique(planned: Sequence[_Planned]) -> None:
    """One name per scan and one scan per folder, before anything is computed."""
    names: set[str] = set()
    folders: dict[Path, str] = {}
    for item in planned:
        if item.name in names:
            raise ConfigError(
                f"two scan folders are both named {item.name!r}; scan names must be unique"
            )
        names.add(item.name)
        if item.folder is None:
            continue
        real = item.folder.resolve()
        if real in folders:
            raise ConfigError(
                f"{item.name!r} and {folders[real]!r} are the same scan folder ({real}); "
                "each animal must be analysed once"
            )
        folders[real] = item.name


def _check_listed(table: Mapping[str, Any], names: set[str], strict: bool) -> None:
    """Rows of a groups or overrides file naming scans that are not in the run: a warning
    (or, strict, an error), so a typo does not silently shrink the study or drop a
    correction."""
    extra = [s for s in table if s not in names]
    if not extra:
        return
    where = getattr(table, "path", "the groups file")
    line = getattr(table, "line", None)
    shown = ", ".join(f"{s!r} (line {line(s)})" if line else repr(s) for s in extra[:10])
    more = f" and {len(extra) - 10} more" if len(extra) > 10 else ""
    msg = (f"{where}: {len(extra)} row(s) name scans that are not in this run: {shown}{more}")
    if strict:
        raise ConfigError(msg + " (--strict)")
    logger.warning("%s", msg)


def _apply_overrides(planned: Sequence[_Planned], overrides: Mapping[str, Mapping[str, Any]],
                     strict: bool) -> None:
    """Each scan's VOI placed by hand (``--overrides``) into its settings and provenance."""
    _check_listed(overrides, {i.name for i in planned}, strict)
    line = getattr(overrides, "line", None)
    for item in planned:
        values = overrides.get(item.name)
        if not values:
            continue
        try:
            item.config = item.config.replace(**values)
        except ConfigError as exc:
            item.error = f"{item.name}: overrides {dict(values)}: {exc}"
            continue
        item.provenance["overrides"] = {
            "path": str(getattr(overrides, "path", "")), "values": dict(values),
            "line": line(item.name) if line else None,
        }


def _check_manual_voi_scope(cfg: AnalysisConfig, planned: Sequence[_Planned]) -> None:
    """A reference or VOI given for the whole run (``--ref-slice``) fits one scan only."""
    given = [n for n in ("ref_slice", "voi_first_slice", "voi_last_slice")
             if getattr(cfg, n) is not None]
    if given and len(planned) > 1:
        raise ConfigError(
            f"{given[0]} = {getattr(cfg, given[0])} places one femur's VOI by hand, but the run "
            f"has {len(planned)} scans; give it per scan with --overrides FILE.csv (or the "
            "manifest)"
        )


def _plan(
    paths: Sequence[str | Path],
    cfg: AnalysisConfig,
    *,
    manifest: Manifest | str | Path | None,
    groups: Mapping[str, str] | None,
    group: str | None,
    strict: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[_Planned]:
    """The run's scans in order, each with its group, settings or the reason it cannot run."""
    planned = _plan_scans(paths, cfg, manifest=manifest, groups=groups, group=group,
                          strict=strict)
    _check_manual_voi_scope(cfg, planned)
    if overrides is not None:
        _apply_overrides(planned, overrides, strict)
    return planned


def _plan_scans(
    paths: Sequence[str | Path],
    cfg: AnalysisConfig,
    *,
    manifest: Manifest | str | Path | None,
    groups: Mapping[str, str] | None,
    group: str | None,
    strict: bool,
) -> list[_Planned]:
    if manifest is not None:
        if paths or groups is not None or group is not None:
            raise ConfigError(
                "a manifest lists the scans and their groups: give no scan folders, groups "
                "file or group with it"
            )
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(manifest, cfg)
        planned = [
            _Planned(e.name, e.folder, e.group, e.config(cfg),
                     provenance={"manifest": manifest.provenance(e)})
            for e in manifest.entries
        ]
        _check_unique(planned)
        return planned
    planned = []
    for p in paths:
        try:
            for d in find_scan_dirs([p]):
                planned.append(_Planned(scan_name(d), d, "", cfg))
        except ScanError as exc:
            try:
                name = scan_name(p)
            except ScanError:
                name = str(p)
            planned.append(_Planned(name, None, "", cfg, error=str(exc)))
    _check_unique(planned)
    if groups is not None and group is None:
        _check_listed(groups, {i.name for i in planned}, strict)
    for item in planned:
        if group is not None:
            item.group = group
        elif groups is not None:
            item.group = groups.get(item.name) or None
            if item.group is None and item.error is None:
                item.error = f"{item.name}: scan is not listed with a group in the groups file"
    return planned


@dataclass
class _Probe:
    """What the headers (and, when asked, the pixels) of one scan say."""

    name: str
    scan: Scan | None = None
    hist: np.ndarray | None = None
    error: str | None = None

    @property
    def shape(self) -> tuple[int, int, int] | None:
        return None if self.scan is None else self.scan.shape

    @property
    def bit_depth(self) -> int | None:
        return None if self.scan is None else self.scan.dtype.itemsize * 8

    @property
    def voxel_um(self) -> float | None:
        return None if self.scan is None else self.scan.voxel_size_um

    @property
    def scale(self) -> GreyScale | None:
        return None if self.scan is None else GreyScale(self.scan.gmax, self.scan.cs_window)


def _probe(name: str, folder: Path, cfg: AnalysisConfig, hist_cache: Path | None) -> _Probe:
    """Read one scan's headers, and its grey histogram when ``hist_cache`` is given."""
    try:
        scan = read_scan(folder, voxel_size_um=cfg.voxel_size_um)
        hist = _cached_histogram(scan, hist_cache) if hist_cache is not None else None
    except CtmorphError as exc:
        return _Probe(name, error=str(exc))
    except Exception as exc:  # one broken scan must not lose the others
        return _Probe(name, error=f"{name}: internal error: {type(exc).__name__}: {exc}")
    return _Probe(name, scan, hist)


# ---------------------------------------------------------------------------------------------
# One study threshold: which grey scales (CS window, bit depth) it can be applied to


def _threshold_unit(cfg: AnalysisConfig) -> str:
    """How the study threshold is stated: ``density``, ``attenuation``, ``otsu`` or ``grey``."""
    if cfg.threshold_density is not None:
        return "density"
    if cfg.threshold_attenuation is not None:
        return "attenuation"
    return "otsu" if cfg.threshold == "otsu" else "grey"


def _majority(values: Sequence[Any]) -> Any:
    """The most common value (ties: the first seen)."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def _study_scales(probes: Sequence[_Probe], cfg: AnalysisConfig
                  ) -> tuple[dict[str, str], dict[str, GreyScale]]:
    """The grey scale each scan's threshold is taken on, and the scans that cannot take one.

    Returns ``(problems, scales)``: ``{scan: why it cannot be thresholded with the study}``
    and ``{scan: GreyScale}`` for the others. A scan without a CS window borrows the study's
    scale when every scan with a window shares one and its bit depth is the same; a pooled
    Otsu threshold works across different windows and bit depths (on a common attenuation
    axis), a grey threshold only within one scale.
    """
    unit = _threshold_unit(cfg)
    good = [p for p in probes if p.error is None and p.scale is not None]
    if unit == "density":
        return {}, {p.name: p.scale for p in good}
    windowed = {p.name: p.scale for p in good if p.scale.window is not None}
    windowless = {p.name: p.scale for p in good if p.scale.window is None}
    no_window = ("its log gives no CS window ('Minimum/Maximum for CS to Image Conversion' in "
                 "[Reconstruction])")
    problems: dict[str, str] = {}
    if unit == "attenuation":
        for n in windowless:
            problems[n] = (f"{n}: {no_window}, so the threshold in attenuation "
                           "(--threshold-attenuation) cannot be converted to its grey values")
        return problems, windowed
    if not good:
        return problems, {}
    if not windowed:  # plain image stacks: grey values of one bit depth
        common = _majority(list(windowless.values()))
        for n, s in windowless.items():
            if s != common:
                problems[n] = (f"{n}: slices are {s.bits} but most scans of the run "
                               f"are {common.bits}, and no log gives a CS window to "
                               "convert between them; one study-wide grey threshold needs one "
                               "bit depth")
        return problems, {n: common for n in windowless if n not in problems}
    distinct = set(windowed.values())
    if len(distinct) > 1 and unit == "otsu":  # pooled on a common attenuation axis
        shown = "; ".join(sorted({s.describe() for s in distinct}))
        for n in windowless:
            problems[n] = (f"{n}: {no_window}, but the study's scans have different CS windows "
                           f"or bit depths ({shown}): its grey values cannot be put on the "
                           "study's attenuation scale; add the window to its log or analyse it "
                           "in a run of its own")
        return problems, dict(windowed)
    common = _majority(list(windowed.values()))
    scales: dict[str, GreyScale] = {}
    for n, s in windowed.items():
        if s == common:
            scales[n] = s
        else:  # a grey threshold means another attenuation in this scan
            problems[n] = (f"{n}: the threshold {float(cfg.threshold):g} is a grey value, but "
                           f"this scan's grey scale ({s.describe()}) differs from the study's "
                           f"({common.describe()}), so the same grey is another attenuation "
                           "here; give --threshold otsu, --threshold-attenuation or "
                           "--threshold-density")
    for n, s in windowless.items():
        if s.gmax == common.gmax:
            scales[n] = common
        else:
            problems[n] = (f"{n}: {no_window} and its slices are {s.bits} while the "
                           f"study's are {common.describe()}: one study threshold cannot be "
                           "applied to it")
    return problems, scales


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
    if _threshold_unit(cfg) != "grey" or p.bit_depth is None:
        return None
    gmax = 2 ** p.bit_depth - 1
    if not 0 <= float(cfg.threshold) < gmax:
        return (f"{p.name}: threshold {float(cfg.threshold):g} is outside the grey range "
                f"0..{gmax} of its {p.bit_depth}-bit slices")
    return None


@dataclass
class _StudyThreshold:
    """The run's threshold: per scan its grey value, and what the log and run.json say."""

    threshold: StudyThreshold | None
    method: str
    members: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    uniform: bool = True

    def grey(self, scale: GreyScale) -> float | None:
        return None if self.threshold is None else self.threshold.grey(scale)


def _study_threshold(cfg: AnalysisConfig, probes: Mapping[str, _Probe],
                     scales: Mapping[str, GreyScale]) -> _StudyThreshold:
    """The study threshold of the scans in ``scales`` (all measurable by the headers)."""
    unit = _threshold_unit(cfg)
    if unit == "density":
        return _StudyThreshold(None, f"density {cfg.threshold_density:g} g/cm³ HA")
    if unit == "attenuation":
        return _StudyThreshold(None, "fixed attenuation")
    if unit == "grey":
        common = next(iter(scales.values()), GreyScale(255))
        return _StudyThreshold(StudyThreshold(common, float(cfg.threshold)), "fixed")
    if not scales:
        return _StudyThreshold(None, "otsu (no scan to pool)")
    pooled = pooled_otsu({n: probes[n].hist for n in scales}, scales)
    uniform = len(set(scales[n] for n in pooled.members)) <= 1
    where = "" if uniform else " on a common attenuation axis"
    method = f"otsu (pooled over {len(pooled.members)} scans{where})"
    return _StudyThreshold(pooled.threshold, method, pooled.members, pooled.excluded, uniform)


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
    strict: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ScanCheck]:
    """Validate every scan of a study without analysing it and without writing anything.

    Reads logs and slice-file headers only, never pixel data (a slice whose pixel data is
    corrupt behind a valid header passes here and fails that scan in the run). Checks: the
    folder exists, the log parses, the voxel size is known, the slices are complete, of one
    size and one bit depth; the scan's grey scale (CS window, bit depth) can take the study
    threshold; the scan has a group; the VOIs of its (overridden) settings fit in its length;
    a fixed threshold is inside its grey range.

    Parameters
    ----------
    paths, config, manifest, groups, group, strict, overrides
        As for :func:`run_analysis`.

    Returns
    -------
    list of ScanCheck
        In run order.

    Raises
    ------
    ConfigError
        Problems of the whole study: an invalid manifest, two scans with one name or one
        folder, a manifest given together with folders or groups, (``strict``) groups-file
        rows naming scans that are not in the run.
    """
    cfg = config or AnalysisConfig()
    planned = _plan(paths, cfg, manifest=manifest, groups=groups, group=group, strict=strict,
                    overrides=overrides)
    probes: dict[str, _Probe] = {}
    for item in planned:
        if item.error is None and item.folder is not None:
            probes[item.name] = _probe(item.name, item.folder, item.config, None)
    scale_problems, _ = _study_scales(list(probes.values()), cfg)
    checks = []
    for item in planned:
        p = probes.get(item.name, _Probe(item.name))
        problem = (item.error or p.error or scale_problems.get(item.name)
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
    verify_inputs: bool = False,
    strict: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_scan_done: Callable[[dict[str, Any], float], None] | None = None,
    scheduler: str | None = None,
    security: Any = None,
    tune_allocator: bool = False,
) -> RunSummary:
    """Analyse every scan folder under ``paths`` and write the run's outputs into ``out_dir``.

    Parameters
    ----------
    paths : sequence of path
        Scan folders, or parent folders whose subfolders are scans (empty with ``manifest``).
        A scan is named after its folder as given (a symbolic link's own name).
    out_dir : path
        Output folder: ``morphometry.csv``, ``columns.csv``, ``run.json`` and one folder per
        scan with ``morphometry.json`` and QC pictures.
    config : AnalysisConfig, optional
        Settings; with ``threshold="otsu"`` one Otsu threshold is computed on the pooled
        histograms of the scans that can be measured (in attenuation, through each scan's
        CS window; see :mod:`ctmorph.segment.pooling`) and applied to every scan.
    manifest : Manifest or path, optional
        A study manifest (:mod:`ctmorph.manifest`): the scans, their groups and per-scan
        settings, which enter that scan's settings, resume key and JSON. Excludes ``paths``,
        ``groups`` and ``group``.
    groups : mapping, optional
        ``{scan: group}`` (e.g. :func:`ctmorph.manifest.read_groups`); a scan missing from it
        fails with that reason, a row naming a scan not in the run is a warning.
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
        Recompute every scan; otherwise a finished scan whose files, settings and threshold
        are unchanged since its ``morphometry.json`` was written is not recomputed.
    verify_inputs : bool
        Before reusing a finished scan, also compare the content hash of its log and slice
        files with the stored ``input_hash`` (reads every file; by default a scan's files are
        unchanged when their names, sizes and modification times are).
    strict : bool
        Groups-file and overrides-file rows naming scans that are not in the run are an
        error, not a warning.
    overrides : mapping, optional
        ``{scan: {setting: value}}``: VOIs placed by hand (``ref_slice``, or
        ``voi_first_slice`` and ``voi_last_slice``, ``distal_end``; e.g.
        :func:`ctmorph.manifest.read_overrides`); they enter that scan's settings, resume key
        and JSON, so a re-run recomputes only the corrected scans.
    on_start : callable, optional
        Called with the number of scans about to be analysed, once the threshold is known.
    on_scan_done : callable, optional
        Called with each scan's row and its wall-clock seconds as it finishes (the CLI's
        run progress bar).
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

    Raises
    ------
    ConfigError
        A problem of the whole study (see :func:`check_study`).
    OutputError
        ``out_dir`` or a run-level output cannot be written (a file in the way, read-only,
        disk full); scans finished before stay reusable.

    Notes
    -----
    A scan whose grey scale cannot take the study threshold fails with the reason: without
    a CS window in a study whose windows or bit depths differ; with another window or bit
    depth than the study's under a grey threshold (``--threshold GREY``).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    kwargs = dict(manifest=manifest, groups=groups, group=group,
                  progress_factory=progress_factory, write_qc=write_qc, jobs=jobs, force=force,
                  verify_inputs=verify_inputs, strict=strict, overrides=overrides,
                  on_start=on_start,
                  on_scan_done=on_scan_done)
    if not scheduler:
        kwargs["tune_allocator"] = tune_allocator
        return _analyse(paths, out_dir, config, client=None, **kwargs)
    from .distributed import check_versions, connect

    with connect(scheduler, security=security) as client:  # fails fast, before any reading
        check_versions(client)
        return _analyse(paths, out_dir, config, client=client, **kwargs)


def _probe_all(pending: Sequence[_Planned], pool: WorkerPool | None, out: Path,
               histograms: bool) -> dict[str, _Probe]:
    """Headers (and grey histograms) of the pending scans, in the pool when there is one."""
    args = {i.name: (i.name, Path(os.path.abspath(i.folder)), i.config,
                     out / i.name / "histogram.npz" if histograms else None)
            for i in pending if i.folder is not None}
    if pool is None:
        return {n: _probe(*a) for n, a in args.items()}
    probes: dict[str, _Probe] = {}
    for name, outcome in pool.map_unordered(_probe, args.items()):
        if isinstance(outcome, WorkerDied):
            outcome = _Probe(name, error=_worker_died_message(name, outcome))
        elif isinstance(outcome, BaseException):
            outcome = _Probe(name, error=f"{name}: internal error: "
                                         f"{type(outcome).__name__}: {outcome}")
        probes[name] = outcome
    return {n: probes[n] for n in args}  # run order, whatever order they finished in


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
    verify_inputs: bool,
    strict: bool,
    overrides: Mapping[str, Mapping[str, Any]] | None,
    on_start: Callable[[int], None] | None,
    on_scan_done: Callable[[dict[str, Any], float], None] | None,
    tune_allocator: bool = False,
) -> RunSummary:
    cfg = config or AnalysisConfig()
    planned = _plan(paths, cfg, manifest=manifest, groups=groups, group=group, strict=strict,
                    overrides=overrides)
    out = ensure_output_dir(Path(out_dir).resolve())  # absolute: workers elsewhere write in it
    t0 = time.perf_counter()

    rows: dict[str, dict[str, Any]] = {}
    by_name = {item.name: item for item in planned}

    def fail(name: str, why: str) -> None:
        logger.error("%s", why)
        rows[name] = _failed_row(name, by_name[name].group, why)

    pending: list[_Planned] = []
    for item in planned:
        if item.error is not None or item.folder is None:
            rows[item.name] = _failed_row(item.name, item.group, item.error or "not found")
        else:
            pending.append(item)
    pooled = _threshold_unit(cfg) == "otsu"
    jobs = min(jobs, max(1, len(pending)))
    use_pool = client is None and jobs > 1
    reused = 0
    scan_seconds: dict[str, float] = {}
    scan_threads: dict[str, dict[str, int]] = {}
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(_process_pool(jobs)) if use_pool else None

        # phase 1: headers (and histograms for a pooled Otsu threshold), in the pool
        if pooled:
            logger.info("grey histograms of %d scans for the pooled Otsu threshold", len(pending))
        probes = _probe_all(pending, pool, out, pooled)
        scale_problems, scales = _study_scales(list(probes.values()), cfg)
        for item in pending:
            p = probes[item.name]
            problem = p.error or scale_problems.get(item.name) or _threshold_problem(p, cfg)
            if problem:
                fail(item.name, problem)
        study = _study_threshold(cfg, probes, {n: s for n, s in scales.items() if n not in rows})
        for name, why in study.excluded.items():
            fail(name, why)
        if pooled and study.threshold is not None:
            t = study.threshold
            logger.info("pooled Otsu threshold %.6g %s over %d scans: %s", t.value, t.unit,
                        len(study.members), ", ".join(study.members))
        pending = [i for i in pending if i.name not in rows]

        # phase 2: the measurements, largest scans first when parallel
        att = study.threshold.attenuation if study.threshold is not None else None
        work = []
        for i in pending:
            scan = probes[i.name].scan
            assert scan is not None
            work.append(_Job(
                i.name, scan, i.group or "", i.config, study.grey(scales[i.name]),
                study.method, out, write_qc, force, provenance=i.provenance,
                threshold_attenuation=att if scan.cs_window is not None else None,
                verify_inputs=verify_inputs,
                own_process=pool is not None or (client is None and tune_allocator),
            ))
        if pool is not None:
            work.sort(key=lambda j: -math.prod(j.scan.shape))
        if on_start:
            on_start(len(work))

        def done(job: _Job, outcome: Any) -> None:
            nonlocal reused
            if isinstance(outcome, WorkerDied):
                logger.error("%s", _worker_died_message(job.name, outcome))
                outcome = _Outcome(_failed_row(job.name, job.group,
                                               _worker_died_message(job.name, outcome)),
                                   False, float("nan"))
            elif isinstance(outcome, BaseException):  # KilledWorker, ...
                msg = f"{job.name}: worker failed: {type(outcome).__name__}: {outcome}"
                logger.error("%s", msg)
                outcome = _Outcome(_failed_row(job.name, job.group, msg), False, float("nan"))
            rows[job.name] = outcome.row
            reused += outcome.reused
            scan_seconds[job.name] = outcome.seconds
            if outcome.threads:
                scan_threads[job.name] = outcome.threads
            if on_scan_done:
                on_scan_done(outcome.row, outcome.seconds)

        if client is not None:
            from .distributed import map_unordered, numba_threads_per_task

            threads = numba_threads_per_task(client)
            work = [dataclasses.replace(job, numba_threads=threads) for job in work]
            results = map_unordered(client, _run_job, work, key_prefix="ctmorph-scan")
            with contextlib.closing(results):  # Ctrl-C: cancel the scans not started
                for job, outcome in results:
                    done(job, outcome)
        elif pool is not None:
            for job, outcome in pool.map_unordered(_run_job, ((j, (j,)) for j in work)):
                done(job, outcome)
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
    t = study.threshold
    summary = RunSummary(
        rows=ordered,
        out_dir=out,
        threshold=t.position if t is not None and study.uniform else None,
        threshold_method=study.method,
        seconds=time.perf_counter() - t0,
        failed=[(r["scan"], r["error"]) for r in ordered if r["status"] != "ok"],
        reused=reused,
        scan_seconds=scan_seconds,
        threshold_attenuation=(cfg.threshold_attenuation if cfg.threshold_attenuation is not None
                               else (t.attenuation if t is not None else None)),
        threshold_scans=study.members,
    )
    run_info = {
        "config": cfg.to_dict(),
        "config_hash": cfg.digest(),
        "manifest": next((i.provenance["manifest"]["path"] for i in planned
                          if "manifest" in i.provenance), None),
        "overrides": next((i.provenance["overrides"]["path"] for i in planned
                           if "overrides" in i.provenance), None),
        "threshold": summary.threshold,
        "threshold_attenuation": summary.threshold_attenuation,
        "threshold_method": study.method,
        "threshold_grey": {r["scan"]: r.get("threshold") for r in ordered
                           if r["status"] == "ok"},
        "threshold_scans": list(study.members),
        "threshold_excluded": study.excluded,
        "scans": [r["scan"] for r in ordered],
        "failed": dict(summary.failed),
        "jobs": jobs,
        "seconds": round(summary.seconds, 3),
        "scan_seconds": {k: round(v, 3) for k, v in scan_seconds.items() if v == v},
        "numba_threads": scan_threads,
        "versions": software_versions(),
    }
    _write_run_outputs(out, ordered, run_info, write_qc)
    return summary


def _write_run_outputs(out: Path, rows: list[dict[str, Any]], run_info: dict[str, Any],
                       write_qc: bool) -> None:
    """The run's table, column sidecar, ``run.json`` and QC overview: each one tried even
    when another cannot be written (a full disk may still take the small files); the first
    failure is raised after the others were tried."""
    names: list[str] = []
    for r in rows:
        names.extend(k for k in r if k not in names)
    steps: list[Callable[[], None]] = [
        lambda: write_table(rows, out / "morphometry.csv"),
        lambda: write_columns(order_columns(names), out / "columns.csv"),
        lambda: atomic_write_text(out / "run.json", json_text(run_info)),
    ]
    if write_qc:
        from .qc import write_qc_overview

        steps.append(lambda: write_qc_overview(out, rows))
    errors: list[OutputError] = []
    for write in steps:
        try:
            write()
        except OutputError as exc:
            logger.error("%s", exc)
            errors.append(exc)
    if errors:
        raise errors[0]
