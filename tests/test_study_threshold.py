"""One physical study threshold (docs/DESIGN.md §2): pooled and applied in attenuation through each
scan's CS window, and never moved by a scan that cannot be measured."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from ctmorph.batch import run_analysis
from ctmorph.config import AnalysisConfig
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import random_trabecular
from ctmorph.segment.pooling import (
    GreyScale,
    StudyThreshold,
    common_axis,
    pooled_otsu,
    resample_histogram,
)
from ctmorph.segment.threshold import otsu_threshold

CFG = AnalysisConfig(roi="full", smooth_sigma_vox=0.8)
#: the two windows of the issue's reproduction, and a 16-bit one
W1, W2, W16 = (-0.0096, 0.0766), (0.0, 0.11), (-0.02, 0.12)
NO_WINDOW = {"Reconstruction": {"Minimum for CS to Image Conversion": None,
                                "Maximum for CS to Image Conversion": None}}


def attenuation(seed: int, bv_tv: float, shape=(40, 48, 48)) -> np.ndarray:
    """A trabecular phantom in attenuation (NRecon CS units): bone 0.06, marrow 0.012, a
    partial-volume blur and noise; float64, before any grey quantisation."""
    mask = random_trabecular(shape, bv_tv=bv_tv, scale=2.0, seed=seed)
    att = ndimage.gaussian_filter(np.where(mask, 0.06, 0.012), 0.7, mode="nearest")
    return att + np.random.default_rng(seed).normal(0.0, 0.002, att.shape)


def export(att: np.ndarray, window, dtype=np.uint8) -> np.ndarray:
    """What NRecon writes for ``att`` under the CS window ``window``."""
    lo, hi = window
    gmax = np.iinfo(dtype).max
    return np.clip(np.rint((att - lo) / (hi - lo) * gmax), 0, gmax).astype(dtype)


def write(folder, att, window, dtype=np.uint8, **kw):
    ft = "bmp" if dtype == np.uint8 else "tif"
    write_nrecon_folder(folder, export(att, window, dtype), voxel_size_um=10.0, file_type=ft,
                        cs_window=window, **kw)


FEMURS = [attenuation(i, bv) for i, bv in enumerate([0.15, 0.25, 0.35])]


# ---------------------------------------------------------------------------------------------
# The common axis and the pooled histogram


def test_equal_scales_pool_exactly_as_grey_histograms():
    rng = np.random.default_rng(1)
    hists = {n: rng.integers(0, 1000, 256) for n in "abc"}
    scales = {n: GreyScale(255, W1) for n in "abc"}
    res = pooled_otsu(hists, scales, min_fraction=0.0)
    expected = otsu_threshold(np.sum(list(hists.values()), axis=0))
    assert res.threshold.scale == GreyScale(255, W1) and res.members == ("a", "b", "c")
    # the same float, also after the conversion back to each scan's grey
    assert res.threshold.position == expected == res.threshold.grey(GreyScale(255, W1))
    assert res.threshold.attenuation == pytest.approx(W1[0] + expected * (W1[1] - W1[0]) / 255)


def test_resampled_histogram_spreads_each_level_over_its_attenuation_interval():
    fine, coarse = GreyScale(255, (0.0, 0.1)), GreyScale(255, (0.0, 0.2))
    axis = common_axis([fine, coarse])
    assert axis.step == pytest.approx(fine.step) and axis.window == (0.0, 0.2)
    h = np.zeros(256)
    h[40] = 100.0  # coarse level 40 is attenuation [39.5, 40.5] coarse steps = [79, 81] fine
    out = resample_histogram(h, coarse, axis)
    assert out.sum() == pytest.approx(100.0)
    np.testing.assert_allclose(out[78:83], [0, 25, 50, 25, 0], atol=1e-9)
    # the identity on an equal scale, counts untouched
    assert resample_histogram(h, fine, fine) is not None
    np.testing.assert_array_equal(resample_histogram(h, fine, fine), h)


def test_grey_scale_conversion_round_trips_and_refuses_unknown_windows():
    a, b = GreyScale(255, W1), GreyScale(65535, W16)
    g = 117.25
    back = b.to_grey(a, a.to_grey(b, g))
    assert back == pytest.approx(g, abs=1e-9)
    att_a = W1[0] + g * (W1[1] - W1[0]) / 255
    att_b = W16[0] + a.to_grey(b, g) * (W16[1] - W16[0]) / 65535
    assert att_a == pytest.approx(att_b, abs=1e-12)
    with pytest.raises(ValueError, match="cannot compare grey values"):
        GreyScale(255).to_grey(b, 10.0)
    assert StudyThreshold(GreyScale(255), 99.5).grey(GreyScale(255)) == 99.5


def test_scans_that_cannot_be_measured_never_enter_the_pool():
    rng = np.random.default_rng(2)
    good = {f"f{i}": np.bincount(export(FEMURS[i], W1).ravel(), minlength=256) for i in range(3)}
    alone = pooled_otsu(good, {n: GreyScale(255, W1) for n in good})
    air = np.bincount(np.clip(rng.normal(20, 3, 50_000), 0, 255).astype(int), minlength=256)
    bone = np.bincount(np.clip(rng.normal(240, 3, 50_000), 0, 255).astype(int), minlength=256)
    flat = np.zeros(256, np.int64)
    flat[77] = 10_000
    empty = np.zeros(256, np.int64)
    hists = {**good, "AIR": air, "ALLBONE": bone, "BLANK": flat, "ROUND0": empty}
    res = pooled_otsu(hists, {n: GreyScale(255, W1) for n in hists})
    assert res.members == ("f0", "f1", "f2")
    assert res.threshold == alone.threshold  # exactly what the good scans give alone
    assert "no bone to measure" in res.excluded["AIR"]
    assert "no marrow or background" in res.excluded["ALLBONE"]
    assert "every voxel has the grey value 77" in res.excluded["BLANK"]
    assert "no voxel with data" in res.excluded["ROUND0"]
    assert all(why.startswith(f"{n}: ") for n, why in res.excluded.items())


# ---------------------------------------------------------------------------------------------
# End to end: the same femurs under different windows and bit depths


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The three femurs exported under one window (``uniform``) and under three (``mixed``:
    W1 8-bit, W2 8-bit, W16 16-bit)."""
    root = tmp_path_factory.mktemp("windows")
    for i, att in enumerate(FEMURS):
        write(root / "uniform" / f"f{i}", att, W1)
    write(root / "mixed" / "f0", FEMURS[0], W1)
    write(root / "mixed" / "f1", FEMURS[1], W2)
    write(root / "mixed" / "f2", FEMURS[2], W16, dtype=np.uint16)
    return root


