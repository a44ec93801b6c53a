"""The catalogue of bad inputs the README promises to handle (README "Bad input").

Each case builds a small study with one defect, runs the CLI as a user would and asserts the
exit code, the one line that names the file or option and the problem, no traceback, and that
nothing half-written is left (no temporary file; for a usage error, no output folder at all).
Per-scan defects fail that scan only: the other scan of the study is still measured, at the
threshold it has alone.

The README lists the same cases: every description below appears in its catalogue, so the two
cannot drift apart.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ctmorph.cli import cli
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, random_trabecular

README = Path(__file__).resolve().parents[1] / "README.md"
NO_WINDOW = {"Reconstruction": {"Minimum for CS to Image Conversion": None,
                                "Maximum for CS to Image Conversion": None}}
RUN = ["--roi", "full", "--jobs", "1", "--no-qc"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """One good scan folder, copied into each case's study."""
    root = tmp_path_factory.mktemp("good")
    mask = random_trabecular((24, 40, 40), bv_tv=0.25, scale=2.0, seed=1)
    write_nrecon_folder(root / "good", grey_from_mask(mask, seed=1), voxel_size_um=10.0)
    return root / "good"


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, the arguments, what must come out.

    ``make(study, good)`` builds the defect inside ``study`` (which already holds a copy of
    ``good`` unless ``alone``) and returns the CLI arguments after the command name (``{out}``
    stands for the output folder). ``scan`` names the scan that must fail alone (exit 1, the
    good one ok), or None for a whole-run error.
    """

    description: str
    make: Callable[[Path, Path], list[str]]
    exit_code: int
    message: str  # a regular expression one output line must match
    scan: str | None = None


def bad_scan(name: str, edit: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    """A copy of the good scan named ``name``, edited by ``edit(folder)``."""

    def make(study: Path, good: Path) -> list[str]:
        shutil.copytree(good, study / name)
        edit(study / name)
        return ["analyze", str(study), "--group", "g", "-o", "{out}", *RUN]

    return make


def slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("*_rec*.bmp"))


def new_scan(name: str, volume: np.ndarray, **kw) -> Callable[[Path, Path], list[str]]:
    def make(study: Path, good: Path) -> list[str]:
        write_nrecon_folder(study / name, volume, voxel_size_um=10.0, **kw)
        return ["analyze", str(study), "--group", "g", "-o", "{out}", *RUN]

    return make


def args(*extra: str, groups: str | None = None, manifest: str | None = None,
         groups_bytes: bytes | None = None) -> Callable[[Path, Path], list[str]]:
    """Arguments of a run over the study, with a groups file or manifest of that text."""

    def make(study: Path, good: Path) -> list[str]:
        a = ["analyze"]
        if manifest is not None:
            (study.parent / "study.csv").write_text(manifest)
            a += ["--manifest", str(study.parent / "study.csv")]
        else:
            a.append(str(study))
        if groups is not None or groups_bytes is not None:
            path = study.parent / "groups.csv"
            path.write_bytes(groups_bytes if groups_bytes is not None else groups.encode())
            a += ["--groups", str(path)]
        elif manifest is None and "--group" not in extra:
            a += ["--group", "g"]
        return a + ["-o", "{out}", *RUN, *extra]

    return make


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:1100])


def _resize(folder: Path) -> None:
    from PIL import Image

    f = slices(folder)[3]
    Image.new("L", (20, 20)).save(f)


def _gap(folder: Path) -> None:
    slices(folder)[5].unlink()


def _no_voxel_size(folder: Path) -> None:
    log = next(folder.glob("*.log"))
    log.write_text("\n".join(ln for ln in log.read_text().splitlines()
                             if not ln.startswith("Pixel Size")))


def _no_reconstruction_section(folder: Path) -> None:
    log = next(folder.glob("*.log"))
    keep, skip = [], False
    for ln in log.read_text().splitlines():
        if ln.startswith("["):
            skip = ln.strip() == "[Reconstruction]"
        if not skip:
            keep.append(ln)
    log.write_text("\n".join(keep))


def _no_log(folder: Path) -> None:
    next(folder.glob("*.log")).unlink()


def _empty(study: Path, good: Path) -> list[str]:
    (study / "empty").mkdir()
    return ["analyze", str(study / "good"), str(study / "empty"), "--group", "g", "-o", "{out}",
            *RUN]


def _missing(study: Path, good: Path) -> list[str]:
    return ["analyze", str(study / "good"), str(study / "gone"), "--group", "g", "-o", "{out}",
            *RUN]


def _same_name(study: Path, good: Path) -> list[str]:
    shutil.copytree(good, study / "other" / "good")
    return ["analyze", str(study / "good"), str(study / "other" / "good"), "--group", "g",
            "-o", "{out}", *RUN]


def _link_and_target(study: Path, good: Path) -> list[str]:
    (study / "T1").symlink_to(study / "good", target_is_directory=True)
    return ["analyze", str(study / "good"), str(study / "T1"), "--group", "g", "-o", "{out}",
            *RUN]


def _out_is_file(study: Path, good: Path) -> list[str]:
    (study.parent / "out").write_text("a file")
    return ["analyze", str(study), "--group", "g", "-o", str(study.parent / "out"), *RUN]


def _bad_calibration(study: Path, good: Path) -> list[str]:
    (study.parent / "calib.json").write_text("{not json")
    return ["analyze", str(study), "--group", "g", "-o", "{out}", *RUN,
            "--calibration", str(study.parent / "calib.json")]


def _calibrate_counts(study: Path, good: Path) -> list[str]:
    shutil.copytree(good, study / "rod2")
    return ["calibrate", str(study / "good"), str(study / "rod2"), "--densities", "0.25",
            "-o", str(study.parent / "calib.json")]


RNG = np.random.default_rng(0)
#: another femur with the good scan's attenuations, exported under a CS window twice as wide
W2 = grey_from_mask(random_trabecular((24, 40, 40), seed=2), bone=100.0, background=30.0,
                    noise=3.0, seed=2)
CASES = [
    # ---- scan folders and slices: that scan fails, the others are measured
    Case("a scan folder that does not exist", _missing, 1, r"gone: scan folder does not exist",
         "gone"),
    Case("an empty scan folder", _empty, 1,
         r"empty: holds no scan \(no slice images in it or its immediate subfolders\)", "empty"),
    Case("a missing slice (a gap in the section numbers)", bad_scan("gap", _gap), 1,
         r"gap: 1 slice\(s\) missing in good_rec\*\.bmp sections 0\.\.23: 5", "gap"),
    Case("a zero-byte slice file", bad_scan("zero", lambda f: slices(f)[2].write_bytes(b"")), 1,
         r"zero/good_rec0002\.bmp: empty file \(0 bytes\)", "zero"),
    Case("a slice whose pixel data is cut off", bad_scan("cut", lambda f: _truncate(
        slices(f)[4])), 1, r"cut/good_rec0004\.bmp: ", "cut"),
    Case("a slice of another size", bad_scan("size", _resize), 1,
         r"size/good_rec0003\.bmp: slice is 20x20 pixels but good_rec0000\.bmp is 40x40", "size"),
    Case("a log without a voxel size", bad_scan("novox", _no_voxel_size), 1,
         r"novox/good_rec\.log: no 'Pixel Size \(um\)' in \[Reconstruction\]; pass --voxel-size",
         "novox"),
    Case("a log without a [Reconstruction] section", bad_scan(
        "norec", _no_reconstruction_section), 1,
         r"norec: has no reconstruction log \(.*good_rec\.log: has no \[Reconstruction\] "
         r"section\); pass --voxel-size", "norec"),
    Case("an image stack without a log and without --voxel-size", bad_scan("nolog", _no_log), 1,
         r"nolog: has no reconstruction log \(no \.log file\); pass --voxel-size", "nolog"),
    Case("a blank scan (one grey value)", new_scan("blank", np.full((24, 40, 40), 90,
                                                                    np.uint8)), 1,
         r"blank: every voxel has the grey value 90 \(a blank reconstruction\?\)", "blank"),
    Case("a scan with no bone (empty tube)", new_scan("air", np.clip(
        RNG.normal(40, 4, (24, 40, 40)), 0, 255).astype(np.uint8)), 1,
         r"air: only 0 % of its voxels are above the study threshold .*: no bone to measure",
         "air"),
    Case("a scan that is all bone", new_scan("solid", np.clip(
        RNG.normal(230, 4, (24, 40, 40)), 0, 255).astype(np.uint8)), 1,
         r"solid: 100 % of its voxels are above the study threshold .*: no marrow or "
         r"background", "solid"),
    Case("a scan without a CS window in a study whose windows differ", lambda s, g: (
        new_scan("w2", W2, cs_window=(0.0, 0.2))(s, g),
        new_scan("nowin", grey_from_mask(random_trabecular((24, 40, 40), seed=3), seed=3),
                 settings=NO_WINDOW)(s, g))[1], 1,
         r"nowin: its log gives no CS window .* but the study's scans have different CS "
         r"windows or bit depths", "nowin"),
    Case("a grey threshold for scans of different CS windows", lambda s, g: new_scan(
        "w2", W2, cs_window=(0.0, 0.2))(s, g) + ["--threshold", "120"], 1,
         r"w2: the threshold 120 is a grey value, but this scan's grey scale \(CS window "
         r"0\.\.0\.2, 8-bit\) differs from the study's", "w2"),
    Case("a scan not listed in the groups file", args(groups="scan,group\nother,sham\n"), 1,
         r"good: scan is not listed with a group in the groups file", "good"),
    # ---- the study as a whole: one line, exit 1, nothing measured
    Case("two scans with the same name", _same_name, 1,
         r"two scan folders are both named 'good'; scan names must be unique"),
    Case("a symbolic link and its target in one run", _link_and_target, 1,
         r"'T1' and 'good' are the same scan folder"),
    Case("a groups file that is not UTF-8", args(groups_bytes=b"scan,group\ngood,f\xe9mur\n"), 1,
         r"groups\.csv: not UTF-8 text \(byte 0xe9 at offset 17\); save it as CSV UTF-8"),
    Case("a groups file with an unclosed quote", args(groups='scan,group\n"good,sham\n'), 1,
         r"groups\.csv: line 2, column 1: the quoted field starting here is never closed"),
    Case("a groups file with an empty group cell", args(groups="scan,group\ngood,\n"), 1,
         r"groups\.csv: line 2, column 'group': empty group for scan 'good'"),
    Case("a groups file listing a scan twice", args(groups="scan,group\ngood,a\ngood,b\n"), 1,
         r"groups\.csv: line 3, column 'scan': scan 'good' is listed twice \(first on line 2\)"),
    Case("a groups file without the scan,group columns", args(groups="name,arm\ngood,a\n"), 1,
         r"groups\.csv: line 1: the groups file needs the columns 'scan,group', found name, "
         r"arm"),
    Case("a groups-file row naming a scan not in the run, with --strict", args(
        "--strict", groups="scan,group\ngood,sham\nF99,OVX\n"), 1,
         r"groups\.csv: 1 row\(s\) name scans that are not in this run: 'F99' \(line 3\) "
         r"\(--strict\)"),
    Case("a manifest with an unknown column", args(manifest="scan,group,colour\nstudy/good,a,"
                                                            "red\n"), 1,
         r"study\.csv: line 1, column 3: unknown column 'colour'"),
    Case("a manifest setting the threshold per scan", args(
        manifest="scan,group,threshold\nstudy/good,a,90\n"), 1,
         r"study\.csv: line 1, column 3: 'threshold' is a study-wide setting"),
    Case("a calibration file that is not JSON", _bad_calibration, 1, r"calib\.json: "),
    Case("an output folder that is a file", _out_is_file, 1,
         r"out: is a file, not a folder; cannot write .*out"),
    # ---- wrong arguments: exit 2, the option as typed, nothing written
    Case("a negative voxel size", args("--voxel-size", "-9"), 2,
         r"Invalid value for '--voxel-size': expected a finite number > 0, got '-9'"),
    Case("a threshold that is not a number", args("--threshold", "nan"), 2,
         r"Invalid value for '--threshold': expected a grey value or 'otsu'"),
    Case("a smoothing sigma below zero", args("--smooth-sigma", "-1"), 2,
         r"Invalid value for '--smooth-sigma': expected a finite number >= 0, got '-1'"),
    Case("a VOI height of zero", args("--roi-height-mm", "0"), 2,
         r"Invalid value for '--roi-height-mm': expected a finite number > 0, got '0'"),
    Case("a groups file that does not exist", lambda s, g: [
        "analyze", str(s), "--groups", str(s.parent / "nope.csv"), "-o", "{out}"], 2,
         r"Invalid value for '--groups': (File|Path) '.*nope\.csv' does not exist"),
    Case("an empty groups file", args(groups=""), 2,
         r"Invalid value for '--groups': File '.*groups\.csv' is empty \(0 bytes\)"),
    Case("two thresholds at once", args("--threshold", "90", "--threshold-attenuation", "0.03"),
         2, r"give either --threshold or --threshold-attenuation, not both"),
    Case("calibrate with more folders than densities", _calibrate_counts, 2,
         r"Invalid value for '--densities': 2 phantom folders but 1 density given "
         r"\(--densities 0\.25\)"),
]


def test_every_case_is_in_the_readme():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Bad input"):]
    missing = [c.description for c in CASES if c.description not in section]
    assert not missing, f"README 'Bad input' does not list: {missing}"


@pytest.mark.parametrize("case", CASES, ids=[c.description for c in CASES])
def test_bad_input(case: Case, good: Path, tmp_path: Path, monkeypatch):
    study = tmp_path / "study"
    study.mkdir()
    shutil.copytree(good, study / "good")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{out}", str(out)) for a in case.make(study, good)]
    res = CliRunner().invoke(cli, argv)
    text = res.output
    assert res.exit_code == case.exit_code, text
    assert "Traceback" not in text and "internal error" not in text, text
    pattern = re.compile(case.message)
    hits = [ln for ln in text.splitlines() if pattern.search(ln)]
    assert hits, f"no line matches {case.message!r}:\n{text}"
    assert all("\n" not in h for h in hits)
    if case.exit_code == 2:  # a usage error writes nothing
        assert not out.exists() or out.is_file()
        return
    if out.is_dir():  # nothing half-written
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    if case.scan is None:
        assert not (out / "morphometry.csv").exists()
        return
    # a per-scan defect: that scan failed with the message, the others were measured ...
    df = pd.read_csv(out / "morphometry.csv").set_index("scan")
    assert df.loc[case.scan, "status"] == "failed"
    assert pattern.search(df.loc[case.scan, "error"]), df.loc[case.scan, "error"]
    if case.scan == "good":
        return
    ok = df[df.status == "ok"]
    assert "good" in ok.index
    # ... exactly as in the same study without the bad scan
    ref_study = tmp_path / "ref"
    shutil.copytree(study, ref_study, symlinks=True)
    shutil.rmtree(ref_study / case.scan, ignore_errors=True)
    ref_argv = [a.replace(str(study), str(ref_study)).replace(str(out), str(tmp_path / "r"))
                for a in argv if a != str(study / case.scan)]
    res = CliRunner().invoke(cli, ref_argv)
    assert res.exit_code == 0, res.output
    ref = pd.read_csv(tmp_path / "r" / "morphometry.csv").set_index("scan")
    assert list(ref.index) == list(ok.index)
    for col in ("threshold", "BV/TV", "Tb.Th", "Tb.Sp"):
        assert (ok[col] == ref[col]).all(), col
