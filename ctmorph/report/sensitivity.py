"""Threshold sensitivity: do the group conclusions survive a change of the global threshold?

``ctmorph analyze --sensitivity P`` re-analyses every successful scan at the main threshold
× (1 − P/100) and × (1 + P/100) and writes ``OUT/sensitivity.csv`` (long form: one row per
scan and threshold change). Here each threshold variant gets the statistics of the main report
(:func:`~ctmorph.report.summary.statistics_table` with the same control, model, analysis and
alpha), and per parameter its *conclusions* are compared with the main threshold's:

- the decision of the omnibus test read (recommended by the report: ANOVA, Welch's ANOVA or
  Kruskal-Wallis; with two groups the t-test read) at ``alpha``, and
- the set of significant post-hoc pairs of the recommended family, with the sign of the mean
  difference, among the pairs the figure marks: every group against the control and against
  the model (every pair when neither is given).

A conclusion *holds* at a variant when both are the same. The recommended family may switch
between variants (Levene's test decides); the decision is compared, not the test name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..columns import MORPHOMETRY_PARAMETERS
from ..errors import ConfigError
from .data import group_order, parameters, read_scan_table
from .summary import chosen_family, statistics_table

__all__ = [
    "SENSITIVITY_COLUMNS",
    "Conclusion",
    "SensitivityResult",
    "conclusion_of",
    "compare_conclusions",
    "load_sensitivity",
    "threshold_sensitivity",
    "sensitivity_from_folder",
    "pct_label",
    "sensitivity_paragraph",
]

logger = logging.getLogger(__name__)

#: Columns of ``report/sensitivity.csv`` (one row per parameter × threshold change × group).
SENSITIVITY_COLUMNS = [
    "parameter", "threshold_change_pct", "threshold", "threshold_unit", "group", "n", "mean",
    "pct_change_vs_main", "omnibus_test", "omnibus_p", "posthoc_test", "significant_pairs",
    "conclusions_hold", "changes",
]


def pct_label(pct: float) -> str:
    """``-5.0`` -> ``"−5 %"``, ``5`` -> ``"+5 %"``, ``0`` -> ``"the main threshold"``."""
    if pct == 0:
        return "the main threshold"
    return f"{pct:+g} %".replace("-", "\u2212")


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_then(p0: float, p1: float, label: str) -> str:
    """``"p = 0.030 at the main threshold, 0.080 at −5 %"``."""
    first = _fmt_p(p0)
    first = f"p {first}" if first.startswith("<") else f"p = {first}"
    return f"{first} at the main threshold, {_fmt_p(p1)} at {label}"


@dataclass(frozen=True)
class Conclusion:
    """What the statistics of one parameter conclude at one threshold.

    Attributes
    ----------
    tested : bool
        False when the report could not test the parameter (``note`` says why).
    omnibus_test : str
        The omnibus test read (with two groups: the t-test read).
    omnibus_p : float
        Its p-value (NaN when untested).
    posthoc_test : str
        The post-hoc family read.
    pairs : dict
        ``{(reference, group): (p_adj, mean(group) - mean(reference))}`` for the compared
        pairs (vs control, vs model; every pair when neither is given), in the parameter's
        unit.
    alpha : float
        Significance level of the decisions.
    note : str
        Why the parameter was not tested.
    """

    tested: bool
    omnibus_test: str = ""
    omnibus_p: float = math.nan
    posthoc_test: str = ""
    pairs: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    alpha: float = 0.05
    note: str = ""

    @property
    def omnibus_significant(self) -> bool:
        return bool(self.omnibus_p < self.alpha)

    @property
    def significant(self) -> dict[tuple[str, str], int]:
        """``{(reference, group): sign of the mean difference}`` of the pairs with p < alpha."""
        return {k: int(np.sign(d)) for k, (p, d) in self.pairs.items() if p < self.alpha}

    def pairs_text(self) -> str:
        """``"OVX < sham; OVX+Exos > OVX"``: the significant pairs with their direction."""
        out = []
        for (a, b), s in self.significant.items():
            out.append(f"{b} {'>' if s > 0 else '<' if s < 0 else '='} {a}")
        return "; ".join(out)


def _compared_pairs(order: Sequence[str], control: str | None,
                    model: str | None) -> list[tuple[str, str]]:
    """The pairs the figure marks: (control, g) and (model, g); every pair without either."""
    if control is None and model is None:
        return [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]
    out = []
    if control is not None and control in order:
        out += [(control, g) for g in order if g != control]
    if model is not None and model in order:
        out += [(model, g) for g in order if g not in (model, control)]
    return out


def conclusion_of(statistics: pd.DataFrame, parameter: str, order: Sequence[str],
                  control: str | None, model: str | None, alpha: float) -> Conclusion:
    """The conclusion of ``parameter`` in a statistics table of :func:`statistics_table`.

    Parameters
    ----------
    statistics : DataFrame
        From :func:`~ctmorph.report.summary.statistics_table`.
    parameter : str
        Parameter name (``BV/TV``, ...).
    order : sequence of str
        Groups in display order.
    control, model : str or None
        Control and model groups (the reference groups of the compared pairs).
    alpha : float
        Significance level.

    Returns
    -------
    Conclusion
    """
    s = statistics[statistics["parameter"] == parameter]
    post, omni = chosen_family(statistics, parameter)
    if post is None:
        notes = [str(n) for n in s["note"] if str(n).startswith("not tested")]
        return Conclusion(tested=False, alpha=alpha,
                          note=notes[0] if notes else "not tested")
    if omni is not None:
        row = s[(s["test"] == omni) & (s["group2"] == "")]
        p = float(row["p"].iloc[0]) if len(row) else math.nan
        omni_name = omni
    else:  # two groups: the t-test read is the whole analysis
        row = s[s["test"] == post]
        p = float(row["p_adj"].iloc[0]) if len(row) else math.nan
        omni_name = post
    fam = s[s["test"] == post]
    pairs: dict[tuple[str, str], tuple[float, float]] = {}
    for a, b in _compared_pairs(order, control, model):
        hit = fam[((fam["group1"] == a) & (fam["group2"] == b))
                  | ((fam["group1"] == b) & (fam["group2"] == a))]
        if hit.empty:
            continue
        r = hit.iloc[0]
        diff = float(r["mean_diff"])  # mean(group2) - mean(group1)
        pairs[(a, b)] = (float(r["p_adj"]), diff if r["group1"] == a else -diff)
    return Conclusion(tested=True, omnibus_test=omni_name, omnibus_p=p, posthoc_test=post,
                      pairs=pairs, alpha=alpha)


def compare_conclusions(main: Conclusion, other: Conclusion, label: str,
                        quote: Callable[[str], str] = str) -> list[str]:
    """What differs between the main conclusion and another; empty when it holds.

    Parameters
    ----------
    main, other : Conclusion
        At the main threshold and at a variant.
    label : str
        How the variant is named in the text (``"−5 %"``).
    quote : callable, default str (unchanged)
        Applied to every group name and note from the input, e.g.
        :func:`~ctmorph.textsafe.markdown_text` for ``methods.md``.

    Returns
    -------
    list of str
        One phrase per change, e.g. ``"sham vs OVX: p = 0.030 at the main threshold, 0.080
        at −5 %"``.
    """
    if not main.tested and not other.tested:
        return []
    if main.tested != other.tested:
        return [f"tested at the main threshold but not at {label} ({quote(other.note)})"
                if main.tested else f"not tested at the main threshold ({quote(main.note)}) "
                                    f"but at {label}"]
    out = []
    if main.omnibus_significant != other.omnibus_significant:
        name = main.omnibus_test if main.omnibus_test == other.omnibus_test else \
            f"{main.omnibus_test} / {other.omnibus_test}"
        out.append(f"{name}: {_p_then(main.omnibus_p, other.omnibus_p, label)}")
    sig_main, sig_other = main.significant, other.significant
    for key in list(dict.fromkeys([*sig_main, *sig_other])):
        a, b = quote(key[0]), quote(key[1])
        if key in sig_main and key in sig_other:
            if sig_main[key] != sig_other[key]:
                out.append(f"{a} vs {b}: the difference changes sign at {label}")
            continue
        p0 = main.pairs.get(key, (math.nan, 0.0))[0]
        p1 = other.pairs.get(key, (math.nan, 0.0))[0]
        out.append(f"{a} vs {b}: {_p_then(p0, p1, label)}")
    return out


@dataclass
class SensitivityResult:
    """The threshold-sensitivity section of the report.

    The texts (:attr:`changes`, :attr:`sentence`, :attr:`notes`) are plain; the
    ``*_text(quote)`` methods build them with every name and message from the input passed
    through ``quote`` (:func:`~ctmorph.textsafe.markdown_text` for ``methods.md``).

    Attributes
    ----------
    table : DataFrame
        Columns :data:`SENSITIVITY_COLUMNS` (``report/sensitivity.csv``).
    conclusions : dict
        ``{parameter: {threshold_change_pct: Conclusion}}``.
    thresholds : dict
        ``{threshold_change_pct: threshold}`` (grey, or g/cm³ HA for a density threshold).
    unit : str
        ``"grey"`` or ``"g/cm³ HA"``.
    control, model : str or None
        The reference groups of the compared pairs.
    alpha : float
        Significance level of the decisions.
    left_out : list of (str, float, str)
        ``(scan, threshold_change_pct, why)`` of the scans that failed at a variant.
    n_compared, n_main : int
        Scans compared (analysed at every threshold) and scans of the main report.
    """

    table: pd.DataFrame
    conclusions: dict[str, dict[float, Conclusion]]
    thresholds: dict[float, float]
    unit: str
    control: str | None = None
    model: str | None = None
    alpha: float = 0.05
    left_out: list[tuple[str, float, str]] = field(default_factory=list)
    n_compared: int = 0
    n_main: int = 0

    def changes_text(self, quote: Callable[[str], str] = str) -> dict[str, list[str]]:
        """``{parameter: [phrase, ...]}`` of the parameters tested at some threshold.

        An empty list: the conclusions hold (see :func:`compare_conclusions`).
        """
        pcts = sorted(self.thresholds)
        return {p: [d for v in pcts for d in compare_conclusions(c[0], c[v], pct_label(v),
                                                                 quote)]
                for p, c in self.conclusions.items() if any(x.tested for x in c.values())}

    def sentence_text(self, quote: Callable[[str], str] = str) -> str:
        """The one-paragraph verdict for ``report.html`` and ``methods.md``."""
        return _sentence(self.changes_text(quote), self.thresholds, self.unit, self.alpha,
                         self.control, self.model, quote)

    def notes_text(self, quote: Callable[[str], str] = str) -> list[str]:
        """Scans left out (failed at a variant) and similar caveats."""
        out = [f"{quote(s)} left out of the comparison: failed at {pct_label(v)} ({quote(why)})"
               for s, v, why in self.left_out]
        if self.n_compared != self.n_main:
            out.append(f"conclusions compared on the {self.n_compared} scans analysed at every "
                       f"threshold (the main report uses {self.n_main})")
        return out

    @property
    def changes(self) -> dict[str, list[str]]:
        """:meth:`changes_text`, plain."""
        return self.changes_text()

    @property
    def sentence(self) -> str:
        """:meth:`sentence_text`, plain."""
        return self.sentence_text()

    @property
    def notes(self) -> list[str]:
        """:meth:`notes_text`, plain."""
        return self.notes_text()

    @property
    def holds(self) -> bool:
        """True when every tested parameter's conclusions hold at every variant."""
        return not any(self.changes.values())


