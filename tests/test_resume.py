"""A run killed at an arbitrary moment loses only the scans in flight."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd

from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, random_trabecular


def test_killed_run_resumes_without_recomputing_finished_scans(tmp_path):
    scans = tmp_path / "scans"
    for i in range(6):
        mask = random_trabecular((56, 72, 72), bv_tv=0.2 + 0.02 * i, scale=2.0, seed=i)
        write_nrecon_folder(scans / f"s{i}", grey_from_mask(mask, seed=i), voxel_size_um=10.0)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ctmorph.cli", "analyze", str(scans), "--roi", "full",
           "--threshold", "128", "--no-qc", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.glob("s*/morphometry.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.parent.name for p in out.glob("s*/morphometry.json"))
    assert finished, "no scan finished before the kill"
    # the table is written only at the end of a run, never half
    assert not (out / "morphometry.csv").exists() or len(finished) == 6

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    # exactly the scans that had finished are reused, the others are computed
    assert f"{len(finished)} unchanged and reused" in res.stdout
    df = pd.read_csv(out / "morphometry.csv")
    assert sorted(df.scan) == [f"s{i}" for i in range(6)] and (df.status == "ok").all()
