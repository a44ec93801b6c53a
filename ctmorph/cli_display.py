"""What ``ctmorph analyze`` shows while and after it runs: logging (stderr and the run log
``OUT/ctmorph.log``), progress bars on a terminal or one log line per scan otherwise, and the
end summary. Only the CLI imports this module."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["RunProgress", "echo_checks", "echo_run", "echo_scan_times", "echo_sensitivity",
           "progress_factory", "setup_logging"]

logger = logging.getLogger("ctmorph")


class _RunLogFile(logging.FileHandler):
    """The run log ``OUT/ctmorph.log``. When the disk fills up it stops writing and says so
    once on stderr, instead of printing a logging traceback for every record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and self.stream is not None:
            why = exc.strerror or str(exc)
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None
            self.setLevel(logging.CRITICAL + 1)  # write nothing more
            print(f"WARNING: {self.baseFilename}: cannot write the run log: {why}",
                  file=sys.stderr)
            return
        super().handleError(record)


def setup_logging(verbose: bool, log_file: Path | None = None) -> None:
    """Log to stderr (debug with ``verbose``) and, given ``log_file``, to that file too.

    Raises
    ------
    OutputError
        ``log_file`` cannot be created (one clear line).
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("numba", "matplotlib", "PIL", "tifffile", "fontTools", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_file is not None:
        from ._atomic import ensure_output_dir, output_error

        ensure_output_dir(log_file.parent)  # a file in the way, read-only: one clear error
        try:
            fh = _RunLogFile(log_file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise output_error(log_file, exc) from None
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(logging.DEBUG)
        root.addHandler(fh)


def progress_factory() -> Callable[[str, Sequence[str]], Callable[[str], None]]:
    """``factory(scan name, stage names) -> step(stage)``: the per-scan stage progress of
    the pipeline, tqdm bars on a terminal, plain log lines otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        def factory(name, stages):
            bar = tqdm(total=len(stages), desc=name, unit="stage", leave=False, file=sys.stderr)

            def step(stage: str) -> None:
                if bar.n < bar.total and stage != stages[0]:
                    bar.update(1)
                bar.set_postfix_str(stage)

            step.close = lambda: (bar.update(bar.total - bar.n), bar.close())  # type: ignore
            return step

        return factory

    def factory(name, stages):
        def step(stage: str) -> None:
            logger.info("%s: %s", name, stage)

        return step

    return factory


class RunProgress:
    """One bar for the run (plus per-scan stage bars when serial) on a terminal; plain log
    lines, one per finished scan, otherwise."""

    def __init__(self, stage_bars: bool) -> None:
        self.tty = sys.stderr.isatty()
        self.stage_factory = progress_factory() if stage_bars else None
        self.bar = None
        self.total = 0
        self.done = 0

    def redirect_logging(self) -> contextlib.AbstractContextManager:
        """Log lines printed above the bars instead of through them (terminal only)."""
        if not self.tty:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm(loggers=[logging.getLogger()])

    def start(self, n_scans: int) -> None:
        """The run starts with ``n_scans`` to analyse."""
        self.total = n_scans
        if self.tty and n_scans:
            from tqdm import tqdm

            self.bar = tqdm(total=n_scans, desc="scans", unit="scan", file=sys.stderr)

    def scan_done(self, row: dict, seconds: float) -> None:
        """One finished scan: its row and wall-clock seconds."""
        self.done += 1
        secs = f" in {seconds:.1f} s" if seconds == seconds else ""  # NaN: its worker died
        logger.info("[%d/%d] %s: %s%s", self.done, self.total, row["scan"], row["status"], secs)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar (if any)."""
        if self.bar is not None:
            self.bar.close()


def echo_scan_times(summary: Any) -> None:
    """The end summary's table: scan, group, status and wall time of each scan."""
    rows = summary.rows
    if not rows:
        return
    w = max(4, *(len(str(r["scan"])) for r in rows))
    gw = max(5, *(len(str(r.get("group") or "")) for r in rows))
    click.echo(f"{'scan':<{w}}  {'group':<{gw}}  status  seconds")
    for r in rows:
        secs = summary.scan_seconds.get(r["scan"])
        t = f"{secs:7.1f}" if secs is not None and secs == secs else "      -"
        click.echo(f"{r['scan']:<{w}}  {str(r.get('group') or ''):<{gw}}  {r['status']:<6}  {t}")


def echo_checks(checks: Sequence[Any]) -> None:
    """Dry-run output: one line per scan and a summary."""
    w = max([4] + [len(c.name) for c in checks])
    gw = max([5] + [len(c.group) for c in checks])
    for c in checks:
        size = (f"{c.n_slices} slices {c.slice_shape[0]}x{c.slice_shape[1]}"
                if c.n_slices is not None and c.slice_shape is not None else "-")
        vox = f"{c.voxel_um:g} µm" if c.voxel_um is not None else "-"
        bits = f"{c.bit_depth}-bit" if c.bit_depth is not None else "-"
        state = "OK" if c.ok else f"PROBLEM: {c.problem}"
        click.echo(f"{c.name:<{w}}  {c.group:<{gw}}  {size:<22} {vox:<8} {bits:<6} {state}")
    bad = sum(not c.ok for c in checks)
    click.echo(f"dry run: {len(checks) - bad} of {len(checks)} scans valid"
               + (f", {bad} with problems" if bad else "") + "; nothing was written")


def echo_run(summary: Any, out: Path) -> None:
    """The end of a run: each scan's time, then one line with the count of scans ok, the
    study threshold in its units and where the results are."""
    echo_scan_times(summary)
    att = summary.threshold_attenuation
    if summary.threshold is not None:
        thr = f"threshold {summary.threshold:g} grey" + (f" = {att:.6g} attenuation"
                                                         if att is not None else "")
    elif att is not None:
        thr = f"threshold {att:.6g} attenuation (each scan's own grey value)"
    else:
        thr = "threshold per scan"
    thr += f", {summary.threshold_method}"
    reused = f", {summary.reused} unchanged and reused" if summary.reused else ""
    click.echo(
        f"{summary.n_ok} of {len(summary.rows)} scans ok in {summary.seconds:.1f} s "
        f"({thr}{reused}); results: {out / 'morphometry.csv'}"
    )


def echo_sensitivity(sens: Any) -> None:
    """The line of a threshold-sensitivity run: its thresholds, time and table."""
    values = ", ".join(f"{sens.thresholds[c]:.6g}" for c in sorted(sens.thresholds))
    reused = f", {sens.reused} unchanged and reused" if sens.reused else ""
    click.echo(f"sensitivity ±{sens.percent:g} %: thresholds {values} {sens.unit} in "
               f"{sens.seconds:.1f} s{reused}; table: {sens.table}")
