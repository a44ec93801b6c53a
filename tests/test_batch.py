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
    # numba threads: the usable cores divided among the busy workers, at every stage
    import numba

    from ctmorph.batch import default_jobs

    top = min(default_jobs(), numba.config.NUMBA_NUM_THREADS)
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    for name in ("s0", "s1", "s2"):
        used = run["numba_threads"][name]  # a run-time fact: in run.json, not the scan's JSON
        assert set(used.values()) <= set(range(max(1, top // 2), top + 1))
    assert set(parallel.scan_seconds) == {"s0", "s1", "s2"} == set(run["scan_seconds"])
    assert run["jobs"] == 2


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


# ---------------------------------------------------------------------------------------------
# --jobs default, numba threads shared among busy workers, worker logs, manifest runs


def test_default_jobs_is_the_usable_cores():
    from ctmorph.batch import default_jobs

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_jobs() == expected >= 1


def test_thread_budget_divides_cores_among_busy_workers(threads):
    import multiprocessing

    import numba

    from ctmorph.batch.jobs import ThreadBudget

    busy = multiprocessing.get_context("spawn").Array("b", 3, lock=False)
    a, b = ThreadBudget(busy, 8, 0), ThreadBudget(busy, 8, 1)  # two workers of one pool
    a.start()
    assert a.threads() == 8  # alone: every core
    b.start()
    assert a.threads() == b.threads() == 4
    c = ThreadBudget(busy, 8, 2)
    c.start()
    assert c.threads() == 2  # 8 // 3, never oversubscribed
    c.finish()
    b.finish()
    assert a.threads() == 8  # the queue drained: the last scan gets all cores again
    a.finish()
    assert sum(busy) == 0
    # apply() sets numba's count, within the process's maximum
    top = numba.config.NUMBA_NUM_THREADS
    d = ThreadBudget(busy, top, 0)
    d.start()
    threads(1)
    assert d.apply() == top == numba.get_num_threads()
    e = ThreadBudget(busy, top, 1)
    e.start()
    assert d.apply() == max(1, top // 2) == numba.get_num_threads()
    d.finish()
    e.finish()


def test_pool_worker_alone_gets_all_threads_and_logs_reach_the_parent(scans, tmp_path, caplog):
    """Deterministic end of the rebalancing: one scan in a 2-worker pool runs alone, so every
    stage gets all usable cores; the worker's log records arrive in this process."""
    import logging

    import numba

    from ctmorph.batch.jobs import Job, default_jobs, process_pool, run_job
    from ctmorph.io import read_scan

    caplog.set_level(logging.INFO, logger="ctmorph")
    cfg = CFG.replace(threshold=128.0, voxel_size_um=12.0)  # the override logs a warning
    with process_pool(2) as pool:
        # the header is read in a worker, as the run's first phase does
        from ctmorph.batch.plan import probe_scan

        [(_, probe)] = pool.map_unordered(probe_scan, [("s0", ("s0", scans / "s0", cfg, None))])
        job = Job("s0", probe.scan, "g", cfg, 128.0, "fixed", tmp_path, False, True)
        [(_, outcome)] = pool.map_unordered(run_job, [(job, (job,))])
    here = read_scan(scans / "s0", voxel_size_um=12.0)
    assert (probe.scan.name, probe.scan.shape, probe.scan.voxel_size_um) == \
        (here.name, here.shape, here.voxel_size_um) == ("s0", (40, 48, 48), 12.0)
    assert outcome.row["status"] == "ok" and not outcome.reused and outcome.seconds > 0
    alone = min(default_jobs(), numba.config.NUMBA_NUM_THREADS)
    from ctmorph.pipeline import STAGES

    assert outcome.threads == {stage: alone for stage in outcome.threads}
    # without QC pictures (write_qc False) there is nothing to render: "structure" is last
    assert set(outcome.threads) <= set(STAGES) and "structure" in outcome.threads
    assert "render" not in outcome.threads
    from_worker = [r for r in caplog.records
                   if r.process != os.getpid() and r.name.startswith("ctmorph")]
    assert any("overrides the log's" in r.getMessage() for r in from_worker)


def test_manifest_overrides_enter_only_their_scan(scans, tmp_path):
    man = tmp_path / "study.csv"
    rel = os.path.relpath(scans, tmp_path)
    man.write_text(f"scan,group,voxel_size_um\n{rel}/s0,sham,\n{rel}/s1,OVX,20\n"
                   f"{rel}/s2,OVX,\n")
    cfg = CFG.replace(threshold=128.0)
    plain = run_analysis([scans], tmp_path / "out", cfg, write_qc=False, group="x")
    with_m = run_analysis([], tmp_path / "out", cfg, manifest=man, write_qc=False)
    a = pd.DataFrame(plain.rows).set_index("scan")
    b = pd.DataFrame(with_m.rows).set_index("scan")
    # unchanged scans are reused (same settings key), the overridden one is recomputed
    assert with_m.reused == 2
    assert list(b.group) == ["sham", "OVX", "OVX"]
    for s in ("s0", "s2"):
        assert b.loc[s, "config_hash"] == a.loc[s, "config_hash"] == cfg.digest()
        assert b.loc[s, "BV/TV"] == a.loc[s, "BV/TV"]
    assert b.loc["s1", "config_hash"] == cfg.replace(voxel_size_um=20.0).digest()
    assert b.loc["s1", "voxel_um"] == 20.0
    # the segmentation is in voxels, so a voxel twice as large doubles every length
    # (float rounding only) and leaves BV/TV as it was
    assert b.loc["s1", "BV/TV"] == a.loc["s1", "BV/TV"]
    for c in ("Tb.Th", "Tb.Sp"):
        assert b.loc["s1", c] == pytest.approx(2 * a.loc["s1", c], rel=1e-9)
    info = json.loads((tmp_path / "out" / "s1" / "morphometry.json").read_text())
    assert info["config"]["voxel_size_um"] == 20.0
    assert info["manifest"] == {"path": str(man), "line": 3, "overrides": {"voxel_size_um": 20.0}}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["manifest"] == str(man)
    with pytest.raises(ConfigError, match="a manifest lists the scans"):
        run_analysis([scans], tmp_path / "o2", cfg, manifest=man)


def test_a_scan_of_another_bit_depth_joins_the_study_in_attenuation(scans, tmp_path):
    """A 16-bit scan among 8-bit ones: one grey threshold cannot serve both, one attenuation
    can (the scans share the CS window 0..0.1, so 16-bit grey g * 257 is 8-bit grey g)."""
    import shutil

    root = tmp_path / "scans"
    for s in ("s0", "s1"):
        shutil.copytree(scans / s, root / s)
    grey8 = grey_from_mask(random_trabecular((20, 48, 48), bv_tv=0.2, seed=5), seed=5)
    write_nrecon_folder(root / "t16", grey8.astype(np.uint16) * 257, voxel_size_um=10.0,
                        file_type="tif")
    s = run_analysis([root], tmp_path / "out", CFG, write_qc=False, group="g")
    df = pd.DataFrame(s.rows).set_index("scan")
    assert (df.status == "ok").all()
    assert s.threshold_method == "otsu (pooled over 3 scans on a common attenuation axis)"
    assert s.threshold is None  # no single grey value
    assert df.loc["t16", "threshold"] == pytest.approx(df.loc["s0", "threshold"] * 257)
    assert (df.threshold_attenuation == s.threshold_attenuation).all()
