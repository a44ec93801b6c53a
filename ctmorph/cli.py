"""Command-line interface: each command turns arguments into settings and calls one library
function. The CLI owns logging, progress bars and exit codes (0 ok, 1 failure, 2 usage)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import sys
from pathlib import Path

import click

from . import __version__
from .config import ROI_MODES, THICKNESS_CONVENTIONS, AnalysisConfig
from .errors import CalibrationError, ConfigError, CtmorphError

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


def _setup_logging(verbose: bool, log_file: Path | None = None) -> None:
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


def _handle_errors(func):
    """Map library errors to one clear line and exit 1; tracebacks only with -v."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        verbose = (ctx.obj or {}).get("verbose", False)
        try:
            return func(*args, **kwargs)
        except CtmorphError as exc:
            if verbose:
                logger.exception("error")
            raise click.ClickException(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if verbose:
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)"
            ) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ctmorph")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Automatic trabecular bone morphometry of Skyscan/NRecon micro-CT femur studies."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose)


class _Number(click.ParamType):
    """A finite float, optionally bounded: the type of every numeric option.

    ``click.FloatRange`` lets ``nan`` through (every comparison with it is false) and accepts
    ``inf``; this one refuses both, so a wrong number is a usage error (exit 2) naming the
    option as typed, never a library error naming a setting.
    """

    name = "float"

    def __init__(
        self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
        max_open: bool = False, what: str | None = None,
    ) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open
        self.what = what or self._describe()

    def _describe(self) -> str:
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return (f"a finite number in {'(' if self.min_open else '['}{lo:g}, "
                    f"{hi:g}{')' if self.max_open else ']'}")
        if lo is not None:
            return f"a finite number {'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f"a finite number {'<' if self.max_open else '<='} {hi:g}"
        return "a finite number"

    def _in_range(self, x: float) -> bool:
        lo, hi = self.min, self.max
        return ((lo is None or (x > lo if self.min_open else x >= lo))
                and (hi is None or (x < hi if self.max_open else x <= hi)))

    def convert(self, value, param, ctx) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not (math.isfinite(x) and self._in_range(x)):
            self.fail(f"expected {self.what}, got {value!r}", param, ctx)
        return x


class _GreyThreshold(_Number):
    """``otsu`` or a grey value (finite, >= 0)."""

    name = "threshold"

    def __init__(self) -> None:
        super().__init__(0, what="a grey value or 'otsu' (grey values are finite and >= 0)")

    def convert(self, value, param, ctx) -> float | str:
        if isinstance(value, str) and value.strip().lower() == "otsu":
            return "otsu"
        return super().convert(value, param, ctx)


