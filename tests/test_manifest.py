"""Study manifest (scan, group, per-scan overrides) and ``analyze --dry-run``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from ctmorph.batch import check_study
from ctmorph.cli import cli
from ctmorph.config import AnalysisConfig
from ctmorph.errors import ConfigError, ScanError
from ctmorph.io import read_scan
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.manifest import OVERRIDABLE, read_manifest


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# parsing


def test_relative_absolute_paths_comments_blank_lines_and_overrides(tmp_path):
    (tmp_path / "study").mkdir()
    absolute = tmp_path / "elsewhere" / "F03"
    m = _write(tmp_path / "study" / "m.csv",
               "# femur study\n\n"
               "Scan, Group ,ROI-Offset-mm,distal_end,voxel_size_um\n"
               "scans/F01,sham,,,\n"
               "# F02 rescanned\n"
               "../F02/,OVX,1.25,FIRST,\n"
               "\n"
               f"{absolute},OVX,,,9.5\n")
    man = read_manifest(m)
    assert [e.name for e in man.entries] == ["F01", "F02", "F03"]
    # relative to the manifest's folder, not to the working directory
    assert man.entries[0].folder == tmp_path / "study" / "scans" / "F01"
    assert man.entries[1].folder == tmp_path / "F02"
    assert man.entries[2].folder == absolute
    assert [e.line for e in man.entries] == [4, 6, 8]  # physical lines, comments counted
    assert [e.group for e in man.entries] == ["sham", "OVX", "OVX"]
    # empty cells are the study's settings; given ones are typed
    assert man.entries[0].overrides == {}
    assert man.entries[1].overrides == {"roi_offset_mm": 1.25, "distal_end": "first"}
    assert man.entries[2].overrides == {"voxel_size_um": 9.5}
    base = AnalysisConfig(roi_height_mm=3.0)
    cfg = man.entries[1].config(base)
    assert (cfg.roi_offset_mm, cfg.distal_end, cfg.roi_height_mm) == (1.25, "first", 3.0)
    assert man.entries[0].config(base) == base


def test_every_listed_override_column_is_accepted(tmp_path):
    values = {"roi_offset_mm": "0.5", "roi_height_mm": "1.5", "distal_end": "last",
              "voxel_size_um": "12", "cortical_offset_mm": "4", "cortical_height_mm": "0.5",
              "ref_slice": "120", "voi_first_slice": "", "voi_last_slice": ""}
    assert set(values) == set(OVERRIDABLE)
    # a reference or a VOI by hand, not both: the VOI on a second row
    m = _write(tmp_path / "m.csv", "scan,group," + ",".join(values) + "\n"
               "a,sham," + ",".join(values.values()) + "\n"
               "b,sham,,,,,,,,140,360\n")
    a, b = (e.config(AnalysisConfig()) for e in read_manifest(m).entries)
    for k, v in values.items():
        if v:
            expected = v if k == "distal_end" else int(v) if k.endswith("slice") else float(v)
            assert getattr(a, k) == expected, k
    assert (a.voi_first_slice, b.ref_slice, b.voi_first_slice, b.voi_last_slice) == \
        (None, None, 140, 360)


@pytest.mark.parametrize("text, pattern", [
    ("", r"m\.csv: the manifest is empty"),
    ("# only a comment\n", r"m\.csv: the manifest is empty"),
    ("scan,group\n", r"m\.csv: the manifest lists no scan"),
    ("folder,group\na,b\n", r"m\.csv: line 1: the manifest needs the columns 'scan,group'"),
    ("scan,group,threshold\na,b,90\n",
     r"m\.csv: line 1, column 3: 'threshold' is a study-wide setting"),
    ("scan,group,smooth_sigma_vox\na,b,1\n", r"line 1, column 3: 'smooth_sigma_vox' is a study"),
    ("scan,group,calibration\na,b,c.json\n", r"line 1, column 3: 'calibration' is a study-wide"),
    ("scan,group,colour\na,b,red\n", r"m\.csv: line 1, column 3: unknown column 'colour'"),
    ("scan,group,group\na,b,c\n", r"line 1, column 3: column 'group' appears twice"),
    ("scan,,group\na,,b\n", r"line 1, column 2: empty column name"),
    ("scan,group\na,sham,extra\n", r"m\.csv: line 2: 3 cells but the header on line 1 has 2"),
    ("scan,group\n\n,sham\n", r"m\.csv: line 3, column 'scan': empty scan folder"),
    ("scan,group\na,\n", r"m\.csv: line 2, column 'group': empty group for scan 'a'"),
    ("scan,group\nx/a,sham\n# c\ny/a,OVX\n",
     r"m\.csv: line 4, column 'scan': scan name 'a' is already on line 2"),
    ("scan,group,roi_offset_mm\na,b,one\n",
     r"m\.csv: line 2, column 'roi_offset_mm': expected a number, got 'one'"),
    ("scan,group,roi_height_mm\na,b,inf\n", r"line 2, column 'roi_height_mm': expected a finite"),
    ("scan,group,roi_height_mm\na,b,0\n",
     r"line 2, column 'roi_height_mm': roi_height_mm must be > 0 mm"),
    ("scan,group,voxel_size_um\na,b,-9\n", r"line 2, column 'voxel_size_um': voxel size must be"),
    ("scan,group,distal_end\na,b,top\n",
     r"line 2, column 'distal_end': expected one of auto, first, last, got 'top'"),
    ('scan,group\n"a,b\n',
     r"m\.csv: line 2, column 1: the quoted field starting here is never closed"),
])
def test_manifest_errors_name_file_line_and_column(tmp_path, text, pattern):
    m = _write(tmp_path / "m.csv", text)
    with pytest.raises(ConfigError, match=pattern):
        read_manifest(m)


def test_overrides_are_validated_against_the_study_settings(tmp_path):
    m = _write(tmp_path / "m.csv", "scan,group,cortical_offset_mm\na,sham,\nb,OVX,4\n")
    read_manifest(m)  # fine with the default auto ROI
    with pytest.raises(ConfigError, match=r"m\.csv: line 3, column 'cortical_offset_mm': "
                                          r".*needs roi=auto"):
        read_manifest(m, AnalysisConfig(roi="full"))


def test_unreadable_manifest(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.csv: cannot read the manifest"):
        read_manifest(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("scan,group\nf\xe9mur,sham\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.csv: not UTF-8 text \(byte 0xe9 at offset "
                                          r"12\); save it as CSV UTF-8$"):
        read_manifest(bad)


def test_names_and_groups_compare_in_nfc(tmp_path):
    import unicodedata

    nfc, nfd = (unicodedata.normalize(form, "Fémur_03") for form in ("NFC", "NFD"))
    m = _write(tmp_path / "m.csv", f"scan,group\nx/{nfd},OVX+Ex\u006f\u0308s\n")
    (entry,) = read_manifest(m).entries
    assert entry.name == nfc and entry.group == "OVX+Ex\u00f6s"
    assert entry.folder == tmp_path / "x" / nfd  # the folder itself as written
    m = _write(tmp_path / "m2.csv", f"scan,group\nx/{nfc},sham\ny/{nfd},OVX\n")
    with pytest.raises(ConfigError, match=rf"m2\.csv: line 3, column 'scan': scan name "
                                          rf"'{nfc}' is already on line 2"):
        read_manifest(m)


def test_utf16_tab_separated_manifest(tmp_path):
    """Excel's "Unicode text": UTF-16 with a BOM, tab-separated, CRLF."""
    m = tmp_path / "m.txt"
    m.write_text("scan\tgroup\troi_offset_mm\r\nF01\tsham\t1,5\r\n", encoding="utf-16")
    with pytest.raises(ConfigError, match=r"m\.txt: line 2, column 'roi_offset_mm': expected a "
                                          r"number, got '1,5'"):
        read_manifest(m)
    m.write_text("scan\tgroup\troi_offset_mm\r\nF01\tsham\t1.5\r\n", encoding="utf-16")
    (entry,) = read_manifest(m).entries
    assert (entry.name, entry.group, entry.overrides) == ("F01", "sham", {"roi_offset_mm": 1.5})


