"""An output that cannot be written (issue 14 item 4): one line naming the path and the
problem, exit 1, no traceback, and what was finished stays reusable.

The full and read-only disks are real: small tmpfs mounts (root only; skipped elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from ctmorph.cli import cli
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, random_trabecular

ARGS = ["--group", "g", "--roi", "full", "--threshold", "128", "--jobs", "1"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    for i in range(5):
        mask = random_trabecular((32, 48, 48), bv_tv=0.15 + 0.05 * i, scale=2.0, seed=i)
        write_nrecon_folder(root / f"s{i}", grey_from_mask(mask, seed=i), voxel_size_um=10.0)
    return root


@pytest.fixture
def mount(tmp_path):
    """``mount(options) -> folder``: a fresh tmpfs with mount ``options``; unmounted after."""
    mounted = []

    def do(options: str):
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
        mounted.append(target)
        return target

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield do
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _one_line_error(result) -> str:
    text = result.output
    assert "Traceback" not in text and "internal error" not in text, text
    assert "Logging error" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, text
    return errors[0]


def test_a_full_disk_names_the_file_and_keeps_finished_scans_reusable(scans, mount):
    disk = mount("size=360k")
    out = disk / "out"
    res = CliRunner().invoke(cli, ["analyze", str(scans), "-o", str(out), *ARGS])
    assert res.exit_code == 1, res.output
    line = _one_line_error(res)
    assert "No space left on device" in line and str(out) in line
    # each scan that could not be written says which file, on one log line
    logged = [ln for ln in res.output.splitlines() if ln.startswith("ERROR: ")]
    assert logged and all(ln.endswith("cannot write: No space left on device")
                          for ln in logged), logged
    finished = sorted(p.parent.name for p in out.glob("s*/morphometry.json"))
    assert finished and len(finished) < 5
    for name in finished:  # every finished scan is complete
        info = json.loads((out / name / "morphometry.json").read_text())
        assert all((out / name / p).is_file() for p in info["outputs"])
    assert not list(out.rglob("*.tmp"))  # nothing half-written is left
    # more room: the finished scans are reused, the others computed
    subprocess.run(["mount", "-o", "remount,size=50m", str(disk)], check=True)
    res = CliRunner().invoke(cli, ["analyze", str(scans), "-o", str(out), *ARGS])
    assert res.exit_code == 0, res.output
    assert f"{len(finished)} unchanged and reused" in res.output


def test_a_read_only_output_folder(scans, mount):
    disk = mount("size=1m,ro")
    res = CliRunner().invoke(cli, ["analyze", str(scans), "-o", str(disk / "out"), *ARGS])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert line == f"Error: {disk / 'out'}: cannot write: Read-only file system"


def test_an_output_folder_that_is_a_file(scans, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    res = CliRunner().invoke(cli, ["analyze", str(scans), "-o", str(out), *ARGS])
    assert res.exit_code == 1
    assert _one_line_error(res) == f"Error: {out}: is a file, not a folder; cannot write {out}"
    assert out.read_text() == "not a folder"