#: The column of a row holding the threshold in each unit the percentage may apply to.
_THRESHOLD_COLUMN = {"grey": "threshold", "attenuation": "threshold_attenuation",
                     "g/cm³ HA": "threshold_density"}


def _variant_threshold(df: pd.DataFrame, unit: str) -> float:
    col = _THRESHOLD_COLUMN.get(unit, "threshold_density")
    if col not in df.columns:
        return math.nan
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def _fmt_thr(t: float) -> str:
    return f"{t:.4g}" if math.isfinite(t) else "n/a"


def threshold_sensitivity(variants: Mapping[float, pd.DataFrame], *, control: str | None,
                          model: str | None = None, nonparametric: bool = False,
                          alpha: float = 0.05, unit: str = "grey",
                          main_statistics: pd.DataFrame | None = None) -> SensitivityResult:
    """Statistics and conclusions of each threshold variant against the main threshold.

    Parameters
    ----------
    variants : mapping of float to DataFrame
        ``{threshold_change_pct: table}``; each table is shaped like ``morphometry.csv`` as
        read by :func:`~ctmorph.report.data.load_results` (``scan``, ``group``, ``status``,
        ``threshold`` and the parameters). Key 0 is the main threshold and must be present.
        Only scans analysed successfully at every threshold are compared (the others are
        listed in ``notes``), so a change of conclusion never comes from a change of n.
    control, model : str or None
        As in the main report (already checked against the groups).
    nonparametric : bool
        As in the main report.
    alpha : float
        Significance level, in (0, 1).
    unit : {"grey", "attenuation", "g/cm³ HA"}
        The quantity the percentage was applied to (for the thresholds in the text).
    main_statistics : DataFrame, optional
        The main report's :func:`statistics_table` of ``variants[0]``, reused when every
        scan was analysed at every threshold (saves computing it again).

    Returns
    -------
    SensitivityResult

    Raises
    ------
    ConfigError
        When key 0 is missing or there is no other variant.
    """
    if 0 not in variants:
        raise ConfigError("threshold sensitivity needs the main threshold (change 0 %)")
    pcts = sorted(variants)
    if len(pcts) < 2:
        raise ConfigError("threshold sensitivity needs at least one changed threshold")
    ok_sets = {v: set(df.loc[df["status"] == "ok", "scan"]) for v, df in variants.items()}
    common = set.intersection(*ok_sets.values())
    left_out = []
    for v in pcts:
        missing = sorted(ok_sets[0] - ok_sets[v]) if v != 0 else []
        for s in missing:
            df = variants[v]
            err = df.loc[df["scan"] == s, "error"] if "error" in df.columns else pd.Series([])
            why = str(err.iloc[0]) if len(err) and str(err.iloc[0]) else "not analysed"
            left_out.append((s, v, why))
    if not common:
        raise ConfigError("threshold sensitivity: no scan was analysed at every threshold")
    subset = {v: variants[v][variants[v]["scan"].isin(common)
                             & (variants[v]["status"] == "ok")].copy() for v in pcts}
    main = subset[0]
    order = group_order(main["group"].tolist(), control, model)
    params = parameters(main)
    stats = {v: statistics_table(subset[v], control, model=model, nonparametric=nonparametric,
                                 alpha=alpha, dunnett=False)
             for v in pcts if v != 0 or main_statistics is None or common != ok_sets[0]}
    if 0 not in stats:
        stats[0] = main_statistics
    thresholds = {v: _variant_threshold(subset[v], unit) for v in pcts}

    recs: list[dict[str, Any]] = []
    conclusions: dict[str, dict[float, Conclusion]] = {}
    for p in params:
        concl = {v: conclusion_of(stats[v], p, order, control, model, alpha) for v in pcts}
        conclusions[p] = concl
        diffs = {v: compare_conclusions(concl[0], concl[v], pct_label(v)) for v in pcts}
        means0 = {g: float(np.nanmean(main.loc[main["group"] == g, p].to_numpy(float)))
                  if (main["group"] == g).any() else math.nan for g in order}
        for v in pcts:
            c = concl[v]
            dv = subset[v]
            for g in order:
                vals = (pd.to_numeric(dv.loc[dv["group"] == g, p], errors="coerce")
                        .to_numpy(float) if p in dv.columns else np.zeros(0))
                vals = vals[np.isfinite(vals)]
                mean = float(vals.mean()) if vals.size else math.nan
                m0 = means0[g]
                recs.append({
                    "parameter": p, "threshold_change_pct": float(v),
                    "threshold": thresholds[v], "threshold_unit": unit, "group": g,
                    "n": int(vals.size), "mean": mean,
                    "pct_change_vs_main": 100.0 * (mean - m0) / m0
                    if m0 != 0 and math.isfinite(m0) else math.nan,
                    "omnibus_test": c.omnibus_test, "omnibus_p": c.omnibus_p,
                    "posthoc_test": c.posthoc_test, "significant_pairs": c.pairs_text()
                    if c.tested else c.note,
                    "conclusions_hold": not diffs[v], "changes": "; ".join(diffs[v]),
                })
    table = pd.DataFrame(recs, columns=SENSITIVITY_COLUMNS)
    return SensitivityResult(table=table, conclusions=conclusions, thresholds=thresholds,
                             unit=unit, control=control, model=model, alpha=alpha,
                             left_out=left_out, n_compared=len(common),
                             n_main=len(ok_sets[0]))


