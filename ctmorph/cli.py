"""Command-line interface: each command turns arguments into settings and calls one library
function. The CLI owns logging, progress bars and exit codes (0 ok, 1 failure, 2 usage).

The options of ``ctmorph analyze`` that are analysis settings are made from
:class:`~ctmorph.config.AnalysisConfig` (:mod:`ctmorph.cli_options`); what a run shows is in
:mod:`ctmorph.cli_display`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import click

from . import __version__
from .cli_display import RunProgress, echo_checks, echo_run, echo_sensitivity, setup_logging
from .cli_options import (
    NON_NEGATIVE,
    POSITIVE,
    GreyThreshold,
    InputFile,
    Number,
    checked_settings,
    config_options,
    make_config,
)
from .columns import MORPHOMETRY_PARAMETERS
from .errors import CalibrationError, CtmorphError

logger = logging.getLogger("ctmorph")


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
    setup_logging(verbose)


def _require_distributed() -> None:
    """--scheduler needs the optional Dask package: one line (exit 1) before anything is made."""
    if importlib.util.find_spec("distributed") is None:
        from .distributed import INSTALL_HINT

        raise click.ClickException(
            f"--scheduler runs the scans on a Dask cluster, which needs the optional "
            f"'distributed' package: {INSTALL_HINT}"
        )


@cli.command()
@click.argument("scan_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(path_type=Path),
              help="Output folder (required unless --dry-run).")
@click.option("--groups", "groups_csv", type=InputFile(),
              help="CSV with columns scan,group (UTF-8, or UTF-16 as Excel's Unicode text).")
@click.option("--manifest", "manifest_csv", type=InputFile(),
              help="Study CSV: scan (folder, relative to the manifest), group and optional "
                   "per-scan roi_offset_mm, roi_height_mm, distal_end, voxel_size_um, "
                   "cortical_offset_mm, cortical_height_mm (instead of SCAN_DIR... and --groups).")
@click.option("--dry-run", is_flag=True,
              help="Only validate every scan from its log and slice headers, one line each; "
                   "writes nothing (exit 1 if any scan is invalid).")
@click.option("--group", "group", help="One group label for every scan.")
@click.option("--overrides", "overrides_csv", type=InputFile(),
              help="CSV with the columns scan and any of ref_slice, voi_first_slice, "
                   "voi_last_slice, distal_end: VOIs placed by hand (as 'ctmorph review' "
                   "saves); only the corrected scans are recomputed.")
@config_options
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
              type=Number(0, 50, min_open=True, max_open=True,
                          what="a percentage between 0 and 50 (exclusive)"),
              help="Also analyse every successful scan at the threshold × (1 ± PCT/100) into "
                   "OUT/sensitivity/ and write OUT/sensitivity.csv; 'ctmorph report' then "
                   "says whether the group conclusions hold (0 < PCT < 50).")
@click.pass_context
@_handle_errors
def analyze(ctx, scan_dirs, out, groups_csv, manifest_csv, dry_run, group, overrides_csv,
            no_qc, jobs, force, verify_inputs, scheduler, sensitivity, **options) -> None:
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
    settings = checked_settings(ctx, options)
    if scheduler and not dry_run:
        _require_distributed()
    jobs = jobs or (1 if scheduler else default_jobs())
    config = make_config(settings)
    strict = config.strict_calibration  # --strict: also groups-file rows not in the run
    if config.calibration is not None:
        from .calibration import load_calibration

        load_calibration(options["calibration"])  # a bad file: one clear error before any scan
    groups = read_groups(groups_csv) if groups_csv is not None else None
    manifest = read_manifest(manifest_csv, config) if manifest_csv is not None else None
    overrides = read_overrides(overrides_csv, config) if overrides_csv is not None else None
    if dry_run:
        checks = check_study(scan_dirs, config, manifest=manifest, groups=groups, group=group,
                             strict=strict, overrides=overrides)
        echo_checks(checks)
        if not all(c.ok for c in checks):
            ctx.exit(1)
        return
    setup_logging(ctx.obj["verbose"], out / "ctmorph.log")
    stage_bars = jobs == 1 and not scheduler
    display = RunProgress(stage_bars=stage_bars)
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
    echo_run(summary, out)
    sens_failed = []
    if sensitivity is not None and summary.n_ok:
        from .sensitivity import run_sensitivity

        sens_display = RunProgress(stage_bars=stage_bars)

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
        echo_sensitivity(sens)
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
@click.option("--alpha", type=Number(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True, help="Significance level.")
@click.option("--excel/--no-excel", default=True, show_default=True,
              help="Also write report/report.xlsx.")
@click.option("--figures/--no-figures", default=True, show_default=True)
@click.option("--representative", type=click.Choice(MORPHOMETRY_PARAMETERS), default="BV/TV",
              show_default=True, metavar="PARAM",
              help="Parameter whose group median picks each group's animal for the "
                   "renderings (figure_renderings, figure_paper).")
@click.pass_context
@_handle_errors
def report(ctx, out, control, model, nonparametric, alpha, excel, figures,
           representative) -> None:
    """Group tables, statistics, figures and report.html of an analysis folder OUT."""
    from .report import make_report

    paths = make_report(out, control=control, model=model, nonparametric=nonparametric,
                        alpha=alpha, excel=excel, figures=figures,
                        representative=representative)
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
@click.option("--core-fraction", type=Number(0, 1, min_open=True), default=0.6, show_default=True,
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


@cli.command()
@click.argument("target", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output .png (one view) or .gif (a turntable about the long axis).")
@click.option("--show", type=click.Choice(["voi", "femur"]), default="voi", show_default=True,
              help="The VOI's trabecular bone, or the distal femur cut open along its axis "
                   "with the VOI in colour.")
@click.option("--view", default=None, metavar="VIEW",
              help="anterior, posterior, lateral, medial, oblique, top, bottom or "
                   "AZIMUTH,ELEVATION in degrees [default: oblique for the VOI, anterior "
                   "for the femur].")
@click.option("--size", type=click.IntRange(64, 8000), default=1200, show_default=True,
              help="Image width and height in pixels.")
@click.option("--frames", type=click.IntRange(1, 720), default=36, show_default=True,
              help="Frames of a turntable GIF.")
@click.option("--threshold", type=GreyThreshold(), default="otsu", show_default=True,
              help="Grey threshold of a scan folder (an analysed scan uses its own).")
@click.option("--voxel-size", "voxel_size", type=POSITIVE, help="Voxel size in µm (no log).")
@click.pass_context
@_handle_errors
def render(ctx, target, out, show, view, size, frames, threshold, voxel_size) -> None:
    """Render TARGET, a scan folder or an analysed scan OUT/<scan>, as a shaded 3-D picture."""
    from .pipeline.picture import parse_view, render_scan

    cfg = make_config({"threshold": threshold, "voxel_size_um": voxel_size})
    path = render_scan(target, out, show=show, view=parse_view(view), size_px=size,
                       frames=frames, config=cfg)
    click.echo(f"wrote {path}")


def _param(ctx: click.Context, name: str) -> click.Parameter:
    """The command's parameter ``name`` (for errors that name the option as typed)."""
    return next(p for p in ctx.command.params if p.name == name)


def main() -> None:  # console-script entry point
    cli(prog_name="ctmorph")


if __name__ == "__main__":  # pragma: no cover
    main()
