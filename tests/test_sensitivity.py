"""Threshold sensitivity (``analyze --sensitivity P`` and its report section).

The survival logic is checked on crafted tables whose statistics have known answers:
multiplying every value by one constant leaves t and F (so every p) unchanged, two identical
samples differ with p = 1, and the p-values read are compared with scipy's ANOVA / Tukey HSD
/ t-test. The CLI runs end to end on small random-sponge phantoms (32³ voxels, `--roi full`),
where raising the threshold can only remove bone voxels: BV/TV must fall strictly.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from ctmorph.cli import cli
from ctmorph.errors import ConfigError
from ctmorph.io.writer import write_nrecon_folder
from ctmorph.phantoms import grey_from_mask, plates, random_trabecular
from ctmorph.report.sensitivity import (
    compare_conclusions,
    conclusion_of,
    pct_label,
    threshold_sensitivity,
)
from ctmorph.report.summary import statistics_table
from ctmorph.sensitivity import check_percent, variant_name

# equal deviations in every group: Levene's statistic is 0, so the report reads ANOVA + Tukey
DEV = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
GROUPS = ("sham", "OVX", "Exos")


def _table(values: dict[str, dict[str, np.ndarray]], threshold: float = 100.0) -> pd.DataFrame:
    """A morphometry table as load_results returns it: {parameter: {group: values}}."""
    rows = []
    first = next(iter(values.values()))
    for g, v in first.items():
        for i in range(len(v)):
            r = {"scan": f"{g}_{i}", "group": g, "status": "ok", "error": "",
                 "threshold": threshold}
            r.update({p: float(values[p][g][i]) for p in values})
            rows.append(r)
    return pd.DataFrame(rows)


def _main_values() -> dict[str, dict[str, np.ndarray]]:
    return {"BV/TV": {"sham": 30 + DEV, "OVX": 10 + DEV, "Exos": 20 + DEV},
            "Tb.Th": {"sham": 0.080 + DEV / 1000, "OVX": 0.070 + DEV / 1000,
                      "Exos": 0.075 + DEV / 1000}}


def _scaled(values, factor):
    return {p: {g: v * factor for g, v in gv.items()} for p, gv in values.items()}


def test_identical_tables_hold():
    main = _table(_main_values())
    res = threshold_sensitivity({-5.0: main.copy(), 0: main, 5.0: main.copy()},
                                control="sham", model="OVX")
    assert res.holds and set(res.changes) == {"BV/TV", "Tb.Th"}
    assert res.table["conclusions_hold"].all()
    assert (res.table["pct_change_vs_main"] == 0).all()
    assert "every group conclusion holds" in res.sentence
    assert "for all 2 parameters tested" in res.sentence


def test_scaling_every_value_keeps_every_p_value():
    # t and F are invariant under a common scale factor, so the conclusions must hold and the
    # group means move by exactly the factor
    main_v = _main_values()
    variants = {-5.0: _table(_scaled(main_v, 1.1), 95.0), 0: _table(main_v),
                5.0: _table(_scaled(main_v, 0.9), 105.0)}
    res = threshold_sensitivity(variants, control="sham", model="OVX")
    assert res.holds
    t = res.table
    for pct, factor in ((-5.0, 1.1), (5.0, 0.9)):
        block = t[t["threshold_change_pct"] == pct]
        np.testing.assert_allclose(block["pct_change_vs_main"], 100 * (factor - 1), rtol=1e-9)
        main_p = t[(t["threshold_change_pct"] == 0) & (t["parameter"] == "BV/TV")]["omnibus_p"]
        np.testing.assert_allclose(block[block["parameter"] == "BV/TV"]["omnibus_p"],
                                   main_p.iloc[0], rtol=1e-6)
    assert res.thresholds == {-5.0: 95.0, 0: 100.0, 5.0: 105.0}
    assert "(95 and 105 grey; main threshold 100 grey)" in res.sentence


def test_a_flip_at_one_variant_does_not_survive():
    main_v = _main_values()
    flipped = {p: dict(gv) for p, gv in main_v.items()}
    flipped["Tb.Th"]["OVX"] = main_v["Tb.Th"]["sham"].copy()  # identical to sham: p = 1
    res = threshold_sensitivity({-5.0: _table(main_v), 0: _table(main_v),
                                 5.0: _table(flipped)}, control="sham", model="OVX")
    assert not res.holds
    assert res.changes["BV/TV"] == []
    (change,) = [c for c in res.changes["Tb.Th"] if c.startswith("sham vs OVX")]
    # oracle: scipy's Tukey HSD on the same samples
    p_main = sps.tukey_hsd(*(main_v["Tb.Th"][g] for g in GROUPS)).pvalue[0, 1]
    assert p_main < 0.05
    p_text = "p < 0.001" if p_main < 0.001 else f"p = {p_main:.3f}"
    assert change == f"sham vs OVX: {p_text} at the main threshold, 1.000 at +5 %"
    assert "the conclusions change for Tb.Th (sham vs OVX" in res.sentence
    assert "The conclusions of the other 1 parameters tested hold" in res.sentence
    t = res.table
    rows = t[(t["parameter"] == "Tb.Th") & (t["threshold_change_pct"] == 5.0)]
    assert not rows["conclusions_hold"].any()
    assert rows["omnibus_test"].iloc[0] == "one-way ANOVA"
    f_p = sps.f_oneway(*(flipped["Tb.Th"][g] for g in GROUPS)).pvalue
    assert rows["omnibus_p"].iloc[0] == pytest.approx(f_p, rel=1e-9)
    assert t[(t["parameter"] == "Tb.Th") & (t["threshold_change_pct"] == -5.0)][
        "conclusions_hold"].all()


def test_a_reversed_difference_is_a_change():
    main_v = _main_values()
    rev = {p: dict(gv) for p, gv in main_v.items()}
    rev["BV/TV"]["OVX"], rev["BV/TV"]["sham"] = main_v["BV/TV"]["sham"], main_v["BV/TV"]["OVX"]
    res = threshold_sensitivity({0: _table(main_v), 5.0: _table(rev)}, control="sham",
                                model=None)
    assert "sham vs OVX: the difference changes sign at +5 %" in res.changes["BV/TV"]
    assert "At +5 % of the threshold" in res.sentence


def test_two_groups_read_the_t_test():
    v = {"BV/TV": {"sham": 30 + DEV, "OVX": 27 + DEV}}
    st = statistics_table(_table(v), "sham")
    c = conclusion_of(st, "BV/TV", ["sham", "OVX"], "sham", None, 0.05)
    assert c.omnibus_test == "Student's t-test" and c.posthoc_test == "Student's t-test"
    p = sps.ttest_ind(30 + DEV, 27 + DEV).pvalue
    assert c.omnibus_p == pytest.approx(p, rel=1e-9) and c.pairs[("sham", "OVX")][0] == \
        pytest.approx(p, rel=1e-9)
    assert c.pairs[("sham", "OVX")][1] == pytest.approx(-3.0)  # OVX - sham
    assert c.significant == ({("sham", "OVX"): -1} if p < 0.05 else {})
    assert compare_conclusions(c, c, "+5 %") == []


def test_a_scan_failing_at_a_variant_is_left_out_of_every_comparison():
    main_v = _main_values()
    main = _table(main_v)
    plus = main.copy()
    plus.loc[plus["scan"] == "OVX_0", ["status", "error"]] = ["failed", "OVX_0: no voxel"]
    res = threshold_sensitivity({0: main, 5.0: plus}, control="sham", model="OVX")
    assert any(n.startswith("OVX_0 left out of the comparison: failed at +5 % (OVX_0: no "
                            "voxel)") for n in res.notes)
    assert any("compared on the 14 scans" in n for n in res.notes)
    # same scans at both thresholds, same values: the conclusions hold and n = 4 for OVX
    assert res.holds
    t = res.table
    assert set(t.loc[t["group"] == "OVX", "n"]) == {4}


def test_bad_inputs():
    main = _table(_main_values())
    with pytest.raises(ConfigError, match="needs the main threshold"):
        threshold_sensitivity({5.0: main}, control="sham")
    with pytest.raises(ConfigError, match="at least one changed threshold"):
        threshold_sensitivity({0: main}, control="sham")
    for bad in (0, 50, -1, float("nan"), "x"):
        with pytest.raises(ConfigError, match="sensitivity must be a percentage"):
            check_percent(bad)
    assert check_percent("2.5") == 2.5
    assert variant_name(-5.0) == "minus5" and variant_name(2.5) == "plus2.5"
    assert pct_label(-5.0) == "\u22125 %" and pct_label(5) == "+5 %"


# ---------------------------------------------------------------------------------------------
# end to end through the CLI


def _run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sens")
    lines = ["scan,group"]
    for g, bv in {"sham": 0.30, "OVX": 0.12, "Exos": 0.20}.items():
        for i in range(2):
            mask = random_trabecular(32, bv_tv=bv, scale=2.0, seed=i + int(100 * bv))
            grey = grey_from_mask(mask, blur=1.0, noise=4.0, seed=i)
            write_nrecon_folder(root / "scans" / f"{g}_{i}", grey, voxel_size_um=20.0,
                                file_type="tif")
            lines.append(f"{g}_{i},{g}")
    (root / "groups.csv").write_text("\n".join(lines) + "\n")
    out = root / "out"
    args = ["analyze", root / "scans", "--groups", root / "groups.csv", "--roi", "full",
            "--no-qc", "--sensitivity", "5", "-o", out]
    res = _run(args)
    assert res.exit_code == 0, res.output
    return root, out, args, res


def test_sub_runs_use_the_threshold_times_one_plus_minus_p(study):
    _, out, _, res = study
    main_thr = json.loads((out / "run.json").read_text())["threshold"]
    assert json.loads((out / "run.json").read_text())["threshold_method"].startswith("otsu")
    for name, factor in (("minus5", 0.95), ("plus5", 1.05)):
        run = json.loads((out / "sensitivity" / name / "run.json").read_text())
        assert run["threshold"] == pytest.approx(main_thr * factor, rel=1e-12)
        sub = pd.read_csv(out / "sensitivity" / name / "morphometry.csv")
        assert (sub["status"] == "ok").all() and len(sub) == 6
        np.testing.assert_allclose(sub["threshold"], main_thr * factor, rtol=1e-12)
        assert not (out / "sensitivity" / name / "sham_0" / "qc").exists()
    assert f"{main_thr * 0.95:.6g}" in res.output and "sensitivity ±5 %" in res.output


def test_sensitivity_table_and_bv_tv_direction(study):
    _, out, _, _ = study
    main = pd.read_csv(out / "morphometry.csv").set_index("scan")
    t = pd.read_csv(out / "sensitivity.csv")
    assert list(t.columns[:7]) == ["scan", "group", "threshold_change_pct", "threshold_unit",
                                   "status", "error", "threshold"]
    assert set(t.threshold_unit) == {"grey"}  # one grey scale in the study: the grey varies
    assert sorted(t["threshold_change_pct"].unique()) == [-5.0, 0.0, 5.0] and len(t) == 18
    wide = t.pivot(index="scan", columns="threshold_change_pct", values="BV/TV")
    # the 0 % rows are the main run's numbers
    np.testing.assert_array_equal(wide[0.0], main.loc[wide.index, "BV/TV"])
    # bone = smoothed grey > threshold, so a higher threshold gives a subset of the bone
    # (despeckling keeps the inclusion); blurred edges put voxels between the thresholds,
    # so the decrease is strict
    assert (wide[-5.0] > wide[0.0]).all() and (wide[0.0] > wide[5.0]).all()
    tv = t.pivot(index="scan", columns="threshold_change_pct", values="TV")
    assert (tv.nunique(axis=1) == 1).all()  # --roi full: the VOI does not depend on it
    for col in ("Tb.Th", "Tb.Sp", "Conn.D", "SMI"):
        assert col in t.columns


def test_report_states_whether_conclusions_survive(study):
    _, out, _, _ = study
    res = _run(["report", out, "--control", "sham", "--model", "OVX", "--no-figures",
                "--no-excel"])
    assert res.exit_code == 0, res.output
    rep = pd.read_csv(out / "report" / "sensitivity.csv")
    assert list(rep.columns[:5]) == ["parameter", "threshold_change_pct", "threshold",
                                     "threshold_unit", "group"]
    thr = json.loads((out / "run.json").read_text())["threshold"]
    block = rep[rep["parameter"] == "BV/TV"]
    np.testing.assert_allclose(sorted(block["threshold"].unique()),
                               [thr * 0.95, thr, thr * 1.05], rtol=1e-9)
    bv = block.pivot(index="group", columns="threshold_change_pct", values="pct_change_vs_main")
    assert (bv[-5.0] > 0).all() and (bv[5.0] < 0).all() and (bv[0.0] == 0).all()
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    lo, hi = f"{thr * 0.95:.4g}", f"{thr * 1.05:.4g}"
    assert "Threshold sensitivity" in html
    assert f"At ±5 % of the threshold ({lo} and {hi} grey" in html
    methods = (out / "report" / "methods.md").read_text(encoding="utf-8")
    assert "Threshold sensitivity: every scan was analysed again with the grey-value " \
           "threshold lowered and raised by 5 %" in methods
    verdict = "every group conclusion holds" if rep["conclusions_hold"].all() else \
        "the conclusions change for"
    assert verdict in html and verdict in methods


def test_rerun_reuses_the_sub_runs(study):
    _, out, args, _ = study
    res = _run(args)
    assert res.exit_code == 0, res.output
    assert "sensitivity ±5 %" in res.output and "12 unchanged and reused" in res.output


def test_a_scan_failing_only_in_a_sub_run_exits_1(tmp_path):
    # bone at grey 135, no blur or noise, no smoothing: threshold 130 finds it, 136.5 does not
    mask = plates((30, 30, 30), 5, 5, axis=0)
    grey = grey_from_mask(mask, bone=135.0, background=60.0, blur=0.0, noise=0.0)
    write_nrecon_folder(tmp_path / "scans" / "dim", grey, voxel_size_um=20.0, file_type="tif")
    out = tmp_path / "out"
    res = _run(["analyze", tmp_path / "scans" / "dim", "--group", "g", "--roi", "full",
                "--threshold", "130", "--smooth-sigma", "0", "--no-qc", "--sensitivity", "5",
                "-o", out])
    assert res.exit_code == 1
    assert "failed at +5 % of the threshold: dim:" in res.output
    assert "Traceback" not in res.output
    t = pd.read_csv(out / "sensitivity.csv", keep_default_na=False)
    by = t.set_index("threshold_change_pct")
    assert list(by["status"]) == ["ok", "ok", "failed"]
    assert "136.5" in by.loc[5.0, "error"]
    assert pd.read_csv(out / "morphometry.csv")["status"].tolist() == ["ok"]


@pytest.mark.parametrize("value", ["0", "50", "-5", "abc", "nan", "inf"])
def test_bad_sensitivity_values_exit_2(tmp_path, value):
    res = _run(["analyze", tmp_path, "-o", tmp_path / "o", "--sensitivity", value])
    assert res.exit_code == 2
    err = [ln for ln in res.output.splitlines() if ln.startswith("Error")]
    assert err == [f"Error: Invalid value for '--sensitivity': expected a percentage between "
                   f"0 and 50 (exclusive), got '{value}'"]
    assert not (tmp_path / "o").exists()


def test_manifest_runs_carry_their_scans_into_the_sub_runs(study, tmp_path):
    root, _, _, _ = study
    manifest = tmp_path / "study.csv"
    manifest.write_text(f"scan,group\n{root / 'scans' / 'sham_0'},sham\n"
                        f"{root / 'scans' / 'OVX_0'},OVX\n")
    out = tmp_path / "out"
    res = _run(["analyze", "--manifest", manifest, "--roi", "full", "--threshold", "110",
                "--no-qc", "--sensitivity", "10", "-o", out])
    assert res.exit_code == 0, res.output
    for name, thr in (("minus10", 99.0), ("plus10", 121.0)):
        sub = pd.read_csv(out / "sensitivity" / name / "morphometry.csv")
        assert sorted(sub["scan"]) == ["OVX_0", "sham_0"]
        assert dict(zip(sub["scan"], sub["group"], strict=True)) == {"sham_0": "sham",
                                                                     "OVX_0": "OVX"}
        np.testing.assert_allclose(sub["threshold"], thr, rtol=1e-12)
    t = pd.read_csv(out / "sensitivity.csv")
    assert sorted(t["threshold_change_pct"].unique()) == [-10.0, 0.0, 10.0] and len(t) == 6