def _sentence(changes: Mapping[str, list[str]], thresholds: Mapping[float, float], unit: str,
              alpha: float, control: str | None, model: str | None,
              quote: Callable[[str], str]) -> str:
    pcts = sorted(v for v in thresholds if v != 0)
    labels = " and ".join(pct_label(v) for v in pcts)
    if len(pcts) == 2 and pcts[0] == -pcts[1]:
        labels = f"±{pcts[1]:g} %"
    values = " and ".join(_fmt_thr(thresholds[v]) for v in pcts)
    head = (f"At {labels} of the threshold ({values} {unit}; main threshold "
            f"{_fmt_thr(thresholds[0])} {unit})")
    if not changes:
        return head + " no parameter could be tested."
    against = [f"vs {quote(g)}" for g in (control, model) if g is not None]
    what = (f"the same omnibus decision at α = {alpha:g} and the same significant pairs "
            f"{' and '.join(against) or 'between groups'}, in the same direction")
    changed = {p: c for p, c in changes.items() if c}
    if not changed:
        return f"{head} every group conclusion holds ({what}) for all {len(changes)} " \
               "parameters tested."
    items = "; ".join(f"{p} ({'; '.join(c)})" for p, c in changed.items())
    rest = len(changes) - len(changed)
    tail = (f" The conclusions of the other {rest} parameters tested hold ({what})."
            if rest else "")
    return f"{head} the conclusions change for {items}.{tail}"


