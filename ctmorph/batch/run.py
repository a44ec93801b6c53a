"""The run: :func:`run_analysis` plans the scans, takes the study threshold, measures or
reuses each scan in its worker and writes the run's tables (see :mod:`ctmorph.batch`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import logging.handlers
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text, ensure_output_dir
from ..columns import order_columns
from ..config import AnalysisConfig
from ..errors import ConfigError, OutputError
from ..manifest import Manifest
from ..outputs import (
    json_text,
    write_columns,
    write_table,
)
from ..pipeline import STAGES, software_versions
from ..workers import WorkerDied, WorkerPool
from .jobs import Job, Outcome, failed_row, process_pool, run_job, worker_died_message
from .plan import Planned, Probe, plan_run, probe_scan
from .scales import (
    StudyThresholdChoice,
    study_scales,
    study_threshold,
    threshold_problem,
    threshold_unit,
)

__all__ = [
    "run_analysis",
    "RunSummary",
    "ProgressFactory",
]

logger = logging.getLogger(__name__)

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
    from ..distributed import check_versions, connect

    with connect(scheduler, security=security) as client:  # fails fast, before any reading
        check_versions(client)
        return _analyse(paths, out_dir, config, client=client, **kwargs)


def _probe_all(pending: Sequence[Planned], pool: WorkerPool | None, out: Path,
               histograms: bool) -> dict[str, Probe]:
    """Headers (and grey histograms) of the pending scans, in the pool when there is one."""
    args = {i.name: (i.name, Path(os.path.abspath(i.folder)), i.config,
                     out / i.name / "histogram.npz" if histograms else None)
            for i in pending if i.folder is not None}
    if pool is None:
        return {n: probe_scan(*a) for n, a in args.items()}
    probes: dict[str, Probe] = {}
    for name, outcome in pool.map_unordered(probe_scan, args.items()):
        if isinstance(outcome, WorkerDied):
            outcome = Probe(name, error=worker_died_message(name, outcome))
        elif isinstance(outcome, BaseException):
            outcome = Probe(name, error=f"{name}: internal error: "
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
    planned = plan_run(paths, cfg, manifest=manifest, groups=groups, group=group, strict=strict,
                    overrides=overrides)
    out = ensure_output_dir(Path(out_dir).resolve())  # absolute: workers elsewhere write in it
    t0 = time.perf_counter()

    rows: dict[str, dict[str, Any]] = {}
    by_name = {item.name: item for item in planned}

    def fail(name: str, why: str) -> None:
        logger.error("%s", why)
        rows[name] = failed_row(name, by_name[name].group, why)

    pending: list[Planned] = []
    for item in planned:
        if item.error is not None or item.folder is None:
            rows[item.name] = failed_row(item.name, item.group, item.error or "not found")
        else:
            pending.append(item)
    pooled = threshold_unit(cfg) == "otsu"
    jobs = min(jobs, max(1, len(pending)))
    use_pool = client is None and jobs > 1
    reused = 0
    scan_seconds: dict[str, float] = {}
    scan_threads: dict[str, dict[str, int]] = {}
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(process_pool(jobs)) if use_pool else None

        # phase 1: headers (and histograms for a pooled Otsu threshold), in the pool
        if pooled:
            logger.info("grey histograms of %d scans for the pooled Otsu threshold", len(pending))
        probes = _probe_all(pending, pool, out, pooled)
        scale_problems, scales = study_scales(list(probes.values()), cfg)
        for item in pending:
            p = probes[item.name]
            problem = p.error or scale_problems.get(item.name) or threshold_problem(p, cfg)
            if problem:
                fail(item.name, problem)
        study = study_threshold(cfg, probes, {n: s for n, s in scales.items() if n not in rows})
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
            work.append(Job(
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

        def done(job: Job, outcome: Any) -> None:
            nonlocal reused
            if isinstance(outcome, WorkerDied):
                logger.error("%s", worker_died_message(job.name, outcome))
                outcome = Outcome(failed_row(job.name, job.group,
                                               worker_died_message(job.name, outcome)),
                                   False, float("nan"))
            elif isinstance(outcome, BaseException):  # KilledWorker, ...
                msg = f"{job.name}: worker failed: {type(outcome).__name__}: {outcome}"
                logger.error("%s", msg)
                outcome = Outcome(failed_row(job.name, job.group, msg), False, float("nan"))
            rows[job.name] = outcome.row
            reused += outcome.reused
            scan_seconds[job.name] = outcome.seconds
            if outcome.threads:
                scan_threads[job.name] = outcome.threads
            if on_scan_done:
                on_scan_done(outcome.row, outcome.seconds)

        _dispatch(work, client, pool, progress_factory, done)
    if reused:
        logger.info("%d scans unchanged since the last run were not recomputed", reused)

    ordered = [rows[item.name] for item in planned]
    summary, run_info = _run_record(cfg, planned, ordered, study, out, time.perf_counter() - t0,
                                    reused, scan_seconds, scan_threads, jobs)
    _write_run_outputs(out, ordered, run_info, write_qc)
    return summary


def _dispatch(work: list[Job], client: Any, pool: Any,
              progress_factory: ProgressFactory | None,
              done: Callable[[Job, Any], None]) -> None:
    """Run the jobs on a Dask cluster, in the process pool or here (with a progress bar per
    scan), calling ``done(job, outcome)`` as each finishes."""
    if client is not None:
        from ..distributed import map_unordered, numba_threads_per_task

        threads = numba_threads_per_task(client)
        work = [dataclasses.replace(job, numba_threads=threads) for job in work]
        results = map_unordered(client, run_job, work, key_prefix="ctmorph-scan")
        with contextlib.closing(results):  # Ctrl-C: cancel the scans not started
            for job, outcome in results:
                done(job, outcome)
    elif pool is not None:
        for job, outcome in pool.map_unordered(run_job, ((j, (j,)) for j in work)):
            done(job, outcome)
    else:
        for job in work:
            bar = progress_factory(job.name, STAGES) if progress_factory else None
            try:
                outcome = run_job(job, bar)
            finally:
                if bar is not None and hasattr(bar, "close"):
                    bar.close()
            done(job, outcome)


def _run_record(cfg: AnalysisConfig, planned: Sequence[Planned], ordered: list[dict[str, Any]],
                study: StudyThresholdChoice, out: Path, seconds: float, reused: int,
                scan_seconds: dict[str, float], scan_threads: dict[str, dict[str, int]],
                jobs: int) -> tuple[RunSummary, dict[str, Any]]:
    """The run's summary and the content of ``run.json``."""
    t = study.threshold
    summary = RunSummary(
        rows=ordered,
        out_dir=out,
        threshold=t.position if t is not None and study.uniform else None,
        threshold_method=study.method,
        seconds=seconds,
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
    return summary, run_info


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
        from ..qc import write_qc_overview

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