def _bvtv(summary) -> pd.Series:
    df = pd.DataFrame(summary.rows).set_index("scan")
    assert (df.status == "ok").all(), df.get("error")
    return df["BV/TV"]


def test_different_windows_and_bit_depths_give_the_same_bone(studies, tmp_path):
    uni = run_analysis([studies / "uniform"], tmp_path / "u", CFG, group="g", write_qc=False)
    mix = run_analysis([studies / "mixed"], tmp_path / "m", CFG, group="g", write_qc=False)
    assert uni.threshold is not None and mix.threshold is None  # one grey only in 'uniform'
    assert "common attenuation axis" in mix.threshold_method
    # one attenuation threshold, within the rounding of the coarsest grey step (W2, 8-bit)
    coarse = (W2[1] - W2[0]) / 255
    assert mix.threshold_attenuation == pytest.approx(uni.threshold_attenuation, abs=coarse)
    # "within the rounding of the grey levels": the BV/TV change a threshold shift of one
    # coarse grey step makes in the uniform study bounds the difference
    t = uni.threshold_attenuation
    lo = run_analysis([studies / "uniform"], tmp_path / "lo",
                      CFG.replace(threshold_attenuation=t - coarse), group="g", write_qc=False)
    hi = run_analysis([studies / "uniform"], tmp_path / "hi",
                      CFG.replace(threshold_attenuation=t + coarse), group="g", write_qc=False)
    tol = (_bvtv(lo) - _bvtv(hi)).abs()
    diff = (_bvtv(mix) - _bvtv(uni)).abs()
    assert (tol < 2.0).all()  # one grey step is a small shift ...
    assert (diff <= tol).all(), pd.DataFrame({"diff": diff, "tol": tol})  # ... and bounds it
    rows = pd.DataFrame(mix.rows).set_index("scan")
    # each scan's grey threshold is the attenuation through its own window
    for name, (w, gmax) in {"f0": (W1, 255), "f1": (W2, 255), "f2": (W16, 65535)}.items():
        att = w[0] + rows.loc[name, "threshold"] * (w[1] - w[0]) / gmax
        assert att == pytest.approx(mix.threshold_attenuation, rel=1e-12)
        assert rows.loc[name, "threshold_attenuation"] == mix.threshold_attenuation
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["threshold_scans"] == ["f0", "f1", "f2"]
    assert run["threshold_attenuation"] == mix.threshold_attenuation