def load_sensitivity(out_dir: str | Path) -> pd.DataFrame | None:
    """Read ``OUT/sensitivity.csv`` (None when there is none).

    Returns
    -------
    DataFrame or None
        Rows as written by ``ctmorph analyze --sensitivity``: ``scan``, ``group``,
        ``threshold_change_pct`` (%), ``status``, ``error``, ``threshold`` and the
        parameters (numeric); an empty group becomes ``"(no group)"`` and text cells are
        unescaped as in :func:`~ctmorph.report.data.load_results`.

    Raises
    ------
    ConfigError
        Naming the file, when it is unreadable or lacks a required column.
    """
    path = Path(out_dir) / "sensitivity.csv"
    if not path.is_file():
        return None
    df = read_scan_table(path, "sensitivity",
                         ("scan", "threshold_change_pct", "status", "threshold"),
                         numeric=("threshold", "threshold_density"))
    if "error" not in df.columns:
        df["error"] = ""
    pct = pd.to_numeric(df["threshold_change_pct"], errors="coerce")
    if pct.isna().any():
        raise ConfigError(f"{path}: threshold_change_pct must be a number on every row")
    df["threshold_change_pct"] = pct.astype(float)
    return df


def _same_as_main(main_ok: pd.DataFrame, zero: pd.DataFrame) -> str:
    """Why the 0 % rows of sensitivity.csv are not the current morphometry.csv ('' if they are)."""
    z = zero[zero["status"] == "ok"].set_index("scan")
    m = main_ok.set_index("scan")
    if set(z.index) != set(m.index):
        return "its scans differ from morphometry.csv's"
    for col in ["threshold", *MORPHOMETRY_PARAMETERS]:
        if col not in m.columns:
            continue
        a = pd.to_numeric(m[col], errors="coerce").to_numpy(float)
        b = (pd.to_numeric(z[col], errors="coerce").reindex(m.index).to_numpy(float)
             if col in z.columns else np.full(len(m), np.nan))
        # both tables hold the same float written by the same writer (repr round trip);
        # 1e-9 only absorbs a re-save through a spreadsheet with 10+ significant digits
        if not np.allclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True):
            return f"its {col} values at the main threshold differ from morphometry.csv's"
    return ""