class _InputFile(click.Path):
    """An existing, non-empty file (a folder, a missing or a 0-byte file: exit 2)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value, param, ctx) -> Path:
        path = super().convert(value, param, ctx)
        if os.path.getsize(path) == 0:
            self.fail(f"File {click.format_filename(path)!r} is empty (0 bytes).", param, ctx)
        return path


FINITE = _Number()
NON_NEGATIVE = _Number(0)
POSITIVE = _Number(0, min_open=True)


def _progress_factory():
    """tqdm bars on a terminal, plain log lines otherwise."""
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


class _RunProgress:
    """One bar for the run (plus per-scan stage bars when serial) on a terminal; plain log
    lines, one per finished scan, otherwise."""

    def __init__(self, stage_bars: bool) -> None:
        self.tty = sys.stderr.isatty()
        self.stage_factory = _progress_factory() if stage_bars else None
        self.bar = None
        self.total = 0
        self.done = 0

    def redirect_logging(self):
        """Log lines printed above the bars instead of through them (terminal only)."""
        if not self.tty:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm(loggers=[logging.getLogger()])

    def start(self, n_scans: int) -> None:
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
        if self.bar is not None:
            self.bar.close()


def _echo_scan_times(summary) -> None:
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


def _echo_checks(checks) -> None:
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


def _check_roi_options(ctx, roi, roi_mask, offset_frac, height_frac) -> str:
    """The VOI mode after the --roi-* usage rules (exit 2 on a conflict)."""
    roi_given = ctx.get_parameter_source("roi") != click.core.ParameterSource.DEFAULT
    if roi_mask is not None:
        if roi_given and roi != "mask":
            raise click.UsageError(f"--roi-mask needs --roi mask, got --roi {roi}")
        roi = "mask"
    elif roi == "mask":
        raise click.UsageError("--roi mask needs --roi-mask FILE")
    for name, value in (("--roi-offset-frac", offset_frac), ("--roi-height-frac", height_frac)):
        if value is not None and roi != "auto":
            raise click.UsageError(f"{name} places the VOI along the bone: needs --roi auto, "
                                   f"got --roi {roi}")
    if offset_frac is not None and height_frac is not None and offset_frac + height_frac > 1:
        raise click.UsageError(
            f"--roi-offset-frac + --roi-height-frac must be <= 1 (the VOI ends inside the "
            f"bone), got {offset_frac:g} + {height_frac:g}"
        )
    return roi


def _check_threshold_options(ctx, calibration, threshold_density, threshold_attenuation) -> None:
    """At most one way of stating the threshold (exit 2 on a conflict)."""
    threshold_given = ctx.get_parameter_source("threshold") != click.core.ParameterSource.DEFAULT
    if threshold_density is not None:
        if calibration is None:
            raise click.UsageError("--threshold-density needs --calibration")
        if threshold_given:
            raise click.UsageError("give either --threshold or --threshold-density, not both")
    if threshold_attenuation is not None:
        if threshold_given:
            raise click.UsageError("give either --threshold or --threshold-attenuation, not both")
        if threshold_density is not None:
            raise click.UsageError(
                "give either --threshold-density or --threshold-attenuation, not both"
            )


def _require_distributed() -> None:
    """--scheduler needs the optional Dask package: one line (exit 1) before anything is made."""
    if importlib.util.find_spec("distributed") is None:
        from .distributed import INSTALL_HINT

        raise click.ClickException(
            f"--scheduler runs the scans on a Dask cluster, which needs the optional "
            f"'distributed' package: {INSTALL_HINT}"
        )


def _make_config(**settings) -> AnalysisConfig:
    """The analysis settings; the options are checked already, so a refusal here is a usage
    error all the same (exit 2), never a failed run."""
    try:
        return AnalysisConfig(**settings)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@cli.command()
@click.argument("scan_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(path_type=Path),
              help="Output folder (required unless --dry-run).")
@click.option("--groups", "groups_csv", type=_InputFile(),
              help="CSV with columns scan,group (UTF-8, or UTF-16 as Excel's Unicode text).")
@click.option("--manifest", "manifest_csv", type=_InputFile(),
              help="Study CSV: scan (folder, relative to the manifest), group and optional "
                   "per-scan roi_offset_mm, roi_height_mm, distal_end, voxel_size_um, "
                   "cortical_offset_mm, cortical_height_mm (instead of SCAN_DIR... and --groups).")
@click.option("--dry-run", is_flag=True,
              help="Only validate every scan from its log and slice headers, one line each; "
                   "writes nothing (exit 1 if any scan is invalid).")
@click.option("--group", "group", help="One group label for every scan.")
@click.option("--threshold", type=_GreyThreshold(), default="otsu", show_default=True,
              metavar="GREY|otsu",
              help="Global grey threshold, or 'otsu' on the pooled histogram of all scans.")
@click.option("--roi", type=click.Choice(list(ROI_MODES)), default="auto", show_default=True,
              help="auto: growth-plate referenced trabecular VOI; full: the whole volume; "
                   "envelope: the region inside the specimen's outer surface (cores, "
                   "vertebrae, other bones); mask: a user-drawn mask (--roi-mask).")
@click.option("--roi-mask", "roi_mask", type=click.Path(exists=True, path_type=Path),
              help="VOI mask: a multi-page TIFF or a folder of TIFF slices, the scan's shape, "
                   "nonzero inside (implies --roi mask).")
@click.option("--roi-offset-frac", type=_Number(0, 1, max_open=True),
              help="VOI start proximal of the growth-plate reference as a fraction of the "
                   "bone length (--roi auto; the scan must hold the whole bone; replaces "
                   "--roi-offset-mm).")
@click.option("--roi-height-frac", type=_Number(0, 1, min_open=True),
              help="VOI length as a fraction of bone length (replaces --roi-height-mm).")
@click.option("--roi-offset-mm", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="VOI start proximal of the growth-plate reference (mm).")
@click.option("--roi-height-mm", type=POSITIVE, default=2.0, show_default=True,
              help="VOI length (mm).")
@click.option("--distal-end", type=click.Choice(["auto", "first", "last"]), default="auto",
              show_default=True, help="Which end of the stack is distal.")
@click.option("--ref-slice", type=click.IntRange(min=0),
              help="The growth-plate reference section of the one scan analysed, given by hand "
                   "(--roi auto; numbered as the slice files are); the VOI is placed from it.")
@click.option("--overrides", "overrides_csv", type=_InputFile(),
              help="CSV with the columns scan and any of ref_slice, voi_first_slice, "
                   "voi_last_slice, distal_end: VOIs placed by hand (as 'ctmorph review' "
                   "saves); only the corrected scans are recomputed.")
@click.option("--align", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: resample a femur tilted >= 3° in slices perpendicular to its axis "
                   "(the angle is reported either way); off: use the slices as they are.")
@click.option("--voxel-size", "voxel_size", type=POSITIVE,
              help="Voxel size in µm (for TIFF stacks without a log; overrides the log).")
@click.option("--smooth-sigma", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="Gaussian smoothing sigma before thresholding (voxels).")
@click.option("--thickness-convention", type=click.Choice(THICKNESS_CONVENTIONS),
              default="corrected", show_default=True,
              help="Local thickness convention (see README, 'Definitions').")
@click.option("--calibration", type=_InputFile(),
              help="CALIB.json from 'ctmorph calibrate': adds BMD and TMD (g/cm³ HA).")
@click.option("--threshold-density", type=FINITE,
              help="Global threshold in g/cm³ HA (needs --calibration; replaces --threshold).")
@click.option("--threshold-attenuation", metavar="MU", type=FINITE,
              help="Global threshold in attenuation (NRecon CS units, as in the log's "
                   "CS-to-image window), converted to grey per scan through its own window "
                   "(replaces --threshold).")
@click.option("--tmd-erosion-vox", type=NON_NEGATIVE, default=1.0, show_default=True,
              help="TMD leaves out bone within this many voxels of the surface.")
@click.option("--strict", is_flag=True,
              help="Fail instead of warning: scans whose reconstruction settings differ from "
                   "the calibration's, and groups-file rows naming scans that are not in the "
                   "run.")
@click.option("--cortical-offset-mm", type=NON_NEGATIVE,
              help="Also measure cortical bone in a diaphyseal VOI this far proximal of the "
                   "growth-plate reference (mm).")
@click.option("--cortical-height-mm", type=POSITIVE, default=1.0, show_default=True,
              help="Length of the cortical VOI (mm).")
@click.option("--save-maps", is_flag=True,
              help="Write thickness/separation maps of the VOI (TIFF, mm) for Fiji.")
@click.option("--no-qc", is_flag=True, help="Skip QC pictures.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Scans analysed in parallel processes  [default: the usable cores]")
@click.option("--force", is_flag=True,
              help="Recompute every scan (by default unchanged finished scans are reused).")
@click.option("--verify-inputs", is_flag=True,
              help="Before reusing a finished scan, compare the content hash of its files with "
                   "the stored one (slower; by default a scan is unchanged when its file names, "
                   "sizes and modification times are).")
@click.option("--scheduler", metavar="ADDRESS", envvar="DASK_SCHEDULER_ADDRESS",
              help="Run the scans on a Dask cluster: tcp://HOST:PORT, tls://HOST:PORT or a "
                   "scheduler file (default $DASK_SCHEDULER_ADDRESS; needs "
                   "ctmorph[distributed]; see docs/cluster.md).")
@click.option("--sensitivity", metavar="PCT",
              type=_Number(0, 50, min_open=True, max_open=True,
                            what="a percentage between 0 and 50 (exclusive)"),
              help="Also analyse every successful scan at the threshold × (1 ± PCT/100) into "
                   "OUT/sensitivity/ and write OUT/sensitivity.csv; 'ctmorph report' then "
                   "says whether the group conclusions hold (0 < PCT < 50).")
@click.pass_context
@_handle_errors
def analyze(ctx, scan_dirs, out, groups_csv, manifest_csv, dry_run, group, threshold, roi,
            roi_mask, roi_offset_frac, roi_height_frac, roi_offset_mm,
            roi_height_mm, distal_end, ref_slice, overrides_csv, align, voxel_size,
            smooth_sigma, thickness_convention,
            calibration, threshold_density, threshold_attenuation, tmd_erosion_vox, strict,
            cortical_offset_mm, cortical_height_mm, save_maps, no_qc, jobs, force,
            verify_inputs, scheduler, sensitivity) -> None:
    """Analyse SCAN_DIR... (NRecon folders, or folders holding them) into OUT."""
    from .batch import check_study, default_jobs, run_analysis
    from .manifest import read_groups, read_manifest, read_overrides

    if groups_csv is not None and group is not None:
        raise click.UsageError("give either --groups or --group, not both")
    if manifest_csv is not None and (scan_dirs or groups_csv is not None or group is not None):
        raise click.UsageError(
            "--manifest lists the scans and their groups: give no SCAN_DIR, --groups or "
            "--group with it"
        )
    if manifest_csv is None and not scan_dirs:
        raise click.UsageError("give SCAN_DIR... or --manifest")
    if out is None and not dry_run:
        raise click.UsageError("Missing option '-o' / '--out'.")
    if scheduler and jobs is not None and jobs > 1:
        raise click.UsageError("give either --jobs or --scheduler, not both")
    roi = _check_roi_options(ctx, roi, roi_mask, roi_offset_frac, roi_height_frac)
    if cortical_offset_mm is not None and roi != "auto":
        raise click.UsageError(f"--cortical-offset-mm places a VOI from the growth plate: needs "
                               f"--roi auto, got --roi {roi}")
    _check_threshold_options(ctx, calibration, threshold_density, threshold_attenuation)
    if scheduler and not dry_run:
        _require_distributed()
    jobs = jobs or (1 if scheduler else default_jobs())
    config = _make_config(
        threshold=threshold,
        roi=roi,
        roi_offset_mm=roi_offset_mm,
        roi_height_mm=roi_height_mm,
        roi_mask=str(roi_mask.resolve()) if roi_mask is not None else None,
        roi_offset_frac=roi_offset_frac,
        roi_height_frac=roi_height_frac,
        distal_end=distal_end,
        ref_slice=ref_slice,
        align=align,
        smooth_sigma_vox=smooth_sigma,
        thickness_convention=thickness_convention,
        voxel_size_um=voxel_size,
        calibration=str(calibration.resolve()) if calibration else None,
        threshold_density=threshold_density,
        threshold_attenuation=threshold_attenuation,
        tmd_erosion_vox=tmd_erosion_vox,
        strict_calibration=strict,
        save_maps=save_maps,
        cortical_offset_mm=cortical_offset_mm,
        cortical_height_mm=cortical_height_mm,
    )
    if calibration is not None:
        from .calibration import load_calibration

        load_calibration(calibration)  # a bad file is one clear error before any scan runs
    groups = read_groups(groups_csv) if groups_csv is not None else None
    manifest = read_manifest(manifest_csv, config) if manifest_csv is not None else None
    overrides = read_overrides(overrides_csv, config) if overrides_csv is not None else None
    if dry_run:
        checks = check_study(scan_dirs, config, manifest=manifest, groups=groups, group=group,
                             strict=strict, overrides=overrides)
        _echo_checks(checks)
        if not all(c.ok for c in checks):
            ctx.exit(1)
        return
    _setup_logging(ctx.obj["verbose"], out / "ctmorph.log")
    display = _RunProgress(stage_bars=jobs == 1 and not scheduler)
    with display.redirect_logging():
        try:
            summary = run_analysis(
                scan_dirs, out, config, manifest=manifest, groups=groups, group=group,
                progress_factory=display.stage_factory, write_qc=not no_qc, jobs=jobs,
                force=force, scheduler=scheduler, on_start=display.start,
                on_scan_done=display.scan_done, tune_allocator=True, strict=strict,
                verify_inputs=verify_inputs, overrides=overrides,
            )
        finally:
            display.close()
    _echo_scan_times(summary)
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
    sens_failed = []
    if sensitivity is not None and summary.n_ok:
        from .sensitivity import run_sensitivity

        sens_display = _RunProgress(stage_bars=jobs == 1 and not scheduler)

        def sens_start(n_scans: int) -> None:  # one bar per sub-run
            sens_display.close()
            sens_display.done = 0
            sens_display.start(n_scans)

        with sens_display.redirect_logging():
            try:
                sens = run_sensitivity(
                    scan_dirs, out, config, summary, percent=sensitivity, manifest=manifest,
                    groups=groups, group=group, jobs=jobs, force=force, scheduler=scheduler,
                    progress_factory=sens_display.stage_factory, on_start=sens_start,
                    on_scan_done=sens_display.scan_done, strict=strict,
                    verify_inputs=verify_inputs, overrides=overrides,
                )
            finally:
                sens_display.close()
        values = ", ".join(f"{sens.thresholds[c]:.6g}" for c in sorted(sens.thresholds))
        reused = f", {sens.reused} unchanged and reused" if sens.reused else ""
        click.echo(f"sensitivity ±{sens.percent:g} %: thresholds {values} {sens.unit} in "
                   f"{sens.seconds:.1f} s{reused}; table: {sens.table}")
        sens_failed = sens.failed
    if summary.failed or sens_failed:
        for _name, err in summary.failed:
            click.echo(f"failed: {err}", err=True)
        for _name, change, err in sens_failed:
            click.echo(f"failed at {change:+g} % of the threshold: {err}", err=True)
        ctx.exit(1)


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--control", default="sham", show_default=True,
              help="Control group: shown first, * marks, Dunnett, % change.")
@click.option("--model", default=None,
              help="Disease-model group (e.g. OVX): # marks and % of its effect prevented.")
@click.option("--nonparametric", is_flag=True,
              help="Also run Kruskal-Wallis + Dunn (Holm) and use them for the marks.")
@click.option("--alpha", type=_Number(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True, help="Significance level.")
@click.option("--excel/--no-excel", default=True, show_default=True,
              help="Also write report/report.xlsx.")
@click.option("--figures/--no-figures", default=True, show_default=True)
@click.pass_context
@_handle_errors
def report(ctx, out, control, model, nonparametric, alpha, excel, figures) -> None:
    """Group tables, statistics, figures and report.html of an analysis folder OUT."""
    from .report import make_report

    paths = make_report(out, control=control, model=model, nonparametric=nonparametric,
                        alpha=alpha, excel=excel, figures=figures)
    html = paths.get("html")
    click.echo(f"wrote {len(paths)} files to {Path(out) / 'report'}"
               + (f"; open {html}" if html else ""))


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.pass_context
@_handle_errors
def review(ctx, out) -> None:
    """Write OUT/review.html to check and correct each scan's growth-plate reference."""
    from .review import write_review

    page = write_review(out)
    click.echo(f"wrote {page}: open it in a browser, click the corrections, save "
               "overrides.csv and pass it to 'ctmorph analyze --overrides'")