def test_overrides_change_only_their_scans_config_hash(tmp_path):
    m = _write(tmp_path / "m.csv", "scan,group,roi_offset_mm\na,sham,\nb,sham,1.5\nc,OVX,1.0\n")
    base = AnalysisConfig()
    digests = [e.config(base).digest() for e in read_manifest(m).entries]
    # a: no override; c: an override equal to the default is the same settings
    assert digests[0] == digests[2] == base.digest()
    assert digests[1] != base.digest()


# ---------------------------------------------------------------------------------------------
# dry run (headers only, writes nothing)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Three small 8-bit scans (12 slices of 24x24 at 10 µm) and their manifest."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(7)
    for i, name in enumerate(["a", "b", "c"]):
        vol = rng.integers(20, 230, size=(12 + i, 24, 24), dtype=np.uint8)
        write_nrecon_folder(root / "scans" / name, vol, voxel_size_um=10.0, file_type="bmp")
    _write(root / "manifest.csv", "scan,group\nscans/a,sham\nscans/b,sham\nscans/c,OVX\n")
    return root


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_dry_run_valid_study_exit_0_and_writes_nothing(tiny_study, tmp_path):
    out = tmp_path / "out"
    res = _run(["analyze", "--manifest", str(tiny_study / "manifest.csv"), "--roi", "full",
                "--dry-run", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for name, group, n in (("a", "sham", 12), ("b", "sham", 13), ("c", "OVX", 14)):
        line = next(x for x in lines if x.startswith(name + " "))
        assert re.search(rf"{group}\s+{n} slices 24x24\s+10 µm\s+8-bit\s+OK$", line), line
    assert "3 of 3 scans valid" in lines[-1]
    assert not out.exists()
    # also without a manifest, and without -o at all
    res = _run(["analyze", str(tiny_study / "scans"), "--group", "x", "--roi", "full",
                "--dry-run"])
    assert res.exit_code == 0 and "3 of 3 scans valid" in res.output


def test_dry_run_reports_each_broken_scan_and_exits_1(tiny_study, tmp_path):
    import shutil

    scans = tmp_path / "scans"
    shutil.copytree(tiny_study / "scans", scans)
    victim = sorted((scans / "b").glob("b_rec0*.bmp"))[4]
    victim.unlink()  # a gap in the numbering
    # a 16-bit scan among 8-bit ones, without a CS window: its grey values cannot be put on
    # the study's attenuation scale (with a window it would be pooled in attenuation)
    no_window = {"Reconstruction": {"Minimum for CS to Image Conversion": None,
                                    "Maximum for CS to Image Conversion": None}}
    write_nrecon_folder(scans / "d", np.full((12, 24, 24), 3000, np.uint16), voxel_size_um=10.0,
                        file_type="tif", settings=no_window)
    man = _write(tmp_path / "m.csv", "scan,group,roi_height_mm\nscans/a,sham,\nscans/b,sham,\n"
                 "scans/c,OVX,0.2\nscans/d,OVX,\nscans/gone,OVX,\n")
    res = _run(["analyze", "--manifest", str(man), "--dry-run", "--roi-height-mm", "0.05",
                "--roi-offset-mm", "0"])
    assert res.exit_code == 1
    out = {x.split()[0]: x for x in res.output.splitlines()[:-1]}
    assert out["a"].endswith("OK")
    assert "PROBLEM" in out["b"] and "missing" in out["b"] and "b_rec" in out["b"]
    # c: its own 0.2 mm VOI is longer than its 14 slices x 10 µm = 0.14 mm
    assert "PROBLEM: c: the scan is 0.14 mm long, too short for the trabecular VOI" in out["c"]
    assert ("PROBLEM: d: its log gives no CS window ('Minimum/Maximum for CS to Image "
            "Conversion' in [Reconstruction]) and its slices are 16-bit while the study's are "
            "CS window 0..0.1, 8-bit") in out["d"]
    assert "PROBLEM" in out["gone"] and "does not exist" in out["gone"]
    assert "1 of 5 scans valid, 4 with problems" in res.output


def test_dry_run_reads_headers_only(tiny_study, tmp_path):
    """A slice whose pixel data is cut off behind a valid header passes the dry run (it reads
    no pixels, by design: fast on large studies); the run then fails that scan only."""
    import shutil

    shutil.copytree(tiny_study / "scans" / "a", tmp_path / "a")
    victim = sorted((tmp_path / "a").glob("a_rec0*.bmp"))[3]
    header_and_palette = 14 + 40 + 256 * 4
    victim.write_bytes(victim.read_bytes()[: header_and_palette + 10])
    with pytest.raises(ScanError, match=victim.name):  # the pixels really are unreadable
        read_scan(tmp_path / "a").read_slice(3)
    (check,) = check_study([tmp_path / "a"], AnalysisConfig(roi="full"))
    assert check.ok and check.n_slices == 12 and check.slice_shape == (24, 24)


def test_manifest_excludes_scan_dirs_groups_and_group(tiny_study, tmp_path):
    man = str(tiny_study / "manifest.csv")
    out = str(tmp_path / "o")
    for extra in ([str(tiny_study / "scans")], ["--groups", man], ["--group", "x"]):
        res = _run(["analyze", "--manifest", man, "-o", out, *extra])
        assert res.exit_code == 2 and "--manifest lists the scans" in res.output, extra
    res = _run(["analyze", "-o", out])
    assert res.exit_code == 2 and "give SCAN_DIR... or --manifest" in res.output
    res = _run(["analyze", str(tiny_study / "scans")])
    assert res.exit_code == 2 and "--out" in res.output
    assert not (tmp_path / "o").exists()


def test_bad_manifest_is_one_clear_line_exit_1(tmp_path):
    man = _write(tmp_path / "m.csv", "scan,group,threshold\na,b,90\n")
    res = _run(["analyze", "--manifest", str(man), "--dry-run"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{man}: line 1, column 3: 'threshold' is a study-wide setting" in res.output


def test_manifest_run_summary_table_and_run_log(tiny_study, tmp_path):
    man = _write(tmp_path / "m.csv",
                 f"scan,group\n{tiny_study}/scans/a,sham\n{tiny_study}/scans/b,OVX\n"
                 f"{tiny_study}/scans/gone,OVX\n")
    out = tmp_path / "out"
    res = _run(["analyze", "--manifest", str(man), "--roi", "full", "--threshold", "128",
                "--no-qc", "--jobs", "1", "-o", str(out)])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    head = lines.index(next(x for x in lines if x.startswith("scan ")))
    table = {x.split()[0]: x.split() for x in lines[head + 1: head + 4]}
    # seconds are rounded to 0.1 s: a tiny scan can read 0.0
    assert table["a"][:3] == ["a", "sham", "ok"] and float(table["a"][3]) >= 0
    assert table["b"][:3] == ["b", "OVX", "ok"] and float(table["b"][3]) >= 0
    assert table["gone"] == ["gone", "OVX", "failed", "-"]  # never started
    assert any(x.startswith("failed: ") and "gone" in x and "does not exist" in x
               for x in lines)
    log = (out / "ctmorph.log").read_text()
    assert "[1/2] a: ok" in log and "[2/2] b: ok" in log