def sensitivity_from_folder(out_dir: str | Path, main: pd.DataFrame, run: Mapping[str, Any],
                            *, control: str | None, model: str | None, nonparametric: bool,
                            alpha: float, main_statistics: pd.DataFrame | None = None,
                            ) -> tuple[SensitivityResult | None, str]:
    """The sensitivity section for an analysis folder, if it has a current ``sensitivity.csv``.

    Parameters
    ----------
    out_dir : str or Path
        Analysis folder.
    main : DataFrame
        Its ``morphometry.csv`` (:func:`~ctmorph.report.data.load_results`): the main
        threshold's values, which the 0 % rows of ``sensitivity.csv`` must repeat.
    run : mapping
        ``run.json`` (its ``config.threshold_density`` says whether the percentage applied to
        a density threshold).
    control, model, nonparametric, alpha
        As in the main report.
    main_statistics : DataFrame, optional
        The main report's statistics of ``main`` (reused, see :func:`threshold_sensitivity`).

    Returns
    -------
    (SensitivityResult or None, str)
        The result, or None with a warning when the table is absent (empty warning) or
        stale (written by another run than ``morphometry.csv``).
    """
    sens = load_sensitivity(out_dir)
    if sens is None:
        return None, ""
    path = Path(out_dir) / "sensitivity.csv"
    main_ok = main[main["status"] == "ok"]
    why = _same_as_main(main_ok, sens[sens["threshold_change_pct"] == 0])
    if why:
        return None, (f"{path}: left out, {why} (written by an earlier run; re-run "
                      "'ctmorph analyze ... --sensitivity P')")
    cfg = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    units = set(sens["threshold_unit"].dropna()) if "threshold_unit" in sens.columns else set()
    if len(units) == 1:
        unit = str(units.pop())
    else:  # tables of older versions: a density threshold or a grey one
        unit = "g/cm³ HA" if cfg.get("threshold_density") is not None else "grey"
    variants: dict[float, pd.DataFrame] = {0.0: main}
    for v, block in sens.groupby("threshold_change_pct", sort=True):
        if v != 0:
            variants[float(v)] = block.reset_index(drop=True)
    if len(variants) < 2:
        return None, f"{path}: left out, it holds no changed threshold"
    res = threshold_sensitivity(variants, control=control, model=model,
                                nonparametric=nonparametric, alpha=alpha, unit=unit,
                                main_statistics=main_statistics)
    return res, ""