def test_the_issue_reproduction_same_crop_two_windows(tmp_path):
    """The same femur crop exported under two windows: before, one grey threshold gave BV/TV
    31.8 % and 22.8 %; now both are segmented at one attenuation."""
    root = tmp_path / "scans"
    write(root / "A", FEMURS[1], W1)
    write(root / "B", FEMURS[1], W2)
    s = run_analysis([root], tmp_path / "out", CFG, group="g", write_qc=False)
    bvtv = _bvtv(s)
    coarse = (W2[1] - W2[0]) / 255
    lo = run_analysis([root / "A"], tmp_path / "lo", CFG.replace(
        threshold_attenuation=s.threshold_attenuation - coarse), group="g", write_qc=False)
    hi = run_analysis([root / "A"], tmp_path / "hi", CFG.replace(
        threshold_attenuation=s.threshold_attenuation + coarse), group="g", write_qc=False)
    tol = abs(_bvtv(lo)["A"] - _bvtv(hi)["A"])
    assert abs(bvtv["A"] - bvtv["B"]) <= tol
    rows = pd.DataFrame(s.rows).set_index("scan")
    assert rows.loc["A", "threshold"] != rows.loc["B", "threshold"]  # different grey values


def test_a_scan_without_window_in_a_study_whose_windows_differ_fails_alone(studies, tmp_path):
    import shutil

    root = tmp_path / "scans"
    shutil.copytree(studies / "mixed", root)
    write(root / "nolog_window", FEMURS[0], W1, settings=NO_WINDOW)
    s = run_analysis([root], tmp_path / "out", CFG, group="g", write_qc=False)
    df = pd.DataFrame(s.rows).set_index("scan")
    assert list(df.status) == ["ok", "ok", "ok", "failed"]
    err = df.loc["nolog_window", "error"]
    assert err.startswith("nolog_window: its log gives no CS window")
    assert "the study's scans have different CS windows or bit depths" in err
    # in a study of one window it borrows that window, and its numbers are the others'
    u = tmp_path / "u"
    shutil.copytree(studies / "uniform", u)
    write(u / "nolog_window", FEMURS[0], W1, settings=NO_WINDOW)
    s = run_analysis([u], tmp_path / "o2", CFG, group="g", write_qc=False)
    df = pd.DataFrame(s.rows).set_index("scan")
    assert (df.status == "ok").all()
    assert df.loc["nolog_window", "BV/TV"] == df.loc["f0", "BV/TV"]
    assert np.isnan(df.loc["nolog_window", "threshold_attenuation"])


def test_a_grey_threshold_refuses_scans_of_another_window(studies, tmp_path):
    s = run_analysis([studies / "mixed"], tmp_path / "out", CFG.replace(threshold=100.0),
                     group="g", write_qc=False)
    df = pd.DataFrame(s.rows).set_index("scan")
    assert df.loc["f0", "status"] == "ok"  # ties: the first scan's scale is the study's
    for name in ("f1", "f2"):
        assert df.loc[name, "status"] == "failed"
        assert "the threshold 100 is a grey value, but this scan's grey scale" in \
            df.loc[name, "error"]
        assert "--threshold-attenuation" in df.loc[name, "error"]


def test_an_attenuation_threshold_is_each_scans_own_grey(studies, tmp_path):
    t = 0.036
    s = run_analysis([studies / "mixed"], tmp_path / "out",
                     CFG.replace(threshold_attenuation=t), group="g", write_qc=False)
    df = pd.DataFrame(s.rows).set_index("scan")
    assert (df.status == "ok").all() and s.threshold_method == "fixed attenuation"
    assert df.loc["f1", "threshold"] == pytest.approx((t - W2[0]) / (W2[1] - W2[0]) * 255)
    assert df.loc["f2", "threshold"] == pytest.approx((t - W16[0]) / (W16[1] - W16[0]) * 65535)
    assert (df.threshold_attenuation == t).all()


