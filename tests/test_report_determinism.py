"""Same analysis folder, same report bytes: at another time, in another process.

The study of ``test_report_output`` (three groups, a failed scan, QC pictures, scan JSON and a
threshold-sensitivity table) reported three times: twice in this process, the second time a
year and a second later, and once in a fresh interpreter with another hash seed. Every file of
``OUT/report/`` must be identical byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from test_report_output import write_sensitivity, write_study

from ctmorph.report import make_report

ARGS = {"control": "sham", "model": "OVX"}


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for p in sorted((out / "report").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("openpyxl")
    out = write_study(tmp_path_factory.mktemp("determinism") / "out")
    write_sensitivity(out)
    paths = make_report(out, **ARGS)
    first = _snapshot(out)
    time.sleep(1.1)  # another second for openpyxl's clock
    real_time = time.time
    with pytest.MonkeyPatch.context() as mp:  # and a year later for the ZIP member dates
        mp.setattr(time, "time", lambda: real_time() + 366 * 86400)
        make_report(out, **ARGS)
    return out, paths, first, _snapshot(out)


def test_a_later_run_writes_the_same_bytes(runs):
    out, paths, first, second = runs
    # every output is compared, and nothing else is in report/
    assert set(first) == {str(p.relative_to(out)) for p in paths.values()}
    for name in ("report/report.xlsx", "report/report.html", "report/methods.md",
                 "report/sensitivity.csv", "report/figure_main.png", "report/figure_main.svg",
                 "report/figures/BV_TV.png", "report/figures/BV_TV.svg"):
        assert name in first, name
    assert set(second) == set(first)
    assert [name for name in first if first[name] != second[name]] == []


def test_the_workbook_carries_no_time_of_writing(runs):
    _, paths, first, _ = runs
    with zipfile.ZipFile(paths["xlsx"]) as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = z.read("docProps/core.xml").decode("utf-8")
        assert z.testzip() is None
    assert "<dcterms:created xsi:type=\"dcterms:W3CDTF\">1980-01-01T00:00:00Z<" in core
    assert "<dcterms:modified xsi:type=\"dcterms:W3CDTF\">1980-01-01T00:00:00Z<" in core
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.load_workbook(paths["xlsx"])  # still a valid workbook
    assert wb["group_summary"].cell(row=2, column=4).value == pytest.approx(30.0)


def test_another_process_writes_the_same_bytes(runs):
    out, _, first, _ = runs
    code = ("import sys; from ctmorph.report import make_report; "
            f"make_report(sys.argv[1], **{ARGS!r})")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env,
                   capture_output=True, timeout=300)
    third = _snapshot(out)
    assert set(third) == set(first)
    assert [name for name in first if first[name] != third[name]] == []
