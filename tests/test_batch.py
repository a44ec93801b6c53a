"""Batch runs: pooled threshold, failures isolated, resumption, parallel scans = serial scans."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from ctmorph.batch import read_groups, run_analysis
from ctmorph.config import AnalysisConfig
from ctmorph.errors import ConfigError
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, random_trabecular

CFG = AnalysisConfig(roi="full", smooth_sigma_vox=0.8)
NUMBERS = ["BV/TV", "Tb.Th", "Tb.Sp", "Tb.N", "BS/BV", "threshold"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("scans")
    for i, bvtv in enumerate([0.15, 0.25, 0.35]):
        mask = random_trabecular((40, 48, 48), bv_tv=bvtv, scale=2.0, seed=i)
        grey = grey_from_mask(mask, seed=i)
        write_nrecon_folder(root / f"s{i}", grey, voxel_size_um=10.0, file_type="bmp")
    return root


def test_pooled_otsu_is_one_threshold_and_orders_bvtv(scans, tmp_path):
    s = run_analysis([scans], tmp_path / "out", CFG, write_qc=False)
    df = pd.DataFrame(s.rows)
    assert (df.status == "ok").all() and df.threshold.nunique() == 1
    assert "pooled over 3 scans" in s.threshold_method
    assert list(df.sort_values("BV/TV").scan) == ["s0", "s1", "s2"]


def test_rerun_reuses_unchanged_scans_and_recomputes_changed(scans, tmp_path):
    out = tmp_path / "out"
    first = run_analysis([scans], out, CFG, write_qc=False)
    assert first.reused == 0
    again = run_analysis([scans], out, CFG, write_qc=False)
    assert again.reused == 3
    pd.testing.assert_frame_equal(pd.DataFrame(first.rows)[NUMBERS],
                                  pd.DataFrame(again.rows)[NUMBERS])
    # a run killed before the table was written loses nothing that had finished
    (out / "morphometry.csv").unlink()
    (out / "s1" / "morphometry.json").unlink()
    third = run_analysis([scans], out, CFG, write_qc=False)
    assert third.reused == 2 and (out / "morphometry.csv").is_file()
    # a changed input file is recomputed
    f = sorted((scans / "s2").glob("*.bmp"))[3]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert run_analysis([scans], out, CFG, write_qc=False).reused == 2
    # changed settings recompute everything, and so does force
    assert run_analysis([scans], out, CFG.replace(smooth_sigma_vox=0.5), write_qc=False).reused == 0
    assert run_analysis([scans], out, CFG, write_qc=False, force=True).reused == 0


def test_parallel_scans_give_identical_numbers(scans, tmp_path):
    serial = run_analysis([scans], tmp_path / "a", CFG, write_qc=False, jobs=1)
    parallel = run_analysis([scans], tmp_path / "b", CFG, write_qc=False, jobs=2)
    a = pd.DataFrame(serial.rows).set_index("scan")[NUMBERS]
    b = pd.DataFrame(parallel.rows).set_index("scan").loc[a.index, NUMBERS]
    pd.testing.assert_frame_equal(a, b)
    info = json.loads((tmp_path / "b" / "s0" / "morphometry.json").read_text())
    assert info["row"]["BV/TV"] == pytest.approx(a.loc["s0", "BV/TV"])


def test_groups_file_errors(tmp_path):
    p = tmp_path / "g.csv"
    p.write_text("name,arm\na,b\n")
    with pytest.raises(ConfigError, match="needs the columns 'scan,group'"):
        read_groups(p)
    p.write_text("scan,group\na,sham\na,OVX\n")
    with pytest.raises(ConfigError, match="listed twice"):
        read_groups(p)
    with pytest.raises(ConfigError, match="cannot read the groups file"):
        read_groups(tmp_path / "missing.csv")


def test_unreadable_slice_fails_that_scan_only(scans, tmp_path):
    import shutil

    root = tmp_path / "scans"
    shutil.copytree(scans / "s0", root / "good")
    shutil.copytree(scans / "s1", root / "broken")
    victim = sorted((root / "broken").glob("*_rec0*.bmp"))[5]
    victim.write_bytes(b"BM" + bytes(40))  # truncated garbage
    s = run_analysis([root], tmp_path / "out", CFG.replace(threshold=128.0), write_qc=False)
    df = pd.DataFrame(s.rows).set_index("scan")
    assert df.loc["good", "status"] == "ok"
    assert df.loc["broken", "status"] == "failed"
    assert victim.name in df.loc["broken", "error"]
    csv = pd.read_csv(tmp_path / "out" / "morphometry.csv")
    assert set(csv.scan) == {"good", "broken"}
    assert np.isnan(csv.set_index("scan").loc["broken", "BV/TV"])


def test_public_analyze_scan_gives_the_batch_row(scans, tmp_path):
    import ctmorph

    cfg = ctmorph.AnalysisConfig(roi="full", smooth_sigma_vox=0.8, threshold=128.0)
    row = ctmorph.analyze_scan(scans / "s1", cfg)
    batch = run_analysis([scans / "s1"], tmp_path / "out", cfg, write_qc=False).rows[0]
    for c in NUMBERS:
        assert row[c] == batch[c], c
    assert row["BV/TV"] == pytest.approx(100 * row["BV"] / row["TV"])