# ---------------------------------------------------------------------------------------------
# Issue 14 item 1: a failing scan never sets the others' threshold


@pytest.mark.parametrize("bad", ["ALLBONE", "AIR", "CONSTANT"])
def test_a_scan_that_cannot_be_measured_does_not_move_the_threshold(tmp_path, bad):
    root = tmp_path / "scans"
    write(root / "T2", FEMURS[0], W1)
    rng = np.random.default_rng(5)
    level = {"ALLBONE": 0.07, "AIR": 0.0, "CONSTANT": 0.03}[bad]
    noise = 0.0 if bad == "CONSTANT" else 0.002
    write(root / bad, level + rng.normal(0, noise, (40, 48, 48)) if noise else
          np.full((40, 48, 48), level), W1)
    alone = run_analysis([root / "T2"], tmp_path / "alone", CFG, group="g", write_qc=False)
    both = run_analysis([root], tmp_path / "both", CFG, group="g", write_qc=False)
    a = pd.DataFrame(alone.rows).set_index("scan").loc["T2"]
    b = pd.DataFrame(both.rows).set_index("scan")
    assert b.loc["T2", "threshold"] == a["threshold"]
    assert b.loc["T2", "BV/TV"] == a["BV/TV"]
    assert b.loc["T2", "threshold_method"] == "otsu (pooled over 1 scans)"
    assert b.loc[bad, "status"] == "failed" and b.loc[bad, "error"].startswith(f"{bad}: ")
    run = json.loads((tmp_path / "both" / "run.json").read_text())
    assert run["threshold_scans"] == ["T2"] and list(run["threshold_excluded"]) == [bad]
    why = {"ALLBONE": "no marrow or background", "AIR": "no bone to measure",
           "CONSTANT": "every voxel has the grey value"}[bad]
    assert why in b.loc[bad, "error"]


def test_methods_state_the_attenuation_threshold_when_grey_values_differ(studies, tmp_path):
    from ctmorph.report import make_report

    groups = {"f0": "sham", "f1": "sham", "f2": "OVX"}
    s = run_analysis([studies / "mixed"], tmp_path / "out", CFG, groups=groups, write_qc=False)
    paths = make_report(tmp_path / "out", control="sham", excel=False, figures=False)
    text = paths["methods"].read_text()
    att = f"{s.threshold_attenuation:.4g}"
    assert (f"one global threshold of {att} (attenuation, NRecon CS units; converted to each "
            "scan's grey values through its own CS window") in text, text


def test_sensitivity_varies_the_attenuation_when_grey_values_differ(studies, tmp_path):
    from ctmorph.report import make_report
    from ctmorph.sensitivity import run_sensitivity

    groups = {"f0": "sham", "f1": "sham", "f2": "OVX"}
    out = tmp_path / "out"
    main = run_analysis([studies / "mixed"], out, CFG, groups=groups, write_qc=False)
    sens = run_sensitivity([studies / "mixed"], out, CFG, main, percent=5, groups=groups)
    assert sens.unit == "attenuation" and sens.base == main.threshold_attenuation
    table = pd.read_csv(out / "sensitivity.csv")
    assert set(table.threshold_unit) == {"attenuation"}
    for change in (-5, 5):
        rows = table[table.threshold_change_pct == change].set_index("scan")
        assert (rows.status == "ok").all()
        expected = main.threshold_attenuation * (1 + change / 100)
        np.testing.assert_allclose(rows.threshold_attenuation, expected, rtol=1e-12)
        # each scan's grey threshold is that attenuation through its own window
        att_f1 = W2[0] + rows.loc["f1", "threshold"] * (W2[1] - W2[0]) / 255
        assert att_f1 == pytest.approx(expected, rel=1e-12)
    paths = make_report(out, control="sham", excel=False, figures=False)
    rep = pd.read_csv(paths["sensitivity"])
    assert set(rep.threshold_unit) == {"attenuation"}
    assert "the threshold in attenuation (NRecon CS units" in paths["methods"].read_text()
