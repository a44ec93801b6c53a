"""Per-group summaries, statistics and OVX-model effects for each morphometric parameter.

Tables are long-form DataFrames (one row per parameter × group, or per test / pair) so they
write to CSV, Markdown and Excel alike. Groups with fewer than two animals, constant
parameters and missing values are reported as not tested, with the reason, in the ``note``
column, never silently dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import stats as st
from .data import group_order, group_samples, parameters

__all__ = [
    "ANOVA", "TUKEY", "WELCH_ANOVA", "GAMES_HOWELL", "KRUSKAL", "DUNN", "STUDENT_T", "WELCH_T",
    "DUNNETT", "LEVENE", "SHAPIRO", "SUMMARY_COLUMNS", "STAT_COLUMNS", "MODEL_COLUMNS",
    "group_summary", "statistics_table", "model_effects", "chosen_family", "pair_result",
    "families_used", "OMNIBUS_OF",
]

logger = logging.getLogger(__name__)

ANOVA = "one-way ANOVA"
TUKEY = "Tukey HSD"
WELCH_ANOVA = "Welch's ANOVA"
GAMES_HOWELL = "Games-Howell"
KRUSKAL = "Kruskal-Wallis"
DUNN = "Dunn (Holm)"
STUDENT_T = "Student's t-test"
WELCH_T = "Welch's t-test"
DUNNETT = "Dunnett"
LEVENE = "Levene"
SHAPIRO = "Shapiro-Wilk"

#: post-hoc family -> its omnibus test (None: the pair test is the whole analysis)
OMNIBUS_OF = {TUKEY: ANOVA, GAMES_HOWELL: WELCH_ANOVA, DUNN: KRUSKAL,
              STUDENT_T: None, WELCH_T: None}

SUMMARY_COLUMNS = ["parameter", "group", "n", "mean", "sd", "sem", "median", "iqr",
                   "n_missing"]
STAT_COLUMNS = ["parameter", "test", "statistic", "p", "group1", "group2", "mean_diff",
                "ci_low", "ci_high", "p_adj", "df1", "df2", "effect_size",
                "effect_size_measure", "effect_ci_low", "effect_ci_high", "recommended", "note"]
MODEL_COLUMNS = ["parameter", "group", "n", "mean", "control", "pct_change_vs_control",
                 "p_adj_vs_control", "model", "pct_loss_prevented", "p_adj_vs_model", "test",
                 "note"]


def group_summary(df: pd.DataFrame, control: str | None = None,
                  model: str | None = None) -> pd.DataFrame:
    """Long-form descriptive table of the successful scans.

    Parameters
    ----------
    df : DataFrame
        ``morphometry.csv`` as read by :func:`load_results`.
    control, model : str, optional
        Shown first and second.

    Returns
    -------
    DataFrame
        ``parameter, group, n, mean, sd, sem, median, iqr, n_missing``. ``sd`` is the sample
        standard deviation (ddof = 1) and ``sem = sd / sqrt(n)``, both empty for n < 2;
        ``iqr`` = 75th - 25th percentile (linear interpolation); ``n_missing`` counts
        successful scans without a value for the parameter.
    """
    ok = df[df["status"] == "ok"]
    order = group_order(ok["group"].tolist(), control, model)
    recs = []
    for p in parameters(df):
        samples = group_samples(df, p, order)
        for g in order:
            v = samples[g]
            n = int(v.size)
            sd = float(np.std(v, ddof=1)) if n >= 2 else math.nan
            q75, q25 = np.percentile(v, [75, 25]) if n else (math.nan, math.nan)
            recs.append({
                "parameter": p, "group": g, "n": n,
                "mean": float(np.mean(v)) if n else math.nan,
                "sd": sd,
                "sem": sd / math.sqrt(n) if n >= 2 else math.nan,
                "median": float(np.median(v)) if n else math.nan,
                "iqr": float(q75 - q25) if n else math.nan,
                "n_missing": int((ok["group"] == g).sum()) - n,
            })
    return pd.DataFrame(recs, columns=SUMMARY_COLUMNS)


@dataclass
class _Ctx:
    parameter: str
    groups: list[str]
    xs: list[np.ndarray]
    note: str
    g_cache: dict[tuple[int, int], tuple[float, float, float]]

    def hedges(self, i: int, j: int) -> tuple[float, float, float]:
        if (i, j) not in self.g_cache:
            self.g_cache[(i, j)] = st.hedges_g(self.xs[i], self.xs[j])
        return self.g_cache[(i, j)]

    def omnibus_row(self, test: str, res: st.Omnibus | None, measure: str = "",
                    note: str = "") -> dict[str, Any]:
        row: dict[str, Any] = {"parameter": self.parameter, "test": test,
                               "note": "; ".join(s for s in (note, self.note) if s)}
        if res is not None:
            row.update(statistic=res.statistic, p=res.p, df1=res.df1, df2=res.df2)
            if measure:
                row.update(effect_size=res.effect_size, effect_size_measure=measure)
        return row

    def pair_rows(self, test: str, pairs: list[st.Pair], note: str = "") -> list[dict]:
        rows = []
        for pr in pairs:
            g, glo, ghi = self.hedges(pr.i, pr.j)
            rows.append({
                "parameter": self.parameter, "test": test,
                "group1": self.groups[pr.i], "group2": self.groups[pr.j],
                "statistic": pr.statistic, "df1": pr.df, "mean_diff": pr.mean_diff,
                "ci_low": pr.ci_low, "ci_high": pr.ci_high, "p_adj": pr.p_adj,
                "effect_size": g, "effect_size_measure": "Hedges' g",
                "effect_ci_low": glo, "effect_ci_high": ghi, "note": note,
            })
        return rows


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _tests_for_parameter(parameter: str, samples: dict[str, np.ndarray], order: list[str],
                         control: str | None, nonparametric: bool,
                         alpha: float, dunnett: bool = True) -> list[dict[str, Any]]:
    usable = [g for g in order if samples[g].size >= 2]
    skipped = [f"{g} (n = {samples[g].size})" for g in order if samples[g].size < 2]
    omni_name = KRUSKAL if nonparametric else ANOVA

    def untested(reason: str) -> list[dict[str, Any]]:
        return [{"parameter": parameter, "test": omni_name, "note": f"not tested: {reason}"}]

    if len(usable) < 2:
        sizes = ", ".join(f"{g} n = {samples[g].size}" for g in order) or "no groups"
        return untested(f"fewer than two groups with n >= 2 ({sizes})")
    xs = [samples[g] for g in usable]
    values = np.concatenate(xs)
    if np.ptp(values) == 0:
        return untested(f"the parameter is constant (every value = {values[0]:.6g})")
    sds = [float(np.std(x, ddof=1)) for x in xs]
    if all(s == 0 for s in sds):
        return untested("no variation within any group (every group is constant)")
    ctx = _Ctx(parameter, usable, xs,
               f"groups with n < 2 left out: {', '.join(skipped)}" if skipped else "", {})
    k = len(usable)

    with np.errstate(divide="ignore", invalid="ignore"):
        lev = sps.levene(*xs, center="median")
    # With n <= 2 everywhere the deviations from the medians are equal within each group:
    # Levene's F is 0/0 or an artefact of rounding.
    lev_ok = max(x.size for x in xs) > 2 and bool(np.isfinite(lev.statistic))
    lev_p = float(lev.pvalue) if lev_ok else math.nan
    differ = bool(lev_p < alpha)
    welch_ok = all(s > 0 for s in sds)
    if nonparametric:
        chosen = DUNN
    elif k == 2:
        chosen = WELCH_T if differ else STUDENT_T
    elif differ and welch_ok:
        chosen = GAMES_HOWELL
    else:
        chosen = TUKEY
    lev_note = (f"Levene {_fmt_p(lev_p)} < {alpha:g}: variances differ"
                if differ else "")

    rows: list[dict[str, Any]] = []
    resid = np.concatenate([x - x.mean() for x in xs])
    resid_sw = _shapiro_row(parameter, "", resid, "residuals from the group means")
    anova_note = ""
    if differ and chosen == GAMES_HOWELL:
        anova_note = f"{lev_note}; read {WELCH_ANOVA} and {GAMES_HOWELL}"
    elif differ and not welch_ok and not nonparametric and k > 2:
        anova_note = f"{lev_note}, but Welch's ANOVA needs a non-zero variance in every group"
    if not nonparametric and resid_sw.get("p", 1.0) < alpha:
        anova_note = "; ".join(n for n in (anova_note, (
            f"Shapiro-Wilk on the residuals {_fmt_p(resid_sw['p'])}: not normal, consider "
            "the non-parametric analysis")) if n)
    rows.append(ctx.omnibus_row(ANOVA, st.anova_oneway(xs), "eta squared", anova_note))
    rows += ctx.pair_rows(TUKEY, st.tukey_hsd(xs))

    if welch_ok:
        rows.append(ctx.omnibus_row(WELCH_ANOVA, st.welch_anova(xs), "",
                                    f"read this: {lev_note}" if chosen == GAMES_HOWELL else ""))
    else:
        zero = ", ".join(g for g, s in zip(usable, sds, strict=True) if s == 0)
        rows.append(ctx.omnibus_row(WELCH_ANOVA, None,
                                    note=f"not tested: no variance within {zero}"))
    rows += ctx.pair_rows(GAMES_HOWELL, st.games_howell(xs))

    if k == 2:
        for name, eq in ((STUDENT_T, True), (WELCH_T, False)):
            pr = st.t_test(xs[0], xs[1], equal_var=eq)
            (row,) = ctx.pair_rows(name, [pr], f"read this: {lev_note}" if
                                   (name == WELCH_T and chosen == WELCH_T) else "")
            row["p"] = pr.p_adj
            rows.append(row)

    if nonparametric:
        rows.append(ctx.omnibus_row(KRUSKAL, st.kruskal_wallis(xs), "epsilon squared"))
        rows += ctx.pair_rows(DUNN, st.dunn_holm(xs))

    if dunnett and control is not None and control in usable:
        rows += ctx.pair_rows(DUNNETT, st.dunnett(xs, usable.index(control)),
                              f"many-to-one against {control}")

    if lev_ok:
        rows.append({"parameter": parameter, "test": LEVENE, "statistic": float(lev.statistic),
                     "p": lev_p, "df1": k - 1, "df2": values.size - k,
                     "note": "centred on the group medians (Brown-Forsythe)"})
    else:
        rows.append({"parameter": parameter, "test": LEVENE,
                     "note": "not tested: n <= 2 in every group, or the absolute deviations "
                             "from the group medians do not vary within groups"})
    for g, x in zip(usable, xs, strict=True):
        rows.append(_shapiro_row(parameter, g, x))
    rows.append(resid_sw)

    for r in rows:
        r["recommended"] = r["test"] == chosen or r["test"] == OMNIBUS_OF.get(chosen)
    return rows


def _shapiro_row(parameter: str, group: str, x: np.ndarray, what: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"parameter": parameter, "test": SHAPIRO, "group1": group}
    if x.size < 3:
        row["note"] = f"not tested: n = {x.size} < 3"
    elif np.ptp(x) == 0:
        row["note"] = "not tested: all values equal"
    else:
        res = sps.shapiro(x)
        row.update(statistic=float(res.statistic), p=float(res.pvalue), note=what)
    return row


def statistics_table(df: pd.DataFrame, control: str | None = None, *,
                     model: str | None = None, nonparametric: bool = False,
                     alpha: float = 0.05, dunnett: bool = True) -> pd.DataFrame:
    """Omnibus tests, post-hoc pairs, effect sizes and assumption checks per parameter.

    Parameters
    ----------
    df : DataFrame
        ``morphometry.csv`` as read by :func:`load_results`; failed scans are ignored.
    control : str, optional
        Control group: shown first and compared with every other group by Dunnett's test.
    model : str, optional
        Disease-model group (e.g. ``OVX``), shown second.
    nonparametric : bool
        Also run Kruskal-Wallis with Dunn's test (Holm) and read those.
    alpha : float
        Level for Levene's test choosing between the classical and the Welch analysis.
    dunnett : bool
        Run Dunnett's test against the control (never the test read for the marks; the
        threshold sensitivity leaves it out, as it is the slowest test here).

    Returns
    -------
    DataFrame
        Columns :data:`STAT_COLUMNS`. Per parameter: ``one-way ANOVA`` (F, p, df, η²) and
        ``Tukey HSD`` pairs; ``Welch's ANOVA`` and ``Games-Howell`` pairs; with two groups
        ``Student's t-test`` and ``Welch's t-test``; with ``nonparametric`` ``Kruskal-Wallis``
        (ε²) and ``Dunn (Holm)`` pairs; ``Dunnett`` pairs against the control;
        ``Levene`` (median-centred) and ``Shapiro-Wilk`` per group and on the residuals.
        Pair rows: ``mean_diff = mean(group2) - mean(group1)`` with its CI, ``p_adj``, Hedges'
        g (group2 vs group1) with its 95 % CI. ``recommended`` marks the omnibus test and
        post-hoc family to read: Kruskal-Wallis/Dunn when ``nonparametric``; else with two
        groups Student's t (Welch's t when Levene's p < alpha); else ANOVA/Tukey (Welch/
        Games-Howell when Levene's p < alpha). Parameters that cannot be tested get one row
        with ``note = "not tested: <why>"``.
    """
    ok = df[df["status"] == "ok"]
    order = group_order(ok["group"].tolist(), control, model)
    recs: list[dict[str, Any]] = []
    for p in parameters(df):
        recs += _tests_for_parameter(p, group_samples(df, p, order), order, control,
                                     nonparametric, alpha, dunnett)
    defaults = {"group1": "", "group2": "", "effect_size_measure": "", "recommended": False,
                "note": ""}
    recs = [{**defaults, **{k: v for k, v in r.items() if v is not None}} for r in recs]
    out = pd.DataFrame(recs, columns=STAT_COLUMNS)
    out["recommended"] = out["recommended"].astype(bool)
    return out


def chosen_family(statistics: pd.DataFrame, parameter: str) -> tuple[str | None, str | None]:
    """``(post-hoc test, omnibus test)`` recommended for ``parameter`` (None, None if untested)."""
    rows = statistics[(statistics["parameter"] == parameter) & statistics["recommended"]]
    pair = rows[rows["group2"] != ""]
    if pair.empty:
        return None, None
    post = str(pair["test"].iloc[0])
    return post, OMNIBUS_OF.get(post)


def pair_result(statistics: pd.DataFrame, parameter: str, a: str, b: str,
                test: str | None = None) -> pd.Series | None:
    """The pair row comparing groups ``a`` and ``b`` (either order) of ``test``.

    ``test=None`` takes the recommended post-hoc family. Returns None when there is none.
    """
    s = statistics[statistics["parameter"] == parameter]
    s = s[s["recommended"]] if test is None else s[s["test"] == test]
    hit = s[((s["group1"] == a) & (s["group2"] == b)) | ((s["group1"] == b) & (s["group2"] == a))]
    return hit.iloc[0] if not hit.empty else None


def model_effects(summary: pd.DataFrame, statistics: pd.DataFrame, control: str | None,
                  model: str | None = None) -> pd.DataFrame:
    """% change against the control and % of the model-induced change prevented.

    Parameters
    ----------
    summary, statistics : DataFrame
        From :func:`group_summary` and :func:`statistics_table`.
    control : str or None
        Reference group (sham). Without it (or when absent from the data) the table is empty.
    model : str, optional
        Disease-model group (OVX): adds ``pct_loss_prevented`` =
        100 (treated - model) / (control - model) for every other group.

    Returns
    -------
    DataFrame
        Columns :data:`MODEL_COLUMNS`, one row per parameter and non-control group, with the
        recommended post-hoc p-values against the control and the model. The note says when
        the model effect itself is not significant (then the % prevented means little).
    """
    recs: list[dict[str, Any]] = []
    groups = set(summary["group"])
    if control is None or control not in groups:
        return pd.DataFrame(recs, columns=MODEL_COLUMNS)
    use_model = model if model is not None and model in groups and model != control else None
    for p, block in summary.groupby("parameter", sort=False):
        means = dict(zip(block["group"], block["mean"], strict=True))
        c_mean = means.get(control, math.nan)
        post, _ = chosen_family(statistics, p)
        model_p = math.nan
        if use_model is not None:
            r = pair_result(statistics, p, control, use_model)
            model_p = float(r["p_adj"]) if r is not None else math.nan
        for _, row in block.iterrows():
            g = row["group"]
            if g == control:
                continue
            rec: dict[str, Any] = {
                "parameter": p, "group": g, "n": row["n"], "mean": row["mean"],
                "control": control,
                "pct_change_vs_control": st.percent_change(row["mean"], c_mean),
                "test": post or "", "note": "",
            }
            r = pair_result(statistics, p, control, g)
            rec["p_adj_vs_control"] = float(r["p_adj"]) if r is not None else math.nan
            if use_model is not None and g != use_model:
                m_mean = means.get(use_model, math.nan)
                rec["model"] = use_model
                rec["pct_loss_prevented"] = st.percent_prevented(row["mean"], m_mean, c_mean)
                r = pair_result(statistics, p, use_model, g)
                rec["p_adj_vs_model"] = float(r["p_adj"]) if r is not None else math.nan
                if m_mean == c_mean:
                    rec["note"] = f"{use_model} mean equals {control} mean: nothing to prevent"
                elif not model_p < 0.05:
                    rec["note"] = (f"{control} vs {use_model} not significant "
                                   f"(p_adj = {model_p:.3g}): the % prevented is not "
                                   "interpretable")
            recs.append(rec)
    return pd.DataFrame(recs, columns=MODEL_COLUMNS)


def families_used(statistics: pd.DataFrame, params: Sequence[str]) -> dict[str, list[str]]:
    """``{post-hoc test: [parameters]}`` of the recommended families, in parameter order."""
    out: dict[str, list[str]] = {}
    for p in params:
        post, _ = chosen_family(statistics, p)
        if post is not None:
            out.setdefault(post, []).append(p)
    return out