@cli.command()
@click.argument("phantom_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--densities", required=True,
              help="HA densities in g/cm³, in the order of the folders (e.g. 0.25,0.75); a "
                   "folder holding several rods takes them in increasing order.")
@click.option("-o", "--out", "out", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help="CALIB.json to write.")
@click.option("--core-fraction", type=_Number(0, 1, min_open=True), default=0.6, show_default=True,
              help="Part of each rod's inscribed radius used as its core.")
@click.option("--edge-margin-vox", type=NON_NEGATIVE, default=3.0, show_default=True,
              help="Minimum distance of the core from the rod edge (voxels).")
@click.pass_context
@_handle_errors
def calibrate(ctx, phantom_dirs, densities, out, core_fraction, edge_margin_vox) -> None:
    """Fit attenuation → g/cm³ HA from scans of HA rods in PHANTOM_DIR... ."""
    from .calibration import calibrate as fit
    from .calibration import parse_densities, save_calibration

    try:
        values = parse_densities(densities, folders=len(phantom_dirs))
    except CalibrationError as exc:
        raise click.BadParameter(str(exc), ctx, _param(ctx, "densities")) from None
    cal = fit(
        list(phantom_dirs), values, core_fraction=core_fraction,
        edge_margin_vox=edge_margin_vox, qc_dir=out.with_name(out.stem + "_qc"),
    )
    save_calibration(cal, out)
    click.echo(cal.summary())
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=2026, show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing when the study is already there.")
@click.option("--realistic", is_flag=True,
              help="Write the hard realistic study instead (3 groups x 4 femurs with tilted, "
                   "curved, bridged growth plates, scan artefacts, and one adult femur without "
                   "a plate) with truth.json.")
