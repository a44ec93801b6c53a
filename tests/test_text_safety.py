"""Formula and markup injection: hostile scan and group names in every report output.

``ctmorph.textsafe`` by itself (exact inverse, no trigger left, no live Markdown), then a study
whose names are formulas, HTML and Markdown links, written the way ``analyze`` writes its CSVs
(text cells through ``csv_cell``), through ``make_report``.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from test_report_output import SETTINGS, sensitivity_rows, study_row

from ctmorph.report import make_report
from ctmorph.report.data import load_results, uncell_text_cells
from ctmorph.textsafe import CSV_TRIGGERS, csv_cell, csv_uncell, markdown_text

TRIGGERS = ['=HYPERLINK("http://evil","x")', "+1", "-2+3", "@SUM(A1)", "\tTab", "\rCR"]
CONTROL = TRIGGERS[0]
# every trigger, a link, HTML and a leading quote; few groups keep the statistics fast
HOSTILE_GROUPS = [CONTROL, "+1", "-2+3", "@SUM(A1) [click](http://evil)",
                  "\t\r<script>alert(1)</script>", "'=quoted"]
GROUPS = {CONTROL: (30.0, 5), "OVX": (10.0, 5), "+1": (14.0, 3), "-2+3": (16.0, 3),
          HOSTILE_GROUPS[3]: (18.0, 3), HOSTILE_GROUPS[4]: (20.0, 3), "'=quoted": (22.0, 3)}
HOSTILE_SCAN = '=cmd|" /C calc"!A0'
LINK_SCAN = "[scan](http://evil)"
HOSTILE_SCANNER = "SkyScan [docs](http://evil) <img src=x onerror=alert(3)> *1172*"
PLAIN = ["sham", "OVX", "OVX+Exos", "it's", "'quoted", "''", "'", "", "0.5", "a=b", "F01_rec"]
SVG_NS = "{http://www.w3.org/2000/svg}"

# a tab or CR in a tick label has no glyph: matplotlib says so, and draws the rest
pytestmark = pytest.mark.filterwarnings("ignore:Glyph (9|13) .* missing from font")


# --- csv_cell / csv_uncell ---------------------------------------------------------------

@pytest.mark.parametrize("text", [*TRIGGERS, "-0.35", "=", "\t", "\r\n"])
def test_csv_cell_quotes_every_formula_trigger(text):
    assert csv_cell(text) == "'" + text
    assert csv_uncell(csv_cell(text)) == text


@pytest.mark.parametrize("text", PLAIN + ["<script>", "[x](y)", " =1"])
def test_csv_cell_leaves_other_text_alone(text):
    assert csv_cell(text) == text
    assert csv_uncell(text) == text  # an old file without escapes reads as before


def test_a_leading_quote_before_a_trigger_gets_one_more():
    assert csv_cell("'=x") == "''=x" and csv_uncell("''=x") == "'=x"
    assert csv_cell("'''-1") == "''''-1" and csv_uncell("''''-1") == "'''-1"
    assert csv_uncell("'=x") == "=x"


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "'=+-@\t\r\n ,\"a0.é|["
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(n)]


def _every_text(alphabet: str, max_len: int) -> list[str]:
    return ["".join(t) for n in range(max_len + 1) for t in itertools.product(alphabet, repeat=n)]


def test_csv_uncell_inverts_csv_cell_exactly():
    texts = _random_texts(20000, seed=14) + _every_text("'=a", 5)
    for s in texts:
        cell = csv_cell(s)
        assert csv_uncell(cell) == s, repr(s)
        assert cell[:1] not in CSV_TRIGGERS, repr(s)  # never a live formula
    cells = [csv_cell(s) for s in texts]
    assert len(set(cells)) == len(set(texts))  # injective: no two names share a cell


# --- markdown_text -------------------------------------------------------------------------

_MD_SPECIAL = set("\\`*_{}[]()!|~")


def _unescaped(md: str, chars: str) -> list[int]:
    """Positions of characters of ``chars`` not preceded by an odd number of backslashes."""
    out = []
    for i, c in enumerate(md):
        if c in chars:
            k = i
            while k > 0 and md[k - 1] == "\\":
                k -= 1
            if (i - k) % 2 == 0:
                out.append(i)
    return out


def _as_rendered(md: str) -> str:
    """What a CommonMark renderer shows for text without syntax: escapes and entities undone."""
    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", md))


def test_markdown_text_examples():
    assert markdown_text("<script>alert(1)</script>") == \
        "&lt;script&gt;alert\\(1\\)&lt;/script&gt;"
    assert markdown_text("[click](http://evil)") == "\\[click\\]\\(http://evil\\)"
    assert markdown_text("![i](x.png)") == "\\!\\[i\\]\\(x\\.png\\)"
    assert markdown_text("a|b\nc\r\nd") == "a\\|b c d"
    assert markdown_text("# head") == "\\# head" and markdown_text("a # b") == "a # b"
    assert markdown_text("-2+3") == "\\-2+3" and markdown_text("+1") == "\\+1"
    assert markdown_text("1. item") == "1\\. item"
    assert markdown_text("www.evil.com") == "www\\.evil\\.com"
    assert markdown_text("*x* _y_ `z` ~~s~~") == "\\*x\\* \\_y\\_ \\`z\\` \\~\\~s\\~\\~"
    assert markdown_text("R&D > 1") == "R&amp;D &gt; 1"
    # ordinary names and versions stay readable
    for plain in ("sham", "OVX+Exos", "Al 0.5mm", "NRecon 1.7.4.2", "F01 rec"):
        assert markdown_text(plain) == plain


def test_markdown_text_renders_as_the_text_and_forms_no_syntax():
    for s in [*TRIGGERS, *HOSTILE_GROUPS, HOSTILE_SCANNER, *_random_texts(5000, seed=9)]:
        md = markdown_text(s)
        assert "\n" not in md and "\r" not in md
        assert not _unescaped(md, "".join(_MD_SPECIAL - {"\\"})), (s, md)
        assert "<" not in md and ">" not in md
        assert _as_rendered(md) == re.sub(r"\r\n|\r|\n", " ", s), (s, md)
        assert md.lstrip()[:1] not in ("#", "+", "-", ">")


# --- a study with hostile names through make_report -----------------------------------------

def _values(base: float, n: int) -> list[float]:
    return [base + d for d in (0.0, 2.0, -2.0, 1.0, -1.0)[:n]]


def _write_hostile_study(out: Path) -> Path:
    """morphometry.csv with text cells escaped as ``analyze`` writes them, json and sensitivity."""
    rows = []
    for g, (bv, n) in GROUPS.items():
        for i, v in enumerate(_values(bv, n)):
            scan = HOSTILE_SCAN if (g == CONTROL and i == 0) else \
                LINK_SCAN if (g == "OVX" and i == 0) else f"s{len(rows)}"
            rows.append(study_row(scan, g, **{"BV/TV": v, "Tb.Th": 0.05 + v / 1000,
                                              "Tb.Sp": 0.3 - v / 200}))
    rows.append(study_row("-failed", "@SUM(A1)", status="failed", error="=1+1 <i>x</i>"))
    rows = [{k: csv_cell(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]
    out.mkdir(parents=True)
    # "\r\n" record ends: Python's csv writer then quotes the fields holding a CR
    pd.DataFrame(rows).to_csv(out / "morphometry.csv", index=False, lineterminator="\r\n")
    (out / "run.json").write_text(json.dumps({"versions": {"ctmorph": "0.1.0"}}))
    (out / "s2").mkdir()
    (out / "s2" / "morphometry.json").write_text(json.dumps(
        {"scan": {"settings": {**SETTINGS, "scanner": HOSTILE_SCANNER}}}))
    sens = sensitivity_rows(out)  # the escaped names, as analyze --sensitivity writes them
    bad = (sens["scan"] == LINK_SCAN) & (sens["threshold_change_pct"] == 5.0)
    sens.loc[bad, ["status", "error"]] = ["failed", csv_cell("-no bone <b>[x](http://e)</b>")]
    sens.to_csv(out / "sensitivity.csv", index=False, lineterminator="\r\n")
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    out = _write_hostile_study(tmp_path_factory.mktemp("hostile") / "out")
    paths = make_report(out, control=CONTROL, model="OVX")
    return out, paths


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_load_results_unescapes_new_files_and_reads_old_ones(hostile, tmp_path):
    out, _ = hostile
    raw = (out / "morphometry.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in raw and "\n'-failed," in raw  # as analyze writes it
    df = load_results(out)  # csv_uncell on every text cell
    assert set(HOSTILE_GROUPS) <= set(df["group"])
    assert {HOSTILE_SCAN, LINK_SCAN, "-failed"} <= set(df["scan"])
    assert df.loc[df["scan"] == "-failed", "error"].item() == "=1+1 <i>x</i>"
    # a file written before the escape: every name as it is
    rows = [study_row(g, g, **{"BV/TV": 1.0}) for g in [*TRIGGERS, *HOSTILE_GROUPS[3:5]]]
    pd.DataFrame(rows).to_csv(tmp_path / "morphometry.csv", index=False, lineterminator="\r\n")
    df = load_results(tmp_path)
    assert list(df["group"]) == list(df["scan"]) == [r["group"] for r in rows]


def test_no_csv_cell_is_a_formula_and_numbers_stay_numbers(hostile):
    out, paths = hostile
    files = sorted((out / "report").glob("*.csv"))
    assert [p.name for p in files] == ["group_summary.csv", "model_effects.csv",
                                       "sensitivity.csv", "statistics.csv"]
    negatives = 0
    for path in files:
        for row in _csv_rows(path):
            for cell in row:
                if _is_number(cell):
                    negatives += float(cell) < 0
                    continue
                assert cell[:1] not in CSV_TRIGGERS, (path.name, cell)
    assert negatives > 50  # mean differences, % change: plain numbers, not quoted text
    st = uncell_text_cells(pd.read_csv(paths["statistics"], keep_default_na=False,
                                       na_values=[""]))
    tukey = st[(st.parameter == "BV/TV") & (st.test == "Tukey HSD") & (st.group1 == CONTROL)
               & (st.group2 == "OVX")]
    assert tukey.mean_diff.item() == pytest.approx(-20.0)  # read back as a float


def test_names_round_trip_through_the_csvs(hostile):
    out, paths = hostile
    expected = set(GROUPS)
    summary = _csv_rows(paths["group_summary"])
    col = summary[0].index("group")
    assert {csv_uncell(r[col]) for r in summary[1:]} == expected
    assert "'" + HOSTILE_GROUPS[0] in {r[col] for r in summary[1:]}
    assert "''=quoted" in {r[col] for r in summary[1:]}  # one more quote, undone on reading
    st = _csv_rows(paths["statistics"])
    g1, g2 = st[0].index("group1"), st[0].index("group2")
    assert {csv_uncell(r[g]) for r in st[1:] for g in (g1, g2)} - {""} == expected
    # inside a text the name is the original, not its escaped form from morphometry.csv
    notes = {r[st[0].index("note")] for r in st[1:] if r[st[0].index("test")] == "Dunnett"}
    assert notes == {f"many-to-one against {CONTROL}"}
    sens = _csv_rows(paths["sensitivity"])
    assert {csv_uncell(r[sens[0].index("group")]) for r in sens[1:]} == expected
    pairs = {r[sens[0].index("significant_pairs")] for r in sens[1:]}
    assert f"OVX < {CONTROL}" in "; ".join(pairs)


def test_workbook_holds_the_original_names_as_text(hostile):
    openpyxl = pytest.importorskip("openpyxl")
    _, paths = hostile
    wb = openpyxl.load_workbook(paths["xlsx"])
    ws = wb["group_summary"]
    header = [c.value for c in ws[1]]
    groups = [r[header.index("group")] for r in ws.iter_rows(min_row=2)]
    # XML reads a bare CR as LF (line-end normalisation); every other character is kept
    assert {c.value for c in groups} == {g.replace("\r", "\n") for g in GROUPS}
    assert all(c.data_type == "s" for c in groups)
    means = [r[header.index("mean")] for r in ws.iter_rows(min_row=2)]
    assert all(c.data_type == "n" and isinstance(c.value, int | float) for c in means)
    assert {c.value for c in means} >= {30, 10, 14}  # the BV/TV means, as numbers
    scans = {c.value for c in wb["scans"]["A"]}
    assert {HOSTILE_SCAN, LINK_SCAN, "-failed"} <= scans


def test_markdown_outputs_carry_no_live_markup(hostile):
    out, _ = hostile
    files = sorted((out / "report").glob("*.md"))
    assert len(files) == 5
    for path in files:
        md = path.read_text(encoding="utf-8")
        assert not re.search(r"<\s*(script|img|i|b)\b", md, re.IGNORECASE), path.name
        assert not re.search(r"(?<!\\)\]\(", md), path.name  # no [text](url)
        for raw in ("[click]", "[scan]", "[docs]", "[x]", "*1172*"):
            assert raw not in md, (path.name, raw)
        rows = [line for line in md.splitlines() if line.startswith("|")]
        for line in rows:  # every table row has exactly the header's columns
            assert len(_unescaped(line, "|")) == len(_unescaped(rows[0], "|")), line
    summary = (out / "report" / "group_summary.md").read_text(encoding="utf-8")
    assert '| BV/TV | =HYPERLINK\\("http://evil","x"\\) | 5 | 30 |' in summary
    assert "| BV/TV | @SUM\\(A1\\) \\[click\\]\\(http://evil\\) | 3 |" in summary
    assert "| BV/TV | \t &lt;script&gt;alert\\(1\\)&lt;/script&gt; | 3 |" in summary
    assert "| BV/TV | \\-2+3 | 3 |" in summary and "| BV/TV | OVX | 5 | 10 |" in summary


def test_methods_md_escapes_names_and_log_values(hostile):
    out, paths = hostile
    text = paths["methods"].read_text(encoding="utf-8")
    assert f"with a {markdown_text(HOSTILE_SCANNER)} micro-CT scanner" in text
    assert "Al 0.5mm filter" in text  # ordinary log values stay as they are
    for g in HOSTILE_GROUPS[1:]:
        assert f"{markdown_text(g)} n = 3" in text, g
    control = markdown_text(CONTROL)
    assert f"Animals analysed per group: {control} n = 5, OVX n = 5," in text
    assert f"compared with the {control} group by Dunnett's test" in text
    assert f"100 × (treated − OVX) / ({control} − OVX)" in text
    # the sensitivity paragraph names the scan that failed at +5 %, and why
    assert (f"{markdown_text(LINK_SCAN)} left out of the comparison: failed at +5 % "
            f"({markdown_text('-no bone <b>[x](http://e)</b>')})") in text
    # the HTML gets the same text, escaped as a whole
    page = paths["html"].read_text(encoding="utf-8")
    assert html.escape(f"with a {HOSTILE_SCANNER} micro-CT scanner") in page
    assert html.escape(f"{LINK_SCAN} left out of the comparison") in page
    assert "\\[" not in page  # no Markdown escapes leak into the HTML


def test_html_and_figures_show_the_original_names(hostile):
    out, paths = hostile
    page = paths["html"].read_bytes().decode("utf-8")  # no newline translation: CR kept
    for g in GROUPS:
        assert f"<td>{html.escape(g)}</td>" in page, g
    assert html.escape("'" + HOSTILE_GROUPS[0]) not in page
    svg = ET.parse(paths["figure:BV/TV:svg"])
    labels = {"".join(t.itertext()) for t in svg.iter(f"{SVG_NS}text")}
    assert {'=HYPERLINK("http://evil","x")', "-2+3", "'=quoted", "+1"} <= labels


def test_hostile_names_with_numbers_like_text_keep_their_values(hostile):
    out, paths = hostile
    s = uncell_text_cells(pd.read_csv(paths["group_summary"], keep_default_na=False,
                                      na_values=[""]))
    r = s[(s.parameter == "BV/TV") & (s.group == "+1")].iloc[0]  # "+1" is a name, not 1
    assert (r.n, r["mean"]) == (3, pytest.approx(14.0))
    r = s[(s.parameter == "BV/TV") & (s.group == "'=quoted")].iloc[0]
    assert (r.n, r["mean"]) == (3, pytest.approx(22.0))
