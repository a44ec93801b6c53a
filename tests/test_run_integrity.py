"""Nothing silently wrong between runs (issue 14): the completion marker is written last,
reused rows carry the current run's facts, one name per scan, identical runs give identical
files."""

from __future__ import annotations

import json
import os
import shutil
import unicodedata

import pandas as pd
import pytest

from ctmorph.batch import run_analysis
from ctmorph.config import AnalysisConfig
from ctmorph.errors import ConfigError, OutputError
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, random_trabecular

CFG = AnalysisConfig(roi="full", smooth_sigma_vox=0.8)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    for i, bvtv in enumerate([0.15, 0.25, 0.35]):
        mask = random_trabecular((32, 40, 40), bv_tv=bvtv, scale=2.0, seed=i)
        write_nrecon_folder(root / f"s{i}", grey_from_mask(mask, seed=i), voxel_size_um=10.0)
    return root


def _copy(scans, dst, names=("s0", "s1", "s2")):
    for n in names:
        shutil.copytree(scans / n, dst / n)
    return dst


# ---------------------------------------------------------------------------------------------
# item 3: the completion marker is the last thing written


def test_a_scan_interrupted_before_its_qc_pictures_is_not_finished(scans, tmp_path,
                                                                   monkeypatch):
    import ctmorph.qc

    out = tmp_path / "out"

    def full_disk(qc, folder, title):
        raise OutputError(f"{folder}/longitudinal.png: cannot write: No space left on device")

    monkeypatch.setattr(ctmorph.qc, "write_qc_pictures", full_disk)
    first = run_analysis([scans], out, CFG, group="g")
    assert [r["status"] for r in first.rows] == ["failed"] * 3
    assert first.rows[0]["error"].endswith("longitudinal.png: cannot write: No space left on "
                                           "device")
    assert not list(out.glob("s*/morphometry.json"))  # no marker: not finished
    monkeypatch.undo()
    again = run_analysis([scans], out, CFG, group="g")
    assert again.reused == 0 and again.n_ok == 3
    for n in ("s0", "s1", "s2"):
        info = json.loads((out / n / "morphometry.json").read_text())
        assert info["qc"] is True
        assert info["outputs"] == ["qc/axial.png", "qc/figure.json", "qc/histogram.png",
                                   "qc/longitudinal.png", "qc/render_voi.png",
                                   "qc/section_voi.png", "qc/tile.png"]
    # the marker is newer than everything the scan wrote
    marker = (out / "s0" / "morphometry.json").stat().st_mtime_ns
    assert all((out / "s0" / p).stat().st_mtime_ns <= marker for p in info["outputs"])


def test_reuse_checks_that_everything_the_scan_should_have_is_there(scans, tmp_path):
    out = tmp_path / "out"
    run_analysis([scans], out, CFG, group="g", write_qc=False)
    # a run that wants QC pictures does not reuse scans analysed without them
    assert run_analysis([scans], out, CFG, group="g").reused == 0
    assert run_analysis([scans], out, CFG, group="g").reused == 3
    (out / "s1" / "qc" / "axial.png").unlink()  # a lost output
    again = run_analysis([scans], out, CFG, group="g")
    assert again.reused == 2 and (out / "s1" / "qc" / "axial.png").is_file()
    # a run without QC reuses scans that have them
    assert run_analysis([scans], out, CFG, group="g", write_qc=False).reused == 3


# ---------------------------------------------------------------------------------------------
# item 8: reused rows carry the current run's facts; content changes with --verify-inputs


def test_reused_rows_carry_the_current_runs_facts(scans, tmp_path):
    root = tmp_path / "scans"
    for n in ("a", "b", "c"):  # three identical scans: any subset pools the same threshold
        shutil.copytree(scans / "s1", root / n)
    out = tmp_path / "out"
    full = run_analysis([root], out, CFG, groups={"a": "sham", "b": "OVX", "c": "OVX"},
                        write_qc=False)
    assert full.threshold_method == "otsu (pooled over 3 scans)"
    sub = run_analysis([root / "a", root / "b"], out, CFG, groups={"a": "OVX", "b": "OVX"},
                       write_qc=False)
    assert sub.reused == 2 and sub.threshold == full.threshold
    assert {r["threshold_method"] for r in sub.rows} == {"otsu (pooled over 2 scans)"}
    assert [r["group"] for r in sub.rows] == ["OVX", "OVX"]
    csv = pd.read_csv(out / "morphometry.csv")
    assert list(csv.threshold_method) == ["otsu (pooled over 2 scans)"] * 2
    assert list(csv.group) == ["OVX", "OVX"]
    info = json.loads((out / "a" / "morphometry.json").read_text())
    assert info["row"]["group"] == "OVX"  # the scan's JSON was brought up to date too
    assert info["row"]["threshold_method"] == "otsu (pooled over 2 scans)"
    run = json.loads((out / "run.json").read_text())
    assert run["threshold_scans"] == ["a", "b"]


