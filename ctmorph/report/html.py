"""The self-contained ``report.html``: everything inline, nothing loaded from the network.

Figures are embedded as base64 SVG, QC pictures as base64 PNG thumbnails; a
Content-Security-Policy forbids any other resource. Every string that comes from the input
(scan names, group labels, error messages, log values, paths) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from ..columns import COLUMN_BY_NAME
from .methods import Methods
from .sensitivity import SensitivityResult, pct_label
from .writers import format_value

__all__ = ["ReportContent", "render_html", "thumbnail_data_uri"]

logger = logging.getLogger(__name__)

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0 auto;max-width:1180px;padding:0 24px 48px;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em;margin:1.2em 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
 margin-top:2em}h3{margin-bottom:.3em}
.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #d4d4d4;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums;
 white-space:nowrap}
tr.sig td{background:#fff7e0}
.warn{background:#fff4f0;border-left:4px solid #d9534f;padding:.5em 1em;margin:1em 0}
.note{background:#f4f8ff;border-left:4px solid #4a78c2;padding:.5em 1em;margin:1em 0}
figure{margin:1em 0}figcaption{font-size:.86em;color:#333;max-width:900px}
.main img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:14px}.grid figure{margin:0;width:270px}
.grid img{width:100%}
.qc{display:flex;flex-wrap:wrap;gap:18px}.qc .scan{border:1px solid #ddd;padding:6px;
 border-radius:4px}.qc img{height:150px;margin-right:4px;image-rendering:auto}
.qc .name{font-weight:600;font-size:.9em}.methods p{max-width:950px;text-align:justify}
dl.defs dt{font-weight:600}dl.defs dd{margin:0 0 .4em 1.5em}
details summary{cursor:pointer;color:#2a5db0}
code{background:#f3f3f3;padding:0 3px}
"""


