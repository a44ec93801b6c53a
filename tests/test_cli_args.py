"""Wrong arguments: exit 2 and one line naming the option as typed, nothing written; and the
wiring of the analyze options the batch receives (issue 14 item 7)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from ctmorph.calibration import calibrate
from ctmorph.cli import cli
from ctmorph.errors import CalibrationError
from ctmorph.io.writer import write_nrecon_folder

POS = "a finite number > 0"
NONNEG = "a finite number >= 0"
FINITE = "a finite number"
GREY = "a grey value or 'otsu' (grey values are finite and >= 0)"


def _invoke(tmp_path: Path, monkeypatch, args: list[str]):
    """Run the CLI in ``tmp_path`` (relative paths, e.g. ``out``, land there)."""
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(cli, [str(a) for a in args])


def _error_lines(res) -> list[str]:
    assert "Traceback" not in res.output
    return [ln for ln in res.output.splitlines() if ln.startswith("Error")]


def _written(tmp_path: Path, before: set[str]) -> set[str]:
    """Every path below tmp_path that was not there before the command."""
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")} - before


def _snapshot(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}


# ---------------------------------------------------------------------------------------------
# numbers: every numeric option of every command


ANALYZE_NUMBERS = [
    ("--voxel-size", "-9", POS), ("--voxel-size", "0", POS), ("--voxel-size", "nan", POS),
    ("--voxel-size", "inf", POS),
    ("--smooth-sigma", "-1", NONNEG), ("--smooth-sigma", "nan", NONNEG),
    ("--roi-height-mm", "0", POS), ("--roi-height-mm", "inf", POS),
    ("--roi-offset-mm", "-1", NONNEG), ("--roi-offset-mm", "nan", NONNEG),
    ("--tmd-erosion-vox", "-1", NONNEG), ("--tmd-erosion-vox", "nan", NONNEG),
    ("--cortical-height-mm", "-1", POS), ("--cortical-height-mm", "nan", POS),
    ("--cortical-offset-mm", "-1", NONNEG), ("--cortical-offset-mm", "nan", NONNEG),
    ("--threshold", "nan", GREY), ("--threshold", "inf", GREY), ("--threshold", "-5", GREY),
    ("--threshold-attenuation", "nan", FINITE), ("--threshold-attenuation", "-inf", FINITE),
    ("--threshold-attenuation", "abc", FINITE),
    ("--roi-offset-frac", "nan", "a finite number in [0, 1)"),
    ("--roi-height-frac", "nan", "a finite number in (0, 1]"),
]


@pytest.mark.parametrize(("option", "value", "expected"), ANALYZE_NUMBERS)
def test_analyze_bad_numbers_exit_2_naming_the_option(tmp_path, monkeypatch, option, value,
                                                      expected):
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "-o", "out",
                                          option, value])
    assert res.exit_code == 2, res.output
    assert _error_lines(res) == [f"Error: Invalid value for '{option}': expected {expected}, "
                                 f"got '{value}'"]
    assert _written(tmp_path, before) == set()


def test_threshold_density_nan_exit_2(tmp_path, monkeypatch):
    (tmp_path / "calib.json").write_text("{}")
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "-o", "out",
                                          "--calibration", "calib.json",
                                          "--threshold-density", "nan"])
    assert res.exit_code == 2, res.output
    assert _error_lines(res) == ["Error: Invalid value for '--threshold-density': expected a "
                                 "finite number, got 'nan'"]
    assert _written(tmp_path, before) == set()


@pytest.mark.parametrize(("args", "message"), [
    (["report", "out", "--alpha", "nan"],
     "Error: Invalid value for '--alpha': expected a finite number in (0, 1), got 'nan'"),
    (["report", "out", "--alpha", "1"],
     "Error: Invalid value for '--alpha': expected a finite number in (0, 1), got '1'"),
    (["inspect", "scan", "--voxel-size", "0"],
     f"Error: Invalid value for '--voxel-size': expected {POS}, got '0'"),
    (["inspect", "scan", "--voxel-size", "nan"],
     f"Error: Invalid value for '--voxel-size': expected {POS}, got 'nan'"),
    (["calibrate", "HA1", "HA2", "--densities", "0.25,0.75", "-o", "c.json",
      "--core-fraction", "nan"],
     "Error: Invalid value for '--core-fraction': expected a finite number in (0, 1], got 'nan'"),
    (["calibrate", "HA1", "HA2", "--densities", "0.25,0.75", "-o", "c.json",
      "--core-fraction", "1.5"],
     "Error: Invalid value for '--core-fraction': expected a finite number in (0, 1], got '1.5'"),
    (["calibrate", "HA1", "HA2", "--densities", "0.25,0.75", "-o", "c.json",
      "--edge-margin-vox", "-1"],
     f"Error: Invalid value for '--edge-margin-vox': expected {NONNEG}, got '-1'"),
    (["calibrate", "HA1", "HA2", "--densities", "0.25,0.75", "-o", "c.json",
      "--edge-margin-vox", "nan"],
     f"Error: Invalid value for '--edge-margin-vox': expected {NONNEG}, got 'nan'"),
    (["samples", "smp", "--seed", "-1"],
     "Error: Invalid value for '--seed': -1 is not in the range x>=0."),
])
def test_other_commands_bad_numbers_exit_2(tmp_path, monkeypatch, args, message):
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, args)
    assert res.exit_code == 2, res.output
    assert _error_lines(res) == [message]
    assert _written(tmp_path, before) == set()


# ---------------------------------------------------------------------------------------------
# input files, densities, option conflicts


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: None, "File 'g.csv' does not exist."),
    (lambda d: (d / "g.csv").mkdir(), "File 'g.csv' is a directory."),
    (lambda d: (d / "g.csv").write_bytes(b""), "File 'g.csv' is empty (0 bytes)."),
])
def test_groups_file_missing_folder_or_empty_exit_2(tmp_path, monkeypatch, make, message):
    make(tmp_path)
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--groups", "g.csv", "-o", "out"])
    assert res.exit_code == 2, res.output
    assert _error_lines(res) == [f"Error: Invalid value for '--groups': {message}"]
    assert _written(tmp_path, before) == set()


@pytest.mark.parametrize(("densities", "message"), [
    ("abc", "densities must be numbers in g/cm³ HA separated by commas, got 'abc'"),
    ("0.25,x", "densities must be numbers in g/cm³ HA separated by commas, got 'x'"),
    ("0.25,nan", "densities must be finite and >= 0 g/cm³ HA, got 'nan'"),
    ("0.25", "2 phantom folders but 1 density given (--densities 0.25)"),
])
def test_calibrate_bad_densities_exit_2(tmp_path, monkeypatch, densities, message):
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["calibrate", "HA1", "HA2", "--densities", densities,
                                          "-o", "calib.json"])
    assert res.exit_code == 2, res.output
    assert _error_lines(res) == [f"Error: Invalid value for '--densities': {message}"]
    assert _written(tmp_path, before) == set()


def test_calibrate_library_names_folders_and_densities(tmp_path):
    message = r"^3 phantom folders but 2 densities given \(--densities 0\.25,0\.75\)$"
    with pytest.raises(CalibrationError, match=message):
        calibrate([tmp_path / "a", tmp_path / "b", tmp_path / "c"], "0.25,0.750")


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "90", "--threshold-attenuation", "0.5"],
     "give either --threshold or --threshold-attenuation, not both"),
    (["--threshold", "otsu", "--threshold-attenuation", "0.5"],
     "give either --threshold or --threshold-attenuation, not both"),
    (["--calibration", "calib.json", "--threshold-density", "0.6",
      "--threshold-attenuation", "0.5"],
     "give either --threshold-density or --threshold-attenuation, not both"),
    (["--roi", "full", "--cortical-offset-mm", "3"],
     "--cortical-offset-mm places a VOI from the growth plate: needs --roi auto, got --roi full"),
])
def test_conflicting_options_exit_2(tmp_path, monkeypatch, args, message):
    (tmp_path / "calib.json").write_text("{}")
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "-o", "out", *args])
    assert res.exit_code == 2, res.output
    assert _error_lines(res) == [f"Error: {message}"]
    assert _written(tmp_path, before) == set()


def test_scheduler_without_the_dask_extra_fails_before_writing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "-o", "out",
                                          "--scheduler", "tcp://127.0.0.1:1"])
    assert res.exit_code == 1, res.output
    assert _error_lines(res) == [
        "Error: --scheduler runs the scans on a Dask cluster, which needs the optional "
        "'distributed' package: pip install 'ctmorph[distributed]'"
    ]
    assert _written(tmp_path, before) == set()


def test_inspect_folder_with_only_a_scan_log_says_why(tmp_path, monkeypatch):
    folder = write_nrecon_folder(tmp_path / "F01", np.zeros((3, 5, 5), np.uint8),
                                 voxel_size_um=9.0)
    (log,) = folder.glob("*.log")
    log.write_text("[System]\nScanner=SkyScan1172\n[Acquisition]\nFilename Prefix=F01\n")
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["inspect", folder])
    assert res.exit_code == 1, res.output
    assert _error_lines(res) == [f"Error: {folder}: has no reconstruction log ({log}: has no "
                                 "[Reconstruction] section); pass --voxel-size"]
    assert _written(tmp_path, before) == set()


# ---------------------------------------------------------------------------------------------
# wiring: what analyze hands to the batch (the batch's side is tested in test_batch.py)


class _Recorder:
    def __init__(self, result):
        self.calls: list[tuple[tuple, dict]] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def _summary():
    from ctmorph.batch import RunSummary

    row = {"scan": "s0", "group": "g", "status": "ok"}
    return RunSummary(rows=[row], out_dir=Path("out"), threshold=100.0,
                      threshold_method="otsu (pooled over 1 scans)", seconds=1.0,
                      scan_seconds={"s0": 1.0}, threshold_attenuation=0.04)


@pytest.fixture
def fake_batch(monkeypatch):
    import ctmorph.batch
    import ctmorph.sensitivity

    run = _Recorder(_summary())
    check = _Recorder([SimpleNamespace(name="s0", group="g", n_slices=3, slice_shape=(5, 5),
                                       voxel_um=9.0, bit_depth=8, ok=True, problem=None)])
    sens = _Recorder(SimpleNamespace(thresholds={-5.0: 95.0, 5.0: 105.0}, unit="grey",
                                     percent=5.0, seconds=1.0, reused=0, table="t.csv",
                                     failed=[]))
    monkeypatch.setattr(ctmorph.batch, "run_analysis", run)
    monkeypatch.setattr(ctmorph.batch, "check_study", check)
    monkeypatch.setattr(ctmorph.sensitivity, "run_sensitivity", sens)
    return SimpleNamespace(run=run, check=check, sens=sens)


def test_new_options_reach_the_batch_and_the_sensitivity_run(tmp_path, monkeypatch, fake_batch):
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "-o", "out",
                                          "--jobs", "1", "--threshold-attenuation", "0.7",
                                          "--verify-inputs", "--strict", "--sensitivity", "5"])
    assert res.exit_code == 0, res.output
    assert ("1 of 1 scans ok in 1.0 s (threshold 100 grey = 0.04 attenuation, otsu (pooled "
            "over 1 scans))") in res.output
    ((args, kw),) = fake_batch.run.calls
    config = args[2]
    assert config.threshold_attenuation == 0.7 and config.threshold == "otsu"
    assert config.strict_calibration is True
    assert kw["strict"] is True and kw["verify_inputs"] is True
    ((_, skw),) = fake_batch.sens.calls
    assert skw["strict"] is True and skw["verify_inputs"] is True


def test_flags_default_off(tmp_path, monkeypatch, fake_batch):
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "-o", "out",
                                          "--jobs", "1", "--sensitivity", "5"])
    assert res.exit_code == 0, res.output
    assert "1 of 1 scans ok" in res.output
    args, kw = fake_batch.run.calls[0]
    assert args[2].threshold_attenuation is None
    assert kw["strict"] is False and kw["verify_inputs"] is False
    _, skw = fake_batch.sens.calls[0]
    assert skw["strict"] is False and skw["verify_inputs"] is False


def test_dry_run_passes_strict_to_check_study(tmp_path, monkeypatch, fake_batch):
    before = _snapshot(tmp_path)
    res = _invoke(tmp_path, monkeypatch, ["analyze", "scans", "--group", "g", "--dry-run",
                                          "--strict", "-o", "out"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == "dry run: 1 of 1 scans valid; nothing was written"
    ((_, kw),) = fake_batch.check.calls
    assert kw["strict"] is True
    assert _written(tmp_path, before) == set()
