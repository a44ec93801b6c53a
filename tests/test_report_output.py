"""``make_report`` end to end on synthetic analysis folders: files, HTML, figures, methods.

The folders are written here (morphometry.csv, per-scan JSON, tiny QC PNGs, run.json) with
values chosen so the expected tables follow from hand computations.
"""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ctmorph.errors import ConfigError, CtmorphError
from ctmorph.report import make_report, statistics_table
from ctmorph.report.data import load_results
from ctmorph.report.figures import group_colors, parameter_figure, significance_marks

EVIL_GROUP = 'OVX+Exos <b>"&$'  # HTML and mathtext specials in a group label
EVIL_SCAN = "bad<script>alert(1)</script>"
SETTINGS = {"scanner": "SkyScan1172", "source_voltage_kv": 70.0, "source_current_ua": 141.0,
            "filter": "Al 0.5mm", "voxel_size_um": 9.0, "smoothing": 2,
            "smoothing_kernel": "Gaussian", "ring_artifact_correction": 7,
            "beam_hardening_correction_percent": 30.0, "cs_min": 0.0, "cs_max": 0.11,
            "reconstruction_program": "NRecon <img src=x onerror=alert(2)>",
            "program_version": "1.7.4.2", "roi_mode": "ON_ROUND"}

# BV/TV per group (%): big OVX loss, half of it prevented by the treatment
BVTV = {"sham": [30.0, 32.0, 28.0, 31.0, 29.0], "OVX": [10.0, 12.0, 8.0, 11.0, 9.0],
        EVIL_GROUP: [20.0, 22.0, 18.0, 21.0, 19.0]}
TBTH = {"sham": [0.080, 0.082, 0.078, 0.081, 0.079], "OVX": [0.070, 0.072, 0.068, 0.071, 0.069],
        EVIL_GROUP: [0.075, 0.077, 0.073, 0.076, 0.074]}


def study_row(scan: str, group: str, **values) -> dict:
    """One successful row of morphometry.csv (auto VOI, Otsu threshold 87), updated by values."""
    base = {"scan": scan, "group": group, "status": "ok", "error": "", "voxel_um": 9.0,
            "threshold": 87.0, "threshold_method": "otsu (pooled over 16 scans)", "roi": "auto",
            "voi_offset_mm": 1.0, "voi_height_mm": 2.0, "smooth_sigma_vox": 1.0,
            "thickness_convention": "corrected", "ctmorph_version": "0.1.0", "BMD": np.nan}
    base.update(values)
    return base


def write_study(out: Path, *, json_settings: dict | None = SETTINGS, qc: bool = True) -> Path:
    """A three-group study (sham, OVX, EVIL_GROUP) and a failed scan: CSV, JSON, QC pictures."""
    rows = []
    for g in BVTV:
        for i, (bv, th) in enumerate(zip(BVTV[g], TBTH[g], strict=True)):
            rows.append(study_row(f"{g[:4].strip()}_{i}", g, **{"BV/TV": bv, "Tb.Th": th,
                                                            "Tb.Sp": 0.3 - bv / 200}))
    rows.append(study_row(EVIL_SCAN, "OVX", status="failed",
                     error="no growth plate found <i>between</i> sections & 'x'"))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "morphometry.csv", index=False)
    (out / "run.json").write_text(json.dumps({
        "config": {"min_bone_voxels": 50, "min_marrow_voxels": 50},
        "versions": {"ctmorph": "0.1.0", "numpy": "2.0"}}))
    for r in rows[:2]:
        folder = out / r["scan"]
        if json_settings is not None:
            folder.mkdir(exist_ok=True)
            (folder / "morphometry.json").write_text(json.dumps(
                {"row": r, "scan": {"settings": json_settings}}, default=str))
        if qc:
            (folder / "qc").mkdir(parents=True, exist_ok=True)
            img = (np.arange(60 * 40).reshape(60, 40) % 255).astype("uint8")
            Image.fromarray(img).save(folder / "qc" / "axial.png")
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = write_study(tmp_path_factory.mktemp("study") / "out")
    paths = make_report(out, control="sham", model="OVX")
    return out, paths