def test_changed_content_with_same_size_and_mtime_needs_verify_inputs(scans, tmp_path):
    root = _copy(scans, tmp_path / "scans", ["s0"])
    out = tmp_path / "out"
    cfg = CFG.replace(threshold=128.0)
    first = run_analysis([root], out, cfg, group="g", write_qc=False)
    f = sorted((root / "s0").glob("*.bmp"))[10]
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-200:] = bytes(255 - v for v in data[-200:])  # same size, other pixels
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    # by default "unchanged" means same names, sizes and modification times: reused
    assert run_analysis([root], out, cfg, group="g", write_qc=False).reused == 1
    checked = run_analysis([root], out, cfg, group="g", write_qc=False, verify_inputs=True)
    assert checked.reused == 0
    assert checked.rows[0]["input_hash"] != first.rows[0]["input_hash"]
    assert checked.rows[0]["BV/TV"] != first.rows[0]["BV/TV"]
    # and once recomputed, the verified hash matches again
    assert run_analysis([root], out, cfg, group="g", write_qc=False,
                        verify_inputs=True).reused == 1


# ---------------------------------------------------------------------------------------------
# item 5: one name per scan, the same everywhere


def test_a_scan_reached_through_a_link_is_named_after_the_link(scans, tmp_path):
    real = _copy(scans, tmp_path / "archive", ["s0"]) / "s0"
    links = tmp_path / "study"
    links.mkdir()
    (links / "T1").symlink_to(real, target_is_directory=True)
    out = tmp_path / "out"
    s = run_analysis([links], out, CFG.replace(threshold=128.0), groups={"T1": "sham"})
    assert [r["scan"] for r in s.rows] == ["T1"] and s.rows[0]["status"] == "ok"
    assert (out / "T1" / "morphometry.json").is_file() and not (out / "s0").exists()
    assert json.loads((out / "T1" / "morphometry.json").read_text())["row"]["scan"] == "T1"
    assert list(pd.read_csv(out / "morphometry.csv").scan) == ["T1"]
    # the link and its target in one run are one animal twice: refused before any work
    with pytest.raises(ConfigError, match=r"'s0' and 'T1' are the same scan folder"):
        run_analysis([links / "T1", real], tmp_path / "o2", CFG, group="g")
    assert not (tmp_path / "o2").exists()


def test_analyze_dot_inside_a_scan_folder(scans, tmp_path, monkeypatch):
    root = _copy(scans, tmp_path / "scans", ["s2"])
    monkeypatch.chdir(root / "s2")
    out = tmp_path / "out"
    s = run_analysis(["."], out, CFG.replace(threshold=128.0), group="g")
    assert s.rows[0]["scan"] == "s2" and s.rows[0]["status"] == "ok"
    assert (out / "s2" / "morphometry.json").is_file()
    assert not (out / "morphometry.json").exists() and not (out / "qc").exists()


def test_composed_and_decomposed_names_are_one_name(scans, tmp_path):
    nfd = unicodedata.normalize("NFD", "Fémur1")
    root = tmp_path / "scans"
    shutil.copytree(scans / "s0", root / nfd)
    s = run_analysis([root], tmp_path / "out", CFG.replace(threshold=128.0),
                     groups={unicodedata.normalize("NFC", "Fémur1"): "sham"}, write_qc=False)
    assert s.rows[0]["status"] == "ok" and s.rows[0]["group"] == "sham"
    assert s.rows[0]["scan"] == unicodedata.normalize("NFC", "Fémur1")


def test_groups_rows_naming_scans_not_in_the_run_warn_or_fail(scans, tmp_path, caplog):
    cfg = CFG.replace(threshold=128.0)
    groups = {"s0": "sham", "s1": "OVX", "s2": "OVX", "s3": "OVX"}  # s3: a typo or a loss
    s = run_analysis([scans], tmp_path / "out", cfg, groups=groups, write_qc=False)
    assert s.n_ok == 3
    assert "1 row(s) name scans that are not in this run: 's3'" in caplog.text
    with pytest.raises(ConfigError, match=r"not in this run: 's3' \(--strict\)"):
        run_analysis([scans], tmp_path / "o2", cfg, groups=groups, strict=True)


# ---------------------------------------------------------------------------------------------
# item 10: same input, same bytes


def test_identical_runs_give_identical_files(scans, tmp_path):
    from ctmorph.report import make_report

    groups = {"s0": "sham", "s1": "sham", "s2": "OVX"}
    a = run_analysis([scans], tmp_path / "a", CFG, groups=groups)
    b = run_analysis([scans], tmp_path / "b", CFG, groups=groups, jobs=2)
    assert a.n_ok == b.n_ok == 3
    for out in ("a", "b"):
        make_report(tmp_path / out, control="sham")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    names = set(map(str, files))
    assert {"morphometry.csv", "report/group_summary.csv", "report/statistics.csv",
            "report/report.xlsx"} <= names and len(files) > 40
    # wall-clock seconds, thread counts: the run's facts; the page shows OUT's own path
    volatile = {"run.json", "report/report.html"}
    for rel in files:
        if str(rel) in volatile:
            continue
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert "seconds" not in pd.read_csv(tmp_path / "a" / "morphometry.csv").columns
    assert set(json.loads((tmp_path / "a" / "run.json").read_text())["scan_seconds"]) == \
        {"s0", "s1", "s2"}


# ---------------------------------------------------------------------------------------------
# item 11: each warning once (the scan's header is read once per run, not again to measure)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_each_warning_is_printed_once(scans, tmp_path, jobs):
    from click.testing import CliRunner

    from ctmorph.cli import cli

    res = CliRunner().invoke(cli, ["analyze", str(scans), "--group", "g", "-o",
                                   str(tmp_path / "out"), "--roi", "full", "--no-qc",
                                   "--voxel-size", "12", "--jobs", jobs])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "overrides the log's" in ln]
    assert len(lines) == 3 and len(set(lines)) == 3, lines  # one per scan
