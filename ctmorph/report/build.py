"""``make_report``: the one entry point behind ``ctmorph report OUT``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import scipy

from .. import __version__
from .._atomic import atomic_write_text
from ..errors import ConfigError
from ..qc import SECTION_PICTURE
from ..textsafe import markdown_text
from .data import (
    empty_parameters,
    group_order,
    group_samples,
    load_results,
    load_run_info,
    load_scan_details,
    parameters,
    qc_pictures,
)
from .figures import (
    MAIN_PARAMETERS,
    figure_style,
    group_colors,
    panel_figure,
    parameter_figure,
    safe_name,
    save_figure,
    significance_marks,
)
from .html import ReportContent, render_html
from .methods import Methods, methods_text
from .renderings import (
    RENDER_PICTURE,
    REPRESENTATIVE_DEFAULT,
    Representative,
    paper_figure,
    paper_legend,
    renderings_figure,
    representatives,
)
from .sensitivity import sensitivity_from_folder, sensitivity_paragraph
from .summary import (
    DUNN,
    DUNNETT,
    GAMES_HOWELL,
    STUDENT_T,
    TUKEY,
    WELCH_T,
    families_used,
    group_summary,
    model_effects,
    statistics_table,
)
from .writers import csv_text, require_openpyxl, write_markdown, write_workbook

__all__ = ["make_report"]

logger = logging.getLogger(__name__)

_FAMILY_TEXT = {
    TUKEY: "Tukey HSD after one-way ANOVA",
    GAMES_HOWELL: "Games-Howell after Welch's ANOVA (Levene p < alpha)",
    DUNN: "Dunn's test (Holm) after Kruskal-Wallis",
    STUDENT_T: "Student's t-test",
    WELCH_T: "Welch's t-test (Levene p < alpha)",
}


def _write_figures(df: pd.DataFrame, params: list[str], statistics: pd.DataFrame,
                   families: dict[str, list[str]], order: list[str], control: str | None,
                   model: str | None, alpha: float, figures: bool, rep: Path,
                   paths: dict[str, Path], reps: dict[str, Representative]
                   ) -> tuple[dict[str, Path], Path | None, str, dict[str, str]]:
    """One figure per parameter, the main panel figure and, when the scans have their
    pictures, the renderings and the paper figure (``paths`` gets their files); returns the
    SVG per parameter, the main figure's SVG and caption, and why a parameter was not
    tested."""
    fig_dir = rep / "figures"
    colors = group_colors(order, control, model)
    untested_note = {}
    for r in statistics.itertuples(index=False):
        if str(r.note).startswith("not tested") and not r.group1 and r.parameter not in \
                untested_note and r.test not in ("Levene", "Welch's ANOVA"):
            untested_note[r.parameter] = str(r.note)
    panels = {}
    figure_files: dict[str, Path] = {}
    written: set[Path] = set()
    main_svg = None
    main = [p for p in MAIN_PARAMETERS if p in params]
    main_caption = _marks_caption(control, model,
                                  {t: [p for p in ps if p in main]
                                   for t, ps in families.items()
                                   if any(p in main for p in ps)}, alpha, len(main))
    with figure_style():
        for p in params if figures else []:
            samples = group_samples(df, p, order)
            marks = significance_marks(statistics, p, order, control, model)
            panels[p] = (p, samples, marks, untested_note.get(p, ""))
            fam = [t for t, ps in families.items() if p in ps]
            cap = _marks_caption(control, model, {t: [p] for t in fam}, alpha, 1)
            fig = parameter_figure(p, samples, order, colors, marks, untested_note.get(p, ""),
                                   caption=cap)
            png, svg = save_figure(fig, fig_dir / safe_name(p))
            paths[f"figure:{p}:png"], paths[f"figure:{p}:svg"] = png, svg
            figure_files[p] = svg
            written |= {png, svg}
        if main and figures:
            fig = panel_figure([panels[p] for p in main], order, colors, main_caption)
            png, main_svg = save_figure(fig, rep / "figure_main")
            paths["figure_main_png"], paths["figure_main_svg"] = png, main_svg
        if figures:
            _write_paper_figures(df, rep, order, reps, [panels[p] for p in main], colors,
                                 main_caption, paths)
    if figures:
        _clean_stale(fig_dir, written)
    return figure_files, main_svg, main_caption, untested_note


def _write_paper_figures(df: pd.DataFrame, rep: Path, order: list[str],
                         reps: dict[str, Representative], panels: list, colors: dict[str, str],
                         caption: str, paths: dict[str, Path]) -> None:
    """``figure_renderings`` and ``figure_paper`` (PNG 300 dpi + SVG) when at least one
    representative has its section and rendering; stale ones are removed otherwise."""
    out_dir = rep.parent
    have = [g for g in order if g in reps and {SECTION_PICTURE, RENDER_PICTURE} <= {
        p.name for p in qc_pictures(out_dir, reps[g].scan)}]
    if not have:
        logger.info("no renderings in the scans' qc folders (analysed with --no-qc?): "
                    "figure_renderings and figure_paper not drawn")
        for stem in ("figure_renderings", "figure_paper"):
            for ext in ("png", "svg"):
                (rep / f"{stem}.{ext}").unlink(missing_ok=True)
        return
    fig = renderings_figure(out_dir, order, reps)
    paths["figure_renderings_png"], paths["figure_renderings_svg"] = save_figure(
        fig, rep / "figure_renderings")
    fig = paper_figure(out_dir, order, reps, panels, colors, caption)
    paths["figure_paper_png"], paths["figure_paper_svg"] = save_figure(fig, rep / "figure_paper")


def _write_methods(ok: pd.DataFrame, out_dir: Path, run: dict[str, Any] | None,
                   params: list[str],
                   order: list[str], control: str | None, model: str | None,
                   nonparametric: bool, alpha: float, families: dict[str, list[str]],
                   n_failed: int, statistics: pd.DataFrame, sensitivity: Any, rep: Path,
                   paths: dict[str, Path],
                   legend: Callable[[Callable[[str], str]], str] | None = None) -> Methods:
    """``methods.md`` (input strings escaped for Markdown); returns the plain text for the
    HTML, which escapes it as a whole."""
    # methods: plain for the HTML (escaped there as a whole), input strings escaped for .md
    details = load_scan_details(out_dir, ok["scan"].tolist())
    sizes = {g: int((ok["group"] == g).sum()) for g in order}

    def build_methods(quote: Callable[[str], str]) -> Methods:
        m = methods_text(
            ok, details, run, params, control=control, model=model,
            nonparametric=nonparametric, alpha=alpha, families=families, group_sizes=sizes,
            n_failed=n_failed, has_dunnett=bool((statistics["test"] == DUNNETT).any()),
            report_versions={"SciPy": scipy.__version__, "NumPy": np.__version__,
                             "pandas": pd.__version__, "Matplotlib": matplotlib.__version__},
            quote=quote,
        )
        if sensitivity is not None:
            m.paragraphs.append(sensitivity_paragraph(sensitivity, nonparametric, quote))
        if legend is not None:
            m.paragraphs.append(legend(quote))
        return m

    paths["methods"] = rep / "methods.md"
    atomic_write_text(paths["methods"], build_methods(markdown_text).as_markdown())
    return build_methods(str)



def _marks_caption(control: str | None, model: str | None, families: dict[str, list[str]],
                   alpha: float, n_params: int) -> str:
    text = "Bars: mean; error bars: SD; dots: individual animals."
    if control:
        text += f" *, **, ***: p < 0.05, 0.01, 0.001 vs {control}"
        text += (f"; #, ##, ###: p < 0.05, 0.01, 0.001 vs {model}." if model else ".")
    if families:
        descr = [_FAMILY_TEXT.get(t, t).replace("alpha", f"{alpha:g}") for t in families]
        if len(families) == 1:
            text += f" Test: {descr[0]}."
        else:
            text += " Tests: " + "; ".join(
                f"{d} ({', '.join(ps)})" for d, ps in zip(descr, families.values(),
                                                          strict=True)) + "."
    if len(families) == 0 and n_params:
        text += " No parameter could be tested."
    return text


def _not_tested(statistics: pd.DataFrame, empty: list[str], params: list[str]) -> list[str]:
    """What the report could not test, with the reason, one line per test and reason."""
    out = [f"{p}: no values (column present but empty"
           + (", no density calibration)" if p in ("BMD", "TMD") else ")") for p in empty]
    found: dict[tuple[str, str], list[str]] = {}
    for r in statistics.itertuples(index=False):
        for seg in str(r.note).split("; "):
            if seg.startswith("not tested"):
                what = f"{r.test} ({r.group1})" if r.group1 else str(r.test)
                found.setdefault((what, seg), []).append(str(r.parameter))
            elif seg.startswith("groups with n < 2 left out"):
                found.setdefault(("all tests", seg), []).append(str(r.parameter))
    for (what, seg), ps in found.items():
        ps = list(dict.fromkeys(ps))
        where = "every parameter" if ps == params and len(ps) > 1 else ", ".join(ps)
        out.append(f"{what}: {seg} — {where}")
    return out


def _clean_stale(folder: Path, keep: set[Path]) -> None:
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.suffix in (".png", ".svg") and p not in keep and p.is_file():
            p.unlink()


def _failure(scan: str, error: str) -> str:
    """A failed scan and why, naming it once (the batch's errors usually start with it)."""
    if not error:
        return str(scan)
    return error if error.startswith(f"{scan}: ") else f"{scan}: {error}"


def _study_warnings(ok: pd.DataFrame, control: str | None, model: str | None
                    ) -> tuple[list[str], str | None, str | None]:
    """What the reader must know about the study (logged too): a control or model group that
    is not there (then None), scans whose reconstruction differs from the calibration."""
    groups = list(dict.fromkeys(ok["group"]))
    warnings: list[str] = []
    if control is not None and control not in groups:
        warnings.append(f"control group {control!r} is not among the analysed groups "
                        f"({', '.join(groups)}): no comparisons against a control")
        control = None
    if model is not None and model not in groups:
        warnings.append(f"model group {model!r} is not among the analysed groups "
                        f"({', '.join(groups)}): no # marks, no % prevented")
        model = None
    if "calibration_mismatch" in ok.columns:
        bad_cal = ok[ok["calibration_mismatch"].astype("string").fillna("").str.strip() != ""]
        if len(bad_cal):
            warnings.append("reconstruction settings differ from the density calibration for "
                            f"{len(bad_cal)} scan(s): " + "; ".join(
                                f"{r.scan}: {r.calibration_mismatch}"
                                for r in bad_cal.head(5).itertuples(index=False)))
    for w in warnings:
        logger.warning("%s", w)
    return warnings, control, model


def make_report(out_dir: str | Path, *, control: str | None = "sham", model: str | None = None,
                nonparametric: bool = False, alpha: float = 0.05, excel: bool = True,
                figures: bool = True,
                representative: str = REPRESENTATIVE_DEFAULT) -> dict[str, Path]:
    """Write the study report of an analysis folder into ``OUT/report/``.

    Parameters
    ----------
    out_dir : str or Path
        Analysis folder of ``ctmorph analyze`` (``morphometry.csv``, optional ``run.json``,
        ``<scan>/morphometry.json``, ``<scan>/qc/*.png`` and ``sensitivity.csv``).
    control : str or None
        Control group (sham): shown first, white bars, ``*`` marks, Dunnett comparisons,
        % change. Ignored with a warning when the data have no such group.
    model : str or None
        Disease-model group (OVX): shown second, grey bars, ``#`` marks, % of the model
        effect prevented by each other group.
    nonparametric : bool
        Add Kruskal-Wallis with Dunn (Holm) and read those for the marks.
    alpha : float
        Significance level (Levene's choice of the Welch analysis, highlighting).
    excel : bool
        Also write ``report.xlsx`` (needs openpyxl; a clear error if it is missing).
    figures : bool
        Draw the figures (PNG + SVG, a few tenths of a second each); without them the
        tables, methods and HTML are still written.
    representative : str
        The parameter that picks each group's representative animal for the renderings
        (closest to the group median; :mod:`ctmorph.report.renderings`).

    Returns
    -------
    dict of str to Path
        Every file written: ``group_summary``, ``statistics``, ``model_effects`` (CSV),
        ``*_md`` (Markdown), ``xlsx``, ``methods`` (Markdown), ``html``, ``figure_main_png``/
        ``_svg`` and ``figure:<parameter>:png``/``svg``; ``sensitivity`` (CSV, with its
        Markdown) when ``OUT/sensitivity.csv`` from ``analyze --sensitivity`` matches
        ``morphometry.csv`` (a stale one is left out with a warning).

    Raises
    ------
    ConfigError
        Missing or unreadable ``morphometry.csv``, no successful scan, bad options.
    CtmorphError
        ``excel=True`` without openpyxl (raised before anything is written).
    """
    out_dir = Path(out_dir)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha!r}")
    if control is not None and control == model:
        raise ConfigError(f"control and model must be different groups, both are {control!r}")
    if excel:
        require_openpyxl()
    df = load_results(out_dir)
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] != "ok"]
    if ok.empty:
        why = "; ".join(_failure(r.scan, getattr(r, "error", ""))
                        for r in failed.head(3).itertuples(index=False))
        raise ConfigError(f"{out_dir / 'morphometry.csv'}: no scan was analysed successfully"
                          + (f" ({why})" if why else ""))
    for r in failed.itertuples(index=False):
        logger.warning("left out of the report: %s", _failure(r.scan, getattr(r, "error", "")))

    warnings, control, model = _study_warnings(ok, control, model)
    order = group_order(ok["group"].tolist(), control, model)
    params = parameters(df)
    reps = representatives(df, order, representative)

    summary = group_summary(df, control, model)
    statistics = statistics_table(df, control, model=model, nonparametric=nonparametric,
                                  alpha=alpha)
    effects = model_effects(summary, statistics, control, model)
    families = families_used(statistics, params)
    run = load_run_info(out_dir)
    sensitivity, stale = sensitivity_from_folder(
        out_dir, df, run, control=control, model=model, nonparametric=nonparametric,
        alpha=alpha, main_statistics=statistics)
    if stale:
        logger.warning("%s", stale)
        warnings.append(stale)
    if sensitivity is not None:
        for note in sensitivity.notes:
            logger.warning("threshold sensitivity: %s", note)

    rep = out_dir / "report"
    paths: dict[str, Path] = {
        "group_summary": rep / "group_summary.csv",
        "statistics": rep / "statistics.csv",
        "model_effects": rep / "model_effects.csv",
    }
    atomic_write_text(paths["group_summary"], csv_text(summary))
    atomic_write_text(paths["statistics"], csv_text(statistics))
    atomic_write_text(paths["model_effects"], csv_text(effects))
    titles = {"group_summary": "Group summary", "statistics": "Statistics",
              "model_effects": "Change against the control and prevention of the model effect"}
    tables = {"group_summary": summary, "statistics": statistics, "model_effects": effects}
    if sensitivity is not None:
        paths["sensitivity"] = rep / "sensitivity.csv"
        atomic_write_text(paths["sensitivity"], csv_text(sensitivity.table))
        titles["sensitivity"] = "Threshold sensitivity"
        tables["sensitivity"] = sensitivity.table
    else:
        (rep / "sensitivity.csv").unlink(missing_ok=True)  # never leave a stale verdict
        (rep / "sensitivity.md").unlink(missing_ok=True)
    for key, table in tables.items():
        paths[f"{key}_md"] = rep / f"{key}.md"
        write_markdown(table, paths[f"{key}_md"], titles[key])
    if excel:
        paths["xlsx"] = rep / "report.xlsx"
        write_workbook({**tables, "scans": df}, paths["xlsx"])

    # figures
    figure_files, main_svg, main_caption, untested_note = _write_figures(
        df, params, statistics, families, order, control, model, alpha, figures, rep, paths,
        reps)

    legend = (None if "figure_paper_png" not in paths else
              lambda quote: paper_legend(order, reps, main_caption, quote))
    methods = _write_methods(ok, out_dir, run, params, order, control, model, nonparametric,
                             alpha, families, len(failed), statistics, sensitivity, rep, paths,
                             legend)

    content = ReportContent(
        out_dir=out_dir, results=df, summary=summary, statistics=statistics,
        model_effects=effects, order=order, control=control, model=model,
        nonparametric=nonparametric, alpha=alpha, params=params, methods=methods,
        not_tested=_not_tested(statistics, empty_parameters(df), params), main_figure=main_svg,
        paper_figure=paths.get("figure_paper_png"),
        main_caption=main_caption, figures=figure_files,
        qc={s: qc_pictures(out_dir, s) for s in df["scan"]}, run=run, version=__version__,
        warnings=warnings, sensitivity=sensitivity,
    )
    paths["html"] = rep / "report.html"
    atomic_write_text(paths["html"], render_html(content))
    n_tested = sum(1 for p in params if p not in untested_note)
    logger.info("report: %d parameters, %d tested, %d groups, %d scans (%d failed)",
                len(params), n_tested, len(order), len(df), len(failed))
    return paths
