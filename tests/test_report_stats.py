"""Group summaries and statistics checked against independent hand computations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ctmorph.report import group_summary, make_report, statistics_table


def _table():
    # Three groups with known values (BV/TV in %); one failed scan that must be ignored.
    data = {
        "sham": [31.0, 28.5, 30.2, 33.1],
        "OVX": [9.5, 11.2, 10.1],
        "OVX+Exos": [17.9, 19.4, 16.0, 18.8],
    }
    rows = []
    for g, vals in data.items():
        for i, v in enumerate(vals):
            rows.append({"scan": f"{g}_{i}", "group": g, "status": "ok", "error": "",
                         "BV/TV": v, "Tb.Th": 0.05 + 0.001 * i})
    rows.append({"scan": "bad", "group": "OVX", "status": "failed", "error": "x",
                 "BV/TV": np.nan, "Tb.Th": np.nan})
    return pd.DataFrame(rows), data


def test_group_summary_matches_numpy():
    df, data = _table()
    s = group_summary(df, control="sham")
    assert list(s[s.parameter == "BV/TV"].group) == ["sham", "OVX", "OVX+Exos"]
    for g, v in data.items():
        r = s[(s.parameter == "BV/TV") & (s.group == g)].iloc[0]
        v = np.array(v)
        assert r.n == v.size
        assert r["mean"] == pytest.approx(v.sum() / v.size)
        sd = np.sqrt(((v - v.mean()) ** 2).sum() / (v.size - 1))
        assert r["sd"] == pytest.approx(sd)
        assert r["sem"] == pytest.approx(sd / np.sqrt(v.size))


def test_anova_and_tukey_match_hand_computation():
    df, data = _table()
    st = statistics_table(df, control="sham")
    groups = ["sham", "OVX", "OVX+Exos"]
    x = [np.array(data[g]) for g in groups]
    grand = np.concatenate(x).mean()
    ssb = sum(v.size * (v.mean() - grand) ** 2 for v in x)
    ssw = sum(((v - v.mean()) ** 2).sum() for v in x)
    k, n = len(x), sum(v.size for v in x)
    f = (ssb / (k - 1)) / (ssw / (n - k))
    omni = st[(st.parameter == "BV/TV") & (st.test == "one-way ANOVA")].iloc[0]
    assert omni.statistic == pytest.approx(f)
    assert omni.p == pytest.approx(stats.f.sf(f, k - 1, n - k))
    mse = ssw / (n - k)
    for i in range(k):
        for j in range(i + 1, k):
            r = st[(st.parameter == "BV/TV") & (st.test == "Tukey HSD")
                   & (st.group1 == groups[i]) & (st.group2 == groups[j])].iloc[0]
            diff = x[j].mean() - x[i].mean()
            se = np.sqrt(mse / 2 * (1 / x[i].size + 1 / x[j].size))
            q = abs(diff) / se
            assert r.mean_diff == pytest.approx(diff)
            assert r.p_adj == pytest.approx(stats.studentized_range.sf(q, k, n - k), rel=1e-3)
            assert r.ci_low < diff < r.ci_high


def test_untestable_parameters_are_reported():
    df = pd.DataFrame({"scan": ["a", "b", "c"], "group": ["x", "y", "y"],
                       "status": ["ok"] * 3, "BV/TV": [1.0, 2.0, 3.0], "Tb.Th": [1.0] * 3})
    st = statistics_table(df)
    assert "fewer than two groups with n >= 2" in st[st.parameter == "BV/TV"].note.iloc[0]
    df["group"] = ["x", "x", "y"]
    df.loc[3] = ["d", "y", "ok", 4.0, 1.0]
    st = statistics_table(df)
    assert "constant" in st[st.parameter == "Tb.Th"].note.iloc[0]


def test_make_report_writes_csvs(tmp_path):
    df, _ = _table()
    df.to_csv(tmp_path / "morphometry.csv", index=False)
    paths = make_report(tmp_path)
    s = pd.read_csv(paths["group_summary"])
    assert list(s.columns[:6]) == ["parameter", "group", "n", "mean", "sd", "sem"]
    st = pd.read_csv(paths["statistics"])
    assert {"one-way ANOVA", "Tukey HSD"} <= set(st.test)
