"""Per-group summaries and one-way ANOVA with Tukey HSD for each morphometric parameter.

Statistics come from :mod:`scipy.stats`; the tests check them against independent
computations. Groups with fewer than two animals, constant parameters and missing values are
reported as not tested, with the reason, rather than silently dropped.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .._atomic import atomic_write_text
from ..columns import MORPHOMETRY_PARAMETERS
from ..errors import ConfigError

__all__ = ["load_results", "group_order", "group_summary", "statistics_table", "make_report"]

logger = logging.getLogger(__name__)


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """Read ``OUT/morphometry.csv``; raise ConfigError naming the file if it is unusable."""
    path = Path(out_dir) / "morphometry.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run 'ctmorph analyze ... -o {out_dir}' first")
    try:
        df = pd.read_csv(path, keep_default_na=True, dtype={"scan": str, "group": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable morphometry table ({exc})") from None
    for col in ("scan", "status"):
        if col not in df.columns:
            raise ConfigError(f"{path}: column {col!r} is missing")
    if "group" not in df.columns:
        df["group"] = ""
    df["group"] = df["group"].fillna("").astype(str)
    return df


def group_order(groups: Sequence[str], control: str | None = None) -> list[str]:
    """Groups in display order: the control first, then in order of first appearance."""
    seen: list[str] = []
    for g in groups:
        if g not in seen:
            seen.append(g)
    if control is not None and control in seen:
        seen.remove(control)
        seen.insert(0, control)
    return seen


def _parameters(df: pd.DataFrame) -> list[str]:
    return [p for p in MORPHOMETRY_PARAMETERS if p in df.columns and df[p].notna().any()]


def group_summary(df: pd.DataFrame, control: str | None = None) -> pd.DataFrame:
    """Long-form table ``parameter, group, n, mean, sd, sem, median, iqr`` of successful scans.

    ``sd`` is the sample standard deviation (ddof = 1), ``sem = sd / sqrt(n)``; both are empty
    for n < 2. ``iqr`` is the 75th minus the 25th percentile (linear interpolation).
    """
    ok = df[df["status"] == "ok"]
    order = group_order(ok["group"].tolist(), control)
    recs = []
    for p in _parameters(ok):
        for g in order:
            v = pd.to_numeric(ok.loc[ok["group"] == g, p], errors="coerce").dropna().to_numpy()
            n = int(v.size)
            sd = float(np.std(v, ddof=1)) if n >= 2 else np.nan
            q75, q25 = (np.percentile(v, [75, 25]) if n else (np.nan, np.nan))
            recs.append(
                {
                    "parameter": p,
                    "group": g,
                    "n": n,
                    "mean": float(np.mean(v)) if n else np.nan,
                    "sd": sd,
                    "sem": sd / np.sqrt(n) if n >= 2 else np.nan,
                    "median": float(np.median(v)) if n else np.nan,
                    "iqr": float(q75 - q25) if n else np.nan,
                }
            )
    return pd.DataFrame(
        recs, columns=["parameter", "group", "n", "mean", "sd", "sem", "median", "iqr"]
    )


def statistics_table(df: pd.DataFrame, control: str | None = None) -> pd.DataFrame:
    """One-way ANOVA per parameter and Tukey HSD for every pair of groups.

    Rows: omnibus ``parameter, test='one-way ANOVA', statistic (F), p``; post-hoc
    ``parameter, test='Tukey HSD', group1, group2, mean_diff (group2 - group1), ci_low,
    ci_high (95 %), p_adj``. Parameters that cannot be tested get a row with ``note``.
    """
    ok = df[df["status"] == "ok"]
    order = group_order(ok["group"].tolist(), control)
    cols = ["parameter", "test", "statistic", "p", "group1", "group2", "mean_diff",
            "ci_low", "ci_high", "p_adj", "note"]
    recs: list[dict] = []
    for p in _parameters(ok):
        samples = {
            g: pd.to_numeric(ok.loc[ok["group"] == g, p], errors="coerce").dropna().to_numpy()
            for g in order
        }
        usable = [g for g in order if samples[g].size >= 2]
        skipped = [g for g in order if samples[g].size < 2]
        if len(usable) < 2:
            recs.append({"parameter": p, "test": "one-way ANOVA",
                         "note": "not tested: fewer than two groups with n >= 2"})
            continue
        values = np.concatenate([samples[g] for g in usable])
        if np.ptp(values) == 0:
            recs.append({"parameter": p, "test": "one-way ANOVA",
                         "note": "not tested: the parameter is constant"})
            continue
        note = f"groups with n < 2 left out: {', '.join(skipped)}" if skipped else ""
        res = stats.f_oneway(*(samples[g] for g in usable))
        recs.append({"parameter": p, "test": "one-way ANOVA", "statistic": float(res.statistic),
                     "p": float(res.pvalue), "note": note})
        tk = stats.tukey_hsd(*(samples[g] for g in usable))
        ci = tk.confidence_interval(confidence_level=0.95)
        for i in range(len(usable)):
            for j in range(i + 1, len(usable)):
                # scipy's statistic[i, j] is mean_i - mean_j; report group2 - group1
                recs.append({
                    "parameter": p, "test": "Tukey HSD",
                    "group1": usable[i], "group2": usable[j],
                    "mean_diff": float(-tk.statistic[i, j]),
                    "ci_low": float(-ci.high[i, j]), "ci_high": float(-ci.low[i, j]),
                    "p_adj": float(tk.pvalue[i, j]), "note": note,
                })
    return pd.DataFrame(recs, columns=cols)


def _csv_text(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue()


def make_report(out_dir: str | Path, *, control: str | None = "sham") -> dict[str, Path]:
    """Write ``OUT/report/group_summary.csv`` and ``statistics.csv``; return their paths."""
    df = load_results(out_dir)
    n_ok = int((df["status"] == "ok").sum())
    if n_ok == 0:
        raise ConfigError(f"{Path(out_dir) / 'morphometry.csv'}: no scan was analysed successfully")
    rep = Path(out_dir) / "report"
    summary = group_summary(df, control)
    statistics = statistics_table(df, control)
    paths = {
        "group_summary": rep / "group_summary.csv",
        "statistics": rep / "statistics.csv",
    }
    atomic_write_text(paths["group_summary"], _csv_text(summary))
    atomic_write_text(paths["statistics"], _csv_text(statistics))
    failed = df[df["status"] != "ok"]
    for _, r in failed.iterrows():
        logger.warning("left out of the report: %s (%s)", r["scan"], r.get("error", ""))
    return paths
