"""One scan's job in a worker process: measure or reuse it, its numba threads, its log records
sent to the parent, and what a dead worker leaves."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import logging.handlers
import math
import multiprocessing
import multiprocessing.util
import os
import signal
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._atomic import atomic_path, atomic_write_text
from .._memory import configure_for_scan
from ..config import AnalysisConfig
from ..errors import CtmorphError, OutputError
from ..io import Scan
from ..outputs import (
    MARKER,
    finished_result,
    json_text,
    write_scan_outputs,
)
from ..pipeline import measure_scan, scan_histogram
from ..workers import WorkerDied, WorkerPool, describe_exit

__all__ = [
    "Job",
    "Outcome",
    "ThreadBudget",
    "run_job",
    "process_pool",
    "default_jobs",
    "failed_row",
    "scan_fingerprint",
    "cached_histogram",
    "worker_died_message",
]

logger = logging.getLogger(__name__)

def failed_row(name: str, group: str | None, error: str) -> dict[str, Any]:
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


def cached_histogram(scan: Scan, cache: Path) -> np.ndarray:
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
class Job:
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


def _settings_key(job: Job) -> str:
    cal = ""
    if job.config.calibration:
        cal = hashlib.sha256(Path(job.config.calibration).read_bytes()).hexdigest()[:16]
    return f"{job.config.digest()}|{job.threshold!r}|{cal}|{__version__}"


@dataclass
class Outcome:
    """What one scan's job returns to the parent."""

    row: dict[str, Any]
    reused: bool
    seconds: float
    #: numba threads used per pipeline stage (pool workers)
    threads: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Pool workers: numba threads shared among the busy workers, log records sent to the parent


@dataclass
class ThreadBudget:
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
_WORKER_BUDGET: list[ThreadBudget] = []


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
    # at exit, close the log queue first (its feeder flushes every record, then stops), so the
    # queue's own join at exit never waits on a feeder that got no end marker (a worker hung
    # there once, at the end of a --jobs 2 run with debug logging)
    multiprocessing.util.Finalize(None, log_queue.close, exitpriority=20)
    root.setLevel(logging.WARNING)
    logging.getLogger("ctmorph").setLevel(level)
    _WORKER_BUDGET[:] = [ThreadBudget(busy, total, slot)]


class _Relay(logging.Handler):
    """Hands a worker's log record to the parent's logger of the same name."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def process_pool(jobs: int) -> Iterator[WorkerPool]:
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


def worker_died_message(name: str, exc: WorkerDied) -> str:
    why = " (out of memory?)" if exc.exitcode == -signal.SIGKILL else ""
    return (f"{name}: the worker process measuring it {describe_exit(exc.exitcode)}{why}; "
            "the other scans were not affected. Re-run with --jobs 1 to give each scan all "
            "the memory")


#: Row columns that are facts of the current run, not of the measurement: a reused row takes
#: them from the current run (its group, how the threshold was found, ...).
_RUN_FACTS = ("group", "threshold_method", "threshold_attenuation")
#: Keys of a scan's JSON saying where its own settings came from.
_PROVENANCE = ("manifest", "overrides")


def _reuse(job: Job, fingerprint: str, key: str) -> dict[str, Any] | None:
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


def _keep_review_views(exc: CtmorphError, job: Job) -> None:
    """A failed scan's longitudinal sections (when it got that far), so ``ctmorph review``
    can show it and a person can place its reference by hand."""
    views = getattr(exc, "review", None)
    if views is None or not job.write_qc:
        return
    from ..qc import write_review_views

    try:
        write_review_views(views, job.out / job.name / "qc")
    except OutputError as err:
        logger.error("%s", err)


def run_job(job: Job, progress: Callable[[str], None] | None = None) -> Outcome:
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
                return Outcome(row, True, time.perf_counter() - t0)
        logger.debug("%s: measured in process %d", job.name, os.getpid())
        res = measure_scan(
            scan, job.config, threshold=job.threshold, threshold_method=job.method,
            threshold_attenuation=job.threshold_attenuation, progress=step,
            renders=job.write_qc,
        )
        res.row["group"] = job.group
        extra: dict[str, Any] = {"fingerprint": fingerprint, "settings_key": key,
                                 **job.provenance}
        write_scan_outputs(res, job.out / job.name, write_qc=job.write_qc, extra=extra)
        return Outcome(res.row, False, time.perf_counter() - t0, threads_used)
    except CtmorphError as exc:
        logger.error("%s", exc)
        _keep_review_views(exc, job)
        return Outcome(failed_row(job.name, job.group, str(exc)), False,
                        time.perf_counter() - t0)
    except Exception as exc:  # one broken scan must not lose the others
        logger.error("%s: internal error: %s", job.name, exc)
        logger.debug("%s", traceback.format_exc())
        msg = f"{job.name}: internal error: {type(exc).__name__}: {exc}"
        return Outcome(failed_row(job.name, job.group, msg), False, time.perf_counter() - t0)
    finally:
        if budget is not None:
            budget.finish()