@click.pass_context
@_handle_errors
def samples(ctx, directory, seed, if_missing, realistic) -> None:
    """(Re)generate the synthetic sample study (3 groups × 3 rat femurs) in DIRECTORY."""
    from .phantoms.sample_study import study_complete

    if if_missing and study_complete(directory, realistic=realistic):
        click.echo(f"sample study already in {directory}")
        return
    if realistic:
        from .phantoms import make_realistic_study

        truth = make_realistic_study(directory, seed=seed)
        click.echo(f"wrote {len(truth['scans'])} realistic femurs, groups.csv and truth.json "
                   f"to {directory}")
        return
    from .phantoms.sample_study import make_sample_study

    truth = make_sample_study(directory, seed=seed)
    click.echo(f"wrote {len(truth)} scans and groups.csv to {directory}")


@cli.command()
@click.argument("scan_dir", type=click.Path(path_type=Path))
@click.option("--voxel-size", "voxel_size", type=POSITIVE, help="Voxel size in µm (no log).")
@click.pass_context
@_handle_errors
def inspect(ctx, scan_dir, voxel_size) -> None:
    """Show what the log and the slices of SCAN_DIR say, without analysing."""
    from .io import read_scan

    scan = read_scan(scan_dir, voxel_size_um=voxel_size)
    info = scan.describe()
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            click.echo(f"{k}:")
            for kk, vv in v.items():
                click.echo(f"  {kk}: {vv}")
        else:
            click.echo(f"{k.ljust(width)}  {v}")


def _param(ctx: click.Context, name: str) -> click.Parameter:
    """The command's parameter ``name`` (for errors that name the option as typed)."""
    return next(p for p in ctx.command.params if p.name == name)


def main() -> None:  # console-script entry point
    cli(prog_name="ctmorph")


if __name__ == "__main__":  # pragma: no cover
    main()