def sensitivity_paragraph(res: SensitivityResult, nonparametric: bool = False,
                          quote: Callable[[str], str] = str) -> str:
    """The methods paragraph: what was varied, how it was judged, and the verdict.

    Parameters
    ----------
    res : SensitivityResult
        From :func:`threshold_sensitivity`.
    nonparametric : bool
        Whether the non-parametric analysis was run.
    quote : callable, default str (unchanged)
        Applied to every name and message from the input
        (:func:`~ctmorph.textsafe.markdown_text` for ``methods.md``).

    Returns
    -------
    str
    """
    pcts = sorted(v for v in res.thresholds if v != 0)
    size = " and ".join(f"{abs(v):g} %" for v in dict.fromkeys(abs(v) for v in pcts))
    what = {"grey": "the grey-value threshold",
            "attenuation": "the threshold in attenuation (NRecon CS units, converted to grey "
                           "per scan as for the main analysis)"}.get(
        res.unit, "the density threshold (g/cm³ HA, converted to grey per scan as for the main "
                  "analysis)")
    text = (f"Threshold sensitivity: every scan was analysed again with {what} lowered and "
            f"raised by {size}, and the statistics were repeated with the same tests"
            + (" (including the non-parametric analysis)" if nonparametric else "")
            + ". A conclusion was taken to hold when the omnibus decision and the set of "
              "significant post-hoc pairs, with the direction of each difference, were the "
              f"same as at the main threshold. {res.sentence_text(quote)}")
    notes = res.notes_text(quote)
    if notes:
        text += " " + "; ".join(n[:1].upper() + n[1:] for n in notes) + "."
    return text