def test_every_output_is_written(report):
    out, paths = report
    rep = out / "report"
    for key in ("group_summary", "statistics", "model_effects", "group_summary_md",
                "statistics_md", "model_effects_md", "xlsx", "methods", "html",
                "figure_main_png", "figure_main_svg", "figure:BV/TV:png", "figure:Tb.Th:svg"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
        assert paths[key].is_relative_to(rep)
    assert paths["figure:Tb.Th:png"].name == "Tb.Th.png"  # dots in the name survive
    assert paths["figure:BV/TV:png"].name == "BV_TV.png"
    assert not list(rep.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_tables_follow_the_contract_and_hand_values(report):
    out, paths = report
    s = pd.read_csv(paths["group_summary"])
    assert list(s.columns[:8]) == ["parameter", "group", "n", "mean", "sd", "sem", "median",
                                   "iqr"]
    assert list(s[s.parameter == "BV/TV"].group) == ["sham", "OVX", EVIL_GROUP]
    r = s[(s.parameter == "BV/TV") & (s.group == "sham")].iloc[0]
    assert (r.n, r["mean"], r["median"]) == (5, 30.0, 30.0)
    assert r["sd"] == pytest.approx(np.sqrt(10 / 4)) and r["iqr"] == pytest.approx(2.0)
    assert "BMD" not in set(s.parameter)  # an empty column is not a parameter
    st = pd.read_csv(paths["statistics"], keep_default_na=False, na_values=[""])
    for col in ("parameter", "test", "statistic", "p", "group1", "group2", "mean_diff",
                "ci_low", "ci_high", "p_adj"):
        assert col in st.columns
    assert {"one-way ANOVA", "Tukey HSD", "Welch's ANOVA", "Games-Howell", "Dunnett",
            "Levene", "Shapiro-Wilk"} <= set(st.test)
    me = pd.read_csv(paths["model_effects"])
    r = me[(me.parameter == "BV/TV") & (me.group == EVIL_GROUP)].iloc[0]
    assert r.pct_change_vs_control == pytest.approx(100 * (20 - 30) / 30)
    assert r.pct_loss_prevented == pytest.approx(50.0)  # (20 - 10) / (30 - 10)
    r = me[(me.parameter == "Tb.Sp") & (me.group == EVIL_GROUP)].iloc[0]
    assert r.pct_loss_prevented == pytest.approx(50.0)  # a rise after OVX, same formula
    md = paths["statistics_md"].read_text(encoding="utf-8")
    assert "| parameter | test |" in md and "\\|" not in md.split("\n")[2][:3]


def test_workbook_has_the_tables_and_text_stays_text(report):
    openpyxl = pytest.importorskip("openpyxl")
    out, paths = report
    wb = openpyxl.load_workbook(paths["xlsx"])
    assert wb.sheetnames == ["group_summary", "statistics", "model_effects", "scans"]
    ws = wb["group_summary"]
    header = [c.value for c in ws[1]]
    assert header[:6] == ["parameter", "group", "n", "mean", "sd", "sem"]
    assert ws.cell(row=2, column=4).value == pytest.approx(30.0)  # BV/TV sham mean, numeric
    scans = [c.value for c in wb["scans"]["A"]]
    assert EVIL_SCAN in scans


def test_formula_like_text_is_not_a_formula(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    from ctmorph.report.writers import write_workbook

    write_workbook({"t": pd.DataFrame({"scan": ["=HYPERLINK(\"http://x\")"], "v": [1.5]})},
                   tmp_path / "t.xlsx")
    cell = openpyxl.load_workbook(tmp_path / "t.xlsx")["t"]["A2"]
    assert cell.data_type == "s" and cell.value.startswith("=HYPERLINK")


def test_html_is_self_contained(report):
    out, paths = report
    html = paths["html"].read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"<script|<link|<iframe|@import|url\(", html, re.IGNORECASE)
    hrefs = re.findall(r'\bhref="([^"]*)"', html)
    assert all(not h.startswith(("http:", "https:", "//")) for h in hrefs)
    # embedded figures decode to SVG documents without external references
    for s in srcs:
        if s.startswith("data:image/svg+xml;base64,"):
            svg = base64.b64decode(s.split(",", 1)[1]).decode("utf-8")
            ET.fromstring(svg)  # well-formed
            assert not re.search(r'(?:xlink:)?href="https?:', svg)


def test_html_escapes_everything_from_the_input(report):
    out, paths = report
    html = paths["html"].read_text(encoding="utf-8")
    for raw in (EVIL_SCAN, EVIL_GROUP, "<img src=x", "<i>between</i>"):
        assert raw not in html
    assert "bad&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "OVX+Exos &lt;b&gt;&quot;&amp;$" in html
    assert "NRecon &lt;img src=x onerror=alert(2)&gt;" in html


def test_html_reports_failures_and_what_was_not_tested(report):
    out, paths = report
    html = paths["html"].read_text(encoding="utf-8")
    assert "Scans that failed" in html and "no growth plate found" in html
    assert "BMD: no values" in html
    assert "<b>Figure 1.</b>" in html and "Tukey HSD" in html
    assert html.count('class="scan"') + html.count("class=scan") == 2  # QC thumbnails


def test_methods_paragraph_from_logs_and_rows(report):
    out, paths = report
    text = paths["methods"].read_text(encoding="utf-8")
    for expected in ("SkyScan1172", "70 kV", "141 µA", "Al 0.5mm filter", "9 µm",
                     "beam-hardening correction 30 %", "ring-artefact correction 7",
                     "started 1 mm proximal", "extended 2 mm proximally", "threshold of 87",
                     "Otsu", "σ = 1 voxel", "Bone particles smaller than 50 voxels",
                     "ctmorph 0.1.0", "Tukey", "Games-Howell", "Dunnett", "Hedges' g",
                     "Bouxsein", "sham n = 5", "1 scan could not be analysed",
                     "(treated − OVX) / (sham − OVX)"):
        assert expected in text, expected
    # every index reported is defined, with its unit, from the column registry
    assert "**BV/TV** (%): bone volume fraction" in text
    assert "**Tb.Th** (mm)" in text


def test_methods_degrade_without_scan_json(tmp_path):
    out = write_study(tmp_path / "out", json_settings=None, qc=False)
    paths = make_report(out, control="sham", model=None, excel=False, figures=False)
    text = paths["methods"].read_text(encoding="utf-8")
    assert "Not recorded in the scan logs" in text and "scanner model" in text
    assert "Femurs were scanned at an isotropic voxel size of 9 µm." in text
    html = paths["html"].read_text(encoding="utf-8")
    assert "No QC pictures found" in html
    assert "xlsx" not in paths


def test_partial_settings_are_used_and_the_rest_listed(tmp_path):
    out = write_study(tmp_path / "out", json_settings={"scanner": "SkyScan1172",
                                                        "filter": None})
    text = make_report(out, excel=False, figures=False)["methods"].read_text(encoding="utf-8")
    assert "with a SkyScan1172 micro-CT scanner at an isotropic" in text
    assert "X-ray filter" in text.split("Not recorded")[1]


def _marks_in(fig) -> dict[float, str]:
    ax = fig.axes[0]
    return {round(t.get_position()[0]): t.get_text() for t in ax.texts if t.get_text()}


def test_figure_marks_and_units(report):
    out, _ = report
    df = load_results(out)
    order = ["sham", "OVX", EVIL_GROUP]
    st = statistics_table(df, "sham", model="OVX")
    marks = significance_marks(st, "BV/TV", order, "sham", "OVX")
    # Tukey p: OVX vs sham and treated vs both are far below 0.001
    assert marks == {"OVX": "***", EVIL_GROUP: "***\n###"}
    samples = {g: np.array(BVTV[g]) for g in order}
    fig = parameter_figure("BV/TV", samples, order, group_colors(order, "sham", "OVX"), marks)
    assert _marks_in(fig) == {1: "***", 2: "***\n###"}
    ax = fig.axes[0]
    assert ax.get_ylabel() == "BV/TV (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sham", "OVX", r'OVX+Exos <b>"&\$']
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([30.0, 10.0, 20.0])  # bar = mean
    fig.canvas.draw()  # the $ in the label renders literally, no mathtext error


def test_stars_thresholds():
    from ctmorph.report.figures import stars

    assert [stars(p) for p in (0.2, 0.049, 0.0099, 0.00099, np.nan)] == \
        ["", "*", "**", "***", ""]
    assert stars(0.003, "#") == "##"


def test_edge_cases_still_render(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rows = [
        study_row("s1", "sham", **{"BV/TV": 30.0, "Tb.Th": 0.08, "DA": 0.4}),
        study_row("s2", "sham", **{"BV/TV": 28.0, "Tb.Th": np.nan, "DA": 0.4}),  # missing value
        study_row("s3", "sham", **{"BV/TV": 33.0, "Tb.Th": 0.07, "DA": 0.4}),
        study_row("o1", "OVX", **{"BV/TV": 10.0, "Tb.Th": 0.06, "DA": 0.4}),
        study_row("o2", "OVX", **{"BV/TV": 12.0, "Tb.Th": 0.065, "DA": 0.4}),
        study_row("e1", "Exos", **{"BV/TV": 20.0, "Tb.Th": 0.07, "DA": 0.4}),  # n = 1
        study_row("f1", "Exos", status="failed", error="cannot read slice 12"),
    ]
    pd.DataFrame(rows).to_csv(out / "morphometry.csv", index=False)
    paths = make_report(out, control="sham", model="OVX", excel=False)
    st = pd.read_csv(paths["statistics"], keep_default_na=False, na_values=[""])
    da = st[st.parameter == "DA"]
    assert len(da) == 1 and "constant" in da.note.iloc[0]
    anova = st[(st.parameter == "BV/TV") & (st.test == "one-way ANOVA")].iloc[0]
    assert "left out: Exos (n = 1)" in anova.note
    s = pd.read_csv(paths["group_summary"])
    th = s[(s.parameter == "Tb.Th") & (s.group == "sham")].iloc[0]
    assert (th.n, th.n_missing) == (2, 1)
    html = paths["html"].read_text(encoding="utf-8")
    assert "the parameter is constant" in html and "Exos (n = 1)" in html
    assert "cannot read slice 12" in html
    assert paths["figure:DA:png"].is_file()


def test_unknown_control_and_model_are_reported(tmp_path):
    out = write_study(tmp_path / "out", qc=False)
    paths = make_report(out, control="vehicle", model="ovx", excel=False, figures=False)
    st = pd.read_csv(paths["statistics"], keep_default_na=False, na_values=[""])
    assert "Dunnett" not in set(st.test)
    assert pd.read_csv(paths["model_effects"]).empty
    html = paths["html"].read_text(encoding="utf-8")
    assert "control group &#x27;vehicle&#x27; is not among the analysed groups" in html


def test_two_groups_nonparametric(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rows = [study_row(f"{g}{i}", g, **{"BV/TV": v}) for g, vals in
            {"sham": [30.0, 31.0, 29.0, 33.0], "OVX": [10.0, 11.0, 9.0, 14.0]}.items()
            for i, v in enumerate(vals)]
    pd.DataFrame(rows).to_csv(out / "morphometry.csv", index=False)
    paths = make_report(out, nonparametric=True, excel=False, figures=False)
    st = pd.read_csv(paths["statistics"], keep_default_na=False, na_values=[""])
    assert {"Student's t-test", "Welch's t-test", "Kruskal-Wallis", "Dunn (Holm)"} <= set(st.test)
    assert set(st[st.recommended].test) == {"Kruskal-Wallis", "Dunn (Holm)"}
    methods = paths["methods"].read_text(encoding="utf-8")
    assert "Kruskal-Wallis" in methods and "Dunn" in methods and "Student's t-test" in methods


def test_same_input_same_files(report):
    out, first = report
    snap = {k: p.read_bytes() for k, p in first.items() if p.suffix in (".csv", ".md", ".svg")}
    second = make_report(out, control="sham", model="OVX", excel=False)
    for k, data in snap.items():
        assert second[k].read_bytes() == data, k


def test_bad_input_gives_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="morphometry.csv: not found"):
        make_report(tmp_path)
    pd.DataFrame([study_row("a", "x", status="failed", error="boom"),
                  study_row("T1", "x", status="failed", error="T1: no growth plate found")]
                 ).to_csv(tmp_path / "morphometry.csv", index=False)
    # each failed scan named once: the batch's errors already start with the scan's name
    with pytest.raises(ConfigError, match=r"successfully \(a: boom; T1: no growth plate found\)$"):
        make_report(tmp_path, excel=False)
    with pytest.raises(ConfigError, match="control and model must be different"):
        make_report(tmp_path, control="OVX", model="OVX")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openpyxl" else real(name, *a))
    with pytest.raises(CtmorphError, match="needs the 'openpyxl' package"):
        make_report(tmp_path, excel=True)
    assert not (tmp_path / "report").exists()  # refused before writing anything


def test_density_threshold_calibration_and_weak_model_effect(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    vals = {"sham": [30.0, 26.0, 34.0], "OVX": [29.0, 25.0, 33.0], "Exos": [31.0, 27.0, 35.0]}
    rows = [study_row(f"{g}{i}", g, **{"BV/TV": v, "BMD": v / 100, "threshold": 85.0 + i,
                                  "threshold_density": 0.5,
                                  "threshold_method": "density 0.5 g/cm³ HA"})
            for g, vs in vals.items() for i, v in enumerate(vs)]
    pd.DataFrame(rows).to_csv(out / "morphometry.csv", index=False)
    (out / "sham0").mkdir()
    (out / "sham0" / "morphometry.json").write_text(json.dumps({"calibration": {
        "r_squared": 0.9991, "rods": [{"density_g_cm3": 0.25}, {"density_g_cm3": 0.75},
                                      {"density_g_cm3": 1.25}]}}))
    paths = make_report(out, model="OVX", excel=False, figures=False)
    text = paths["methods"].read_text(encoding="utf-8")
    assert "threshold of 85–87 (grey value; 0.5 g/cm³ HA)" in text
    assert "HA phantom rods of 0.25, 0.75, 1.25 g/cm³ (R² = 0.9991)" in text
    assert "BMD is the mean density of the VOI" in text
    me = pd.read_csv(paths["model_effects"], keep_default_na=False, na_values=[""])
    r = me[(me.parameter == "BV/TV") & (me.group == "Exos")].iloc[0]
    assert r.pct_loss_prevented == pytest.approx(200.0)  # (31 - 29) / (30 - 29)
    assert "not significant" in r.note and "not interpretable" in r.note


def write_sensitivity(out: Path) -> None:
    """sensitivity.csv as ``analyze --sensitivity 5`` writes it (see sensitivity_rows)."""
    sensitivity_rows(out).to_csv(out / "sensitivity.csv", index=False)


def sensitivity_rows(out: Path) -> pd.DataFrame:
    """The rows of sensitivity.csv from morphometry.csv, text cells as they are in the file.

    −5 %: every value × 1.1 (t and F are scale invariant: every conclusion holds);
    +5 %: Tb.Th of OVX equal to sham's (identical samples: sham vs OVX p = 1, a change).
    """
    main = pd.read_csv(out / "morphometry.csv")
    ok = main[main["status"] == "ok"]
    blocks = []
    for pct in (-5.0, 0.0, 5.0):
        b = ok.copy()
        b.insert(2, "threshold_change_pct", pct)
        b["threshold"] = 87.0 * (1 + pct / 100)
        if pct < 0:
            for p in ("BV/TV", "Tb.Th", "Tb.Sp"):
                b[p] = b[p] * 1.1
        if pct > 0:
            b.loc[b["group"] == "OVX", "Tb.Th"] = TBTH["sham"]
        blocks.append(b[["scan", "group", "threshold_change_pct", "status", "error",
                         "threshold", "BV/TV", "Tb.Th", "Tb.Sp"]])
    return pd.concat(blocks)


def test_threshold_sensitivity_section(tmp_path):
    out = write_study(tmp_path / "out", qc=False)
    write_sensitivity(out)
    paths = make_report(out, control="sham", model="OVX", excel=False, figures=False)
    t = pd.read_csv(paths["sensitivity"])
    assert set(t.parameter) == {"BV/TV", "Tb.Th", "Tb.Sp"}
    assert t[t.parameter == "BV/TV"].conclusions_hold.all()
    r = t[(t.parameter == "BV/TV") & (t.threshold_change_pct == -5) & (t.group == "sham")]
    assert r.pct_change_vs_main.iloc[0] == pytest.approx(10.0)
    assert r.threshold.iloc[0] == pytest.approx(87 * 0.95)
    plus = t[(t.parameter == "Tb.Th") & (t.threshold_change_pct == 5)]
    assert not plus.conclusions_hold.any()
    assert "sham vs OVX: p < 0.001 at the main threshold, 1.000 at +5 %" in plus.changes.iloc[0]
    html = paths["html"].read_text(encoding="utf-8")
    assert "<h2 id=\"sensitivity\">Threshold sensitivity</h2>" in html
    assert ("At ±5 % of the threshold (82.65 and 91.35 grey; main threshold 87 grey) the "
            "conclusions change for Tb.Th (sham vs OVX") in html
    assert EVIL_GROUP not in html and "OVX+Exos &lt;b&gt;&quot;&amp;$" in html
    methods = paths["methods"].read_text(encoding="utf-8")
    assert "Threshold sensitivity: every scan was analysed again" in methods
    assert "the conclusions change for Tb.Th (sham vs OVX" in methods


def test_stale_sensitivity_table_is_left_out(tmp_path):
    out = write_study(tmp_path / "out", qc=False)
    write_sensitivity(out)
    make_report(out, control="sham", excel=False, figures=False)
    assert (out / "report" / "sensitivity.csv").is_file()
    main = pd.read_csv(out / "morphometry.csv")
    main.loc[0, "BV/TV"] += 1.0  # a later analysis without --sensitivity
    main.to_csv(out / "morphometry.csv", index=False)
    paths = make_report(out, control="sham", excel=False, figures=False)
    assert "sensitivity" not in paths and not (out / "report" / "sensitivity.csv").exists()
    html = paths["html"].read_text(encoding="utf-8")
    assert "sensitivity.csv: left out, its BV/TV values at the main threshold differ" in html
    assert "id=\"sensitivity\"" not in html


def test_unreadable_sensitivity_table_is_one_clear_error(tmp_path):
    out = write_study(tmp_path / "out", qc=False)
    (out / "sensitivity.csv").write_text("scan,group,status\nx,sham,ok\n")
    with pytest.raises(ConfigError, match=r"sensitivity\.csv: column 'threshold_change_pct' "
                                          "is missing"):
        make_report(out, control="sham", excel=False, figures=False)