_EFFECT_LABEL = {"eta squared": "η²", "epsilon squared": "ε²"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass
class ReportContent:
    """Everything the HTML page shows (built by :func:`ctmorph.report.make_report`)."""

    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    statistics: pd.DataFrame
    model_effects: pd.DataFrame
    order: list[str]
    control: str | None
    model: str | None
    nonparametric: bool
    alpha: float
    params: list[str]
    methods: Methods
    not_tested: list[str]
    main_figure: Path | None
    paper_figure: Path | None
    main_caption: str
    figures: dict[str, Path]
    qc: dict[str, list[Path]]
    run: Mapping[str, object] = field(default_factory=dict)
    version: str = ""
    warnings: list[str] = field(default_factory=list)
    sensitivity: SensitivityResult | None = None


def _svg_img(path: Path, alt: str, scale: float = 0.0) -> str:
    """An SVG file as a base64 ``<img>``; ``scale`` > 0 sets its width to scale × natural."""
    raw = path.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    style = ""
    m = re.search(rb'<svg[^>]*\swidth="([0-9.]+)pt"', raw[:2000])
    if scale > 0 and m:
        style = f' style="width:min(100%, {float(m.group(1)) * 4 / 3 * scale:.0f}px)"'
    return f'<img alt="{_e(alt)}"{style} src="data:image/svg+xml;base64,{data}">'


def thumbnail_data_uri(path: Path, max_size: int = 360) -> str | None:
    """A PNG thumbnail of an image file as a ``data:`` URI (None when unreadable)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.thumbnail((max_size, max_size))
            if im.mode not in ("L", "RGB", "RGBA", "P"):
                im = im.convert("RGB")
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        logger.warning("%s: QC picture unreadable (%s)", path, exc)
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]],
           row_classes: Sequence[str] | None = None) -> str:
    """Rows of (escaped html, is_numeric) cells."""
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for k, row in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        out.append(f"<tr{cls}>")
        out += [f'<td class="num">{c}</td>' if num else f"<td>{c}</td>" for c, num in row]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _df_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>(no rows)</p>"
    rows = []
    for rec in df.itertuples(index=False):
        rows.append([(_e(format_value(v, c)), not isinstance(v, str))
                     for v, c in zip(rec, df.columns, strict=True)])
    return _table([str(c) for c in df.columns], rows)


def _num(v: object, column: str = "") -> str:
    return _e(format_value(v, column))


def _overview(c: ReportContent) -> str:
    df = c.results
    ok = df[df["status"] == "ok"]
    bad = df[df["status"] != "ok"]
    rows = []
    for g in c.order + [g for g in dict.fromkeys(bad["group"]) if g not in c.order]:
        role = ("control" if g == c.control else "model" if g == c.model else "")
        rows.append([(_e(g), False), (_e(role), False),
                     (str(int((ok["group"] == g).sum())), True),
                     (str(int((bad["group"] == g).sum())), True)])
    parts = ["<h2>Study overview</h2>",
             f"<p>{len(df)} scans in <code>morphometry.csv</code>: {len(ok)} analysed, "
             f"{len(bad)} failed.</p>",
             _table(["group", "role", "n analysed", "n failed"], rows)]
    thr = ok["threshold"].dropna().unique() if "threshold" in ok.columns else []
    if len(thr):
        meth = ok["threshold_method"].dropna().astype(str).unique() \
            if "threshold_method" in ok.columns else []
        parts.append(f"<p>Threshold: {_e(', '.join(format_value(float(t)) for t in thr))} "
                     f"(grey){' — ' + _e(', '.join(meth)) if len(meth) else ''}.</p>")
    if len(bad):
        parts.append("<h3>Scans that failed</h3>")
        parts.append(_table(["scan", "group", "status", "why"], [
            [(_e(r.scan), False), (_e(r.group), False), (_e(r.status), False),
             (_e(getattr(r, "error", "") or "(no reason recorded)"), False)]
            for r in bad.itertuples(index=False)]))
    if c.not_tested or c.warnings:
        items = "".join(f"<li>{_e(t)}</li>" for t in [*c.warnings, *c.not_tested])
        parts.append(f'<div class="warn"><b>What could not be tested, and why</b><ul>{items}'
                     "</ul></div>")
    return "\n".join(parts)


def _summary_wide(c: ReportContent) -> str:
    s = c.summary
    if s.empty:
        return "<p>(no parameters)</p>"
    header = ["parameter", "unit"] + [f"{g}" for g in c.order]
    rows = []
    for p in c.params:
        block = s[s["parameter"] == p].set_index("group")
        unit = COLUMN_BY_NAME[p].unit if p in COLUMN_BY_NAME else ""
        row = [(_e(p), False), (_e(unit), False)]
        for g in c.order:
            if g not in block.index or block.loc[g, "n"] == 0:
                row.append(("–", True))
                continue
            r = block.loc[g]
            sd = f" ± {format_value(r['sd'])}" if not math.isnan(r["sd"]) else ""
            row.append((_e(f"{format_value(r['mean'])}{sd} (n = {int(r['n'])})"), True))
        rows.append(row)
    return (_table(header, rows)
            + "<p class=meta>mean ± SD (n). Medians, IQR and SEM are in "
              "<code>group_summary.csv</code>.</p>")


def _stats_read(c: ReportContent) -> str:
    st = c.statistics
    rec = st[st["recommended"]]
    if rec.empty:
        return "<p>No parameter could be tested.</p>"
    omni = rec[rec["group2"] == ""]
    pairs = rec[rec["group2"] != ""]
    out = ["<h3>Omnibus tests read</h3>"]
    rows, classes = [], []
    for r in omni.itertuples(index=False):
        df = (f"{format_value(r.df1, 'df1')}, {format_value(r.df2, 'df2')}"
              if not math.isnan(r.df2) else format_value(r.df1, "df1"))
        es = (f"{_EFFECT_LABEL.get(r.effect_size_measure, r.effect_size_measure)} = "
              f"{format_value(r.effect_size)}" if r.effect_size_measure else "")
        rows.append([(_e(r.parameter), False), (_e(r.test), False),
                     (_num(r.statistic), True), (_e(df), True), (_num(r.p, "p"), True),
                     (_e(es), False), (_e(r.note), False)])
        classes.append("sig" if r.p < c.alpha else "")
    out.append(_table(["parameter", "test", "statistic", "df", "p", "effect size", "note"],
                      rows, classes))
    out.append("<h3>Pairwise comparisons read</h3>")
    rows, classes = [], []
    for r in pairs.itertuples(index=False):
        ci = (f"[{format_value(r.ci_low)}, {format_value(r.ci_high)}]"
              if not math.isnan(r.ci_low) else "")
        g = (f"{format_value(r.effect_size)} [{format_value(r.effect_ci_low)}, "
             f"{format_value(r.effect_ci_high)}]" if not math.isnan(r.effect_size) else "")
        rows.append([(_e(r.parameter), False), (_e(r.test), False),
                     (_e(f"{r.group2} − {r.group1}"), False), (_num(r.mean_diff), True),
                     (_e(ci), True), (_num(r.p_adj, "p_adj"), True), (_e(g), True)])
        classes.append("sig" if r.p_adj < c.alpha else "")
    out.append(_table(["parameter", "test", "comparison", "mean difference", "95% CI",
                       "p (adjusted)", "Hedges' g [95% CI]"], rows, classes))
    out.append("<p class=meta>Highlighted: p &lt; " + _e(f"{c.alpha:g}") + ". The tests read are "
               "chosen per parameter: ANOVA + Tukey HSD, or Welch's ANOVA + Games-Howell when "
               "Levene's test says the variances differ" + (
                   "; Kruskal-Wallis + Dunn (Holm) because the non-parametric analysis was "
                   "requested" if c.nonparametric else "")
               + ". Every test run is in the full table below and in "
                 "<code>statistics.csv</code>.</p>")
    return "\n".join(out)


def _figures(c: ReportContent) -> str:
    if c.main_figure is None and not c.figures:
        return "<p>No figures were drawn.</p>"
    out = []
    if c.paper_figure is not None:
        uri = thumbnail_data_uri(c.paper_figure, max_size=1400)
        if uri is not None:
            out.append('<figure class="main"><img alt="paper figure" style="width:min(100%, '
                       f'1100px)" src="{uri}"><figcaption><b>Paper figure.</b> A: each '
                       "group's representative animal (section with the VOI, 3-D rendering of "
                       "the VOI); B: the bars of Figure 1. Legend in methods.md. "
                       "<code>figure_paper.png</code> (300 dpi) and <code>.svg</code>."
                       "</figcaption></figure>")
    if c.main_figure is not None:
        out.append('<figure class="main">' + _svg_img(c.main_figure, "main figure", 1.6)
                   + f"<figcaption><b>Figure 1.</b> {_e(c.main_caption)}</figcaption></figure>")
    if c.figures:
        out.append("<h3>Every parameter</h3><div class=grid>")
        for p, path in c.figures.items():
            out.append("<figure>" + _svg_img(path, p) + "</figure>")
        out.append("</div>")
    return "\n".join(out)


def _sensitivity(c: ReportContent) -> str:
    res = c.sensitivity
    if res is None:
        return ""
    t = res.table
    pcts = sorted(res.thresholds)
    cls = "note" if res.holds else "warn"
    out = ['<h2 id="sensitivity">Threshold sensitivity</h2>',
           f'<div class="{cls}">{_e(res.sentence)}</div>']
    if res.notes:
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in res.notes) + "</ul>")
    header = (["parameter", "conclusions hold"]
              + [f"p at {pct_label(v)}" if v else "p (main)" for v in pcts]
              + ["significant at the main threshold"]
              + [f"group means at {pct_label(v)} (% of main)" for v in pcts if v]
              + ["what changes"])
    rows, classes = [], []
    for p in c.params:
        block = t[t["parameter"] == p]
        if block.empty:
            continue
        first = {v: block[block["threshold_change_pct"] == v] for v in pcts}
        ch = res.changes.get(p)
        row = [(_e(p), False), (_e("n/a" if ch is None else "yes" if not ch else "no"), False)]
        for v in pcts:
            b = first[v]
            row.append((_num(b["omnibus_p"].iloc[0], "p") if len(b) else "", True))
        b0 = first[0.0] if 0.0 in first else first[pcts[0]]
        row.append((_e(b0["significant_pairs"].iloc[0] if len(b0) else ""), False))
        for v in pcts:
            if not v:
                continue
            b = first[v]
            row.append((_e("; ".join(f"{g} " + f"{x:+.1f}".replace("-", "\u2212") for g, x in
                                     zip(b["group"], b["pct_change_vs_main"], strict=True)
                                     if math.isfinite(x))), False))
        row.append((_e("; ".join(ch or [])), False))
        rows.append(row)
        classes.append("sig" if ch else "")
    out.append(_table(header, rows, classes))
    out.append("<p class=meta>Every scan analysed again at the threshold "
               + _e(", ".join(f"{res.thresholds[v]:.4g}" for v in pcts if v)) + " "
               + _e(res.unit) + " (main " + _e(f"{res.thresholds[0.0]:.4g}")
               + "), same tests and alpha. Highlighted: a conclusion changes. Per group and "
                 "threshold in <code>report/sensitivity.csv</code>; per scan in "
                 "<code>sensitivity.csv</code> of the analysis folder.</p>")
    return "\n".join(out)


def _methods(m: Methods) -> str:
    out = ['<h2 id="methods">Methods</h2><div class="methods">']
    out += [f"<p>{_e(p)}</p>" for p in m.paragraphs]
    if m.missing:
        out.append('<div class="note"><b>Not recorded in the scan logs — add by hand:</b> '
                   + _e("; ".join(m.missing)) + "</div>")
    if m.definitions:
        out.append("<h3>Index definitions</h3><dl class=defs>")
        for name, unit, desc, ref in m.definitions:
            u = f" ({unit})" if unit else ""
            r = f" <i>{_e(ref)}</i>" if ref else ""
            out.append(f"<dt>{_e(name + u)}</dt><dd>{_e(desc)}.{r}</dd>")
        out.append("</dl>")
    if m.references:
        out.append("<h3>References</h3><ul>")
        out += [f"<li>{_e(r)}</li>" for r in m.references]
        out.append("</ul>")
    out.append("</div>")
    return "\n".join(out)


def _qc(c: ReportContent) -> str:
    if not any(c.qc.values()):
        return ("<h2>Quality control</h2><p>No QC pictures found "
                "(<code>OUT/&lt;scan&gt;/qc/*.png</code>).</p>")
    out = ["<h2>Quality control</h2><p class=meta>VOI outlines, growth-plate reference and "
           "threshold per scan; click a thumbnail for the full picture (in the analysis "
           "folder).</p><div class=qc>"]
    groups = dict(zip(c.results["scan"], c.results["group"], strict=False))
    status = dict(zip(c.results["scan"], c.results["status"], strict=False))
    for scan, pics in c.qc.items():
        if not pics:
            continue
        tag = "" if status.get(scan) == "ok" else f" — {status.get(scan, '')}"
        out.append(f'<div class=scan><div class=name>{_e(scan)} <span class=meta>'
                   f"({_e(groups.get(scan, ''))}){_e(tag)}</span></div>")
        for p in pics:
            uri = thumbnail_data_uri(p)
            if uri is None:
                out.append(f"<span class=meta>{_e(p.name)}: unreadable</span>")
                continue
            href = "../" + quote(scan) + "/qc/" + quote(p.name)
            out.append(f'<a href="{_e(href)}" title="{_e(p.name)}"><img alt="{_e(p.name)}" '
                       f'src="{uri}"></a>')
        out.append("</div>")
    out.append("</div>")
    return "\n".join(out)


def _provenance(c: ReportContent) -> str:
    run = c.run
    rows = []
    versions = run.get("versions") if isinstance(run, Mapping) else None
    if isinstance(versions, Mapping):
        rows += [[(_e(k), False), (_e(v), False)] for k, v in versions.items()]
    cfg = run.get("config") if isinstance(run, Mapping) else None
    out = ["<h2>Provenance</h2>",
           f"<p>Report written by ctmorph {_e(c.version)} from <code>{_e(c.out_dir)}</code>. "
           "Tables: <code>report/group_summary.csv</code>, <code>statistics.csv</code>, "
           "<code>model_effects.csv</code> (also as Markdown and in "
           "<code>report.xlsx</code>).</p>"]
    if rows:
        out.append(_table(["software", "version"], rows))
    if isinstance(cfg, Mapping):
        out.append(_table(["analysis setting", "value"],
                          [[(_e(k), False), (_e(v), False)] for k, v in cfg.items()]))
    return "\n".join(out)


def render_html(c: ReportContent) -> str:
    """The whole page as one string."""
    opts = [f"control: {c.control}" if c.control else "no control group",
            f"model: {c.model}" if c.model else "",
            "non-parametric" if c.nonparametric else "", f"alpha = {c.alpha:g}"]
    body = [
        "<h1>Micro-CT bone morphometry: study report</h1>",
        f"<p class=meta>{_e(' · '.join(o for o in opts if o))} · groups: "
        f"{_e(', '.join(c.order))}</p>",
        _overview(c),
        "<h2>Figure</h2>", _figures(c),
        "<h2>Group summary</h2>", _summary_wide(c),
    ]
    if not c.model_effects.empty:
        me = c.model_effects.drop(columns=["control", "model"])
        body += ["<h2>Change against the control"
                 + (" and prevention of the model effect" if c.model else "") + "</h2>",
                 _df_table(me),
                 "<p class=meta>pct_change_vs_control = 100 (mean − control mean) / control "
                 "mean; pct_loss_prevented = 100 (treated − model) / (control − model): 0 % = "
                 "as the untreated model, 100 % = back to control. p-values from the "
                 "post-hoc test read.</p>"]
    body += ["<h2>Statistics</h2>", _stats_read(c),
             "<details><summary>All tests (assumption checks, every post-hoc family, "
             "Dunnett)</summary>", _df_table(c.statistics), "</details>",
             _sensitivity(c), _methods(c.methods), _qc(c), _provenance(c)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>ctmorph study report</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
