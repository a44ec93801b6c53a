"""Statistical tests for group comparisons, on plain arrays (one 1-D array per group).

Everything here is a pure function of the samples: no pandas, no file access. The classical
tests (ANOVA, Kruskal-Wallis, t-tests, Dunnett, Levene, Shapiro-Wilk) come from
:mod:`scipy.stats`. Welch's ANOVA, Tukey/Games-Howell, Dunn's test and the Hedges' g
confidence interval are written out from their published formulas so the report can show the
degrees of freedom and test statistics too; the studentized range distribution is integrated
here because scipy's takes ~0.1 s per quantile and loses relative accuracy for tiny p. The tests in
``tests/test_report_reference.py`` check each one against published worked examples.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "Omnibus",
    "Pair",
    "anova_oneway",
    "welch_anova",
    "kruskal_wallis",
    "studentized_range_sf",
    "studentized_range_ppf",
    "tukey_hsd",
    "games_howell",
    "dunn_holm",
    "dunnett",
    "t_test",
    "holm",
    "hedges_g",
    "nct_cdf",
    "eta_squared",
    "percent_change",
    "percent_prevented",
]

Samples = Sequence[np.ndarray]


@dataclass(frozen=True)
class Omnibus:
    """Result of an omnibus test over k groups.

    Attributes
    ----------
    statistic : float
        F (ANOVA, Welch's ANOVA) or H (Kruskal-Wallis).
    p : float
        p-value.
    df1, df2 : float
        Degrees of freedom (``df2`` is NaN for chi-square based tests).
    effect_size : float
        η² (ANOVA), ε² = H / (N - 1) (Kruskal-Wallis), NaN where none is defined.
    """

    statistic: float
    p: float
    df1: float
    df2: float = math.nan
    effect_size: float = math.nan


@dataclass(frozen=True)
class Pair:
    """One pairwise comparison, oriented as ``group j - group i``.

    Attributes
    ----------
    i, j : int
        Indices of the two samples in the argument list.
    mean_diff : float
        ``mean(sample j) - mean(sample i)``.
    ci_low, ci_high : float
        Simultaneous (Tukey, Games-Howell, Dunnett) or per-comparison (t-tests) confidence
        interval of ``mean_diff``; NaN for Dunn's test (a rank test has no mean CI).
    statistic : float
        q (studentized range: Tukey, Games-Howell), t (t-tests, Dunnett) or z (Dunn).
    df : float
        Degrees of freedom of the statistic (NaN for z).
    p_adj : float
        p-value adjusted for the multiple comparisons of the family.
    """

    i: int
    j: int
    mean_diff: float
    ci_low: float
    ci_high: float
    statistic: float
    df: float
    p_adj: float


def _as_samples(samples: Samples) -> list[np.ndarray]:
    return [np.asarray(s, dtype=float) for s in samples]


def eta_squared(samples: Samples) -> float:
    """η² = SS_between / SS_total of a one-way layout (NaN when SS_total is 0)."""
    xs = _as_samples(samples)
    allv = np.concatenate(xs)
    grand = allv.mean()
    ss_total = float(((allv - grand) ** 2).sum())
    ss_between = float(sum(x.size * (x.mean() - grand) ** 2 for x in xs))
    return ss_between / ss_total if ss_total > 0 else math.nan


def anova_oneway(samples: Samples) -> Omnibus:
    """Classical one-way ANOVA (Fisher), :func:`scipy.stats.f_oneway`, with η².

    Parameters
    ----------
    samples : sequence of (n_i,) arrays
        One array per group, every n_i >= 1, at least two groups, N > k.
    """
    xs = _as_samples(samples)
    k, n = len(xs), sum(x.size for x in xs)
    res = stats.f_oneway(*xs)
    return Omnibus(float(res.statistic), float(res.pvalue), k - 1, n - k, eta_squared(xs))


def welch_anova(samples: Samples) -> Omnibus:
    """Welch's heteroscedastic one-way ANOVA.

    Parameters
    ----------
    samples : sequence of (n_i,) arrays
        One array per group, every n_i >= 2 with a non-zero variance.

    Returns
    -------
    Omnibus
        F*, p, df1 = k - 1 and the Welch-Satterthwaite df2; no effect size.

    Notes
    -----
    Welch BL (1951) Biometrika 38:330-336. With weights ``w_i = n_i / s_i²``,
    ``W = Σ w_i``, the weighted mean ``m = Σ w_i x̄_i / W`` and
    ``Λ = Σ (1 - w_i / W)² / (n_i - 1)``::

        F* = [Σ w_i (x̄_i - m)² / (k - 1)] / [1 + 2 (k - 2) Λ / (k² - 1)]
        df2 = (k² - 1) / (3 Λ)
    """
    xs = _as_samples(samples)
    k = len(xs)
    n = np.array([x.size for x in xs], dtype=float)
    means = np.array([x.mean() for x in xs])
    var = np.array([x.var(ddof=1) for x in xs])
    if np.any(n < 2) or np.any(var <= 0):
        raise ValueError("Welch's ANOVA needs n >= 2 and a non-zero variance in every group")
    w = n / var
    big_w = w.sum()
    m = (w * means).sum() / big_w
    lam = (((1 - w / big_w) ** 2) / (n - 1)).sum()
    f = ((w * (means - m) ** 2).sum() / (k - 1)) / (1 + 2 * (k - 2) * lam / (k**2 - 1))
    df2 = (k**2 - 1) / (3 * lam)
    return Omnibus(float(f), float(stats.f.sf(f, k - 1, df2)), k - 1, float(df2))


def kruskal_wallis(samples: Samples) -> Omnibus:
    """Kruskal-Wallis H test (tie-corrected), :func:`scipy.stats.kruskal`, with ε² = H/(N-1).

    Notes
    -----
    Kruskal WH, Wallis WA (1952) J Am Stat Assoc 47:583-621. The effect size
    ε²_R = H / (N - 1) follows Tomczak M, Tomczak E (2014) Trends Sport Sci 21:19-25.
    """
    xs = _as_samples(samples)
    n = sum(x.size for x in xs)
    res = stats.kruskal(*xs)
    h = float(res.statistic)
    return Omnibus(h, float(res.pvalue), len(xs) - 1, math.nan, h / (n - 1))


# Studentized range distribution. Grid on z for the range of k standard normals: the
# integrands are smooth and decay like a Gaussian, so the trapezoidal rule converges
# geometrically; step 0.1 on [-9, 9] gives ~1e-9 relative accuracy.
_Z_STEP = 0.1
_Z = np.arange(-9.0, 9.0 + _Z_STEP / 2, _Z_STEP)
_PHI_Z = np.exp(-0.5 * _Z**2) / math.sqrt(2 * math.pi)
_CDF_Z = special.ndtr(_Z)


def _range_sf(w: np.ndarray, k: int) -> np.ndarray:
    """P(R > w) for the range R of k iid standard normals, for each w >= 0.

    ``P(R > w) = k ∫ φ(z) [Φ(z)^(k-1) - (Φ(z) - Φ(z - w))^(k-1)] dz``, with the bracket
    expanded as ``B Σ_m A^m (A - B)^(k-2-m)`` (A = Φ(z), B = Φ(z - w)): a sum of positive
    terms, so the tail keeps its relative precision (no 1 - cdf cancellation).
    """
    b = special.ndtr(_Z[None, :] - w[:, None])
    a = _CDF_Z[None, :]
    d = a - b
    poly = np.zeros_like(b)
    for m in range(k - 1):
        poly += a**m * d ** (k - 2 - m)
    return k * (_PHI_Z * b * poly).sum(axis=1) * _Z_STEP


def _s_grid(df: float, n: int, s_max: float = math.inf,
            tiny: float = 1e-30) -> tuple[np.ndarray, np.ndarray] | None:
    """Nodes and trapezoid weights to integrate ``∫ g(s) f_S(s) ds``, ``S = sqrt(χ²_df / df)``.

    The integral runs over ``t = ln s`` (smooth and bell-shaped there) between the ``tiny``
    quantiles of S, cut at ``s_max``; None when that range is empty.
    """
    s_lo, s_hi = _s_bounds(float(df), tiny)
    s_hi = min(s_hi, s_max)
    if not s_hi > s_lo:
        return None
    if math.isinf(s_max):
        return _s_grid_full(float(df), n, tiny)
    return _s_nodes(df, n, s_lo, s_hi)


@functools.lru_cache(maxsize=256)
def _s_bounds(df: float, tiny: float) -> tuple[float, float]:
    return (math.sqrt(stats.chi2.ppf(tiny, df) / df), math.sqrt(stats.chi2.isf(tiny, df) / df))


@functools.lru_cache(maxsize=64)
def _s_grid_full(df: float, n: int, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    s, w = _s_nodes(df, n, *_s_bounds(df, tiny))
    s.flags.writeable = False
    w.flags.writeable = False
    return s, w


def _s_nodes(df: float, n: int, s_lo: float, s_hi: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(math.log(s_lo), math.log(s_hi), n)
    s = np.exp(t)
    w = np.exp(math.log(2 * df) + 2 * t + stats.chi2.logpdf(df * s * s, df))
    w *= t[1] - t[0]
    w[[0, -1]] *= 0.5
    return s, w


def nct_cdf(x: float, df: float, nc: float) -> float:
    """CDF of the noncentral t distribution, ``P(T <= x) = E_S[Φ(x S - nc)]``.

    Integrated on the same grid as the studentized range. Used instead of
    :data:`scipy.stats.nct`, which returns NaN for some large noncentralities at small df
    (e.g. ``nct.cdf(10.2, 2, 25.3)``); agrees with it elsewhere (tested).
    """
    s, w = _s_grid(df, 4000, tiny=1e-20)  # type: ignore[misc]
    return min(1.0, max(0.0, float((special.ndtr(x * s - nc) * w).sum())))


def studentized_range_sf(q: float, k: int, df: float) -> float:
    """Survival function P(Q > q) of the studentized range of k means with df degrees.

    Parameters
    ----------
    q : float
        Studentized range statistic (>= 0).
    k : int
        Number of groups (>= 2).
    df : float
        Error degrees of freedom (> 0; non-integer allowed, as in Games-Howell).

    Notes
    -----
    ``P(Q > q) = ∫ P(R > q s) f_S(s) ds`` with ``S = sqrt(χ²_df / df)``, integrated over
    ``t = ln s`` (where the integrand is smooth and bell-shaped) between the 1e-30 quantiles
    of S. Agrees with :func:`scipy.stats.studentized_range` (tested) and with the exact k = 2
    case ``2 P(T_df > q / sqrt(2))`` to ~1e-9 relative down to p ~ 1e-15, where scipy's
    ``1 - cdf`` loses digits.
    """
    if not q > 0:
        return 1.0
    # P(R > w) < 1e-30 beyond w = 20 for any k we meet (k ≤ 50): no need to integrate there
    grid = _s_grid(df, 200, s_max=20.0 / q)
    if grid is None:
        return 0.0
    s, w = grid
    return min(1.0, max(0.0, float((_range_sf(q * s, k) * w).sum())))


def studentized_range_ppf(p: float, k: int, df: float) -> float:
    """Quantile of the studentized range: q with P(Q <= q) = p (0 < p < 1)."""
    alpha = 1.0 - p
    # Bracket: one comparison (lower) and Bonferroni over k(k-1)/2 pairs (upper) bound it.
    lo = math.sqrt(2) * float(stats.t.isf(alpha / 2, df))
    hi = math.sqrt(2) * float(stats.t.isf(alpha / (k * (k - 1)), df))
    if k == 2:
        return lo
    return float(optimize.brentq(lambda q: studentized_range_sf(q, k, df) - alpha,
                                 lo * (1 - 1e-9), hi * (1 + 1e-9), xtol=1e-12, rtol=1e-12))


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def tukey_hsd(samples: Samples, confidence: float = 0.95) -> list[Pair]:
    """Tukey's HSD for all pairs (the Tukey-Kramer form for unequal n).

    Returns
    -------
    list of Pair
        For every ``i < j``: ``mean_j - mean_i``, its simultaneous CI, the studentized range
        statistic ``q = |mean_j - mean_i| / sqrt(MSE / 2 · (1/n_i + 1/n_j))``, df = N - k,
        and the adjusted p-value ``P(Q_{k, N-k} > q)``.

    Notes
    -----
    Tukey JW (1949) Biometrics 5:99-114; Kramer CY (1956) Biometrics 12:307-310. Same
    numbers as :func:`scipy.stats.tukey_hsd` (tested), with the studentized range from
    :func:`studentized_range_sf`, which is faster and keeps its relative accuracy in the tail.
    """
    xs = _as_samples(samples)
    k, n = len(xs), sum(x.size for x in xs)
    df = n - k
    mse = sum(((x - x.mean()) ** 2).sum() for x in xs) / df
    qcrit = studentized_range_ppf(confidence, k, df)
    out = []
    for i, j in _pairs(k):
        diff = float(xs[j].mean() - xs[i].mean())
        se = math.sqrt(mse / 2 * (1 / xs[i].size + 1 / xs[j].size))
        if not se > 0:
            out.append(Pair(i, j, diff, math.nan, math.nan, math.nan, df, math.nan))
            continue
        q = abs(diff) / se
        out.append(Pair(i, j, diff, diff - qcrit * se, diff + qcrit * se, q, df,
                        studentized_range_sf(q, k, df)))
    return out


def games_howell(samples: Samples, confidence: float = 0.95) -> list[Pair]:
    """Games-Howell pairwise comparisons (unequal variances and sizes).

    Parameters
    ----------
    samples : sequence of (n_i,) arrays
        Every n_i >= 2; a pair whose two variances are both 0 gets NaN results.

    Notes
    -----
    Games PA, Howell JF (1976) J Educ Stat 1:113-125. For a pair with ``v_i = s_i² / n_i``::

        q  = |x̄_j - x̄_i| / sqrt((v_i + v_j) / 2)
        df = (v_i + v_j)² / (v_i² / (n_i - 1) + v_j² / (n_j - 1))
        p  = P(Q_{k, df} > q),  CI = diff ± q_crit(k, df) · sqrt((v_i + v_j) / 2)
    """
    xs = _as_samples(samples)
    k = len(xs)
    out = []
    for i, j in _pairs(k):
        vi, vj = xs[i].var(ddof=1) / xs[i].size, xs[j].var(ddof=1) / xs[j].size
        diff = float(xs[j].mean() - xs[i].mean())
        if vi + vj <= 0:
            out.append(Pair(i, j, diff, math.nan, math.nan, math.nan, math.nan, math.nan))
            continue
        se = math.sqrt((vi + vj) / 2)
        df = (vi + vj) ** 2 / (vi**2 / (xs[i].size - 1) + vj**2 / (xs[j].size - 1))
        q = abs(diff) / se
        qcrit = studentized_range_ppf(confidence, k, df)
        out.append(Pair(i, j, diff, diff - qcrit * se, diff + qcrit * se, q, float(df),
                        studentized_range_sf(q, k, df)))
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaNs stay NaN, not counted).

    Notes
    -----
    Holm S (1979) Scand J Stat 6:65-70: the i-th smallest of m p-values becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def dunn_holm(samples: Samples) -> list[Pair]:
    """Dunn's rank test for all pairs after Kruskal-Wallis, Holm-adjusted.

    Returns
    -------
    list of Pair
        ``mean_diff`` is the difference of the group means (data units, for reading; the
        test itself compares mean ranks), no CI, ``statistic`` is z, ``p_adj`` Holm-adjusted.

    Notes
    -----
    Dunn OJ (1964) Technometrics 6:241-252. With mid-ranks over all N values, mean ranks
    ``R̄_i`` and tie sizes t::

        z = (R̄_j - R̄_i) / sqrt([N (N + 1) / 12 - Σ (t³ - t) / (12 (N - 1))] (1/n_i + 1/n_j))

    two-sided p = 2 Φ(-|z|), then Holm over the k (k - 1) / 2 pairs.
    """
    xs = _as_samples(samples)
    allv = np.concatenate(xs)
    n = allv.size
    ranks = stats.rankdata(allv)
    bounds = np.cumsum([0] + [x.size for x in xs])
    mean_ranks = [ranks[bounds[g]:bounds[g + 1]].mean() for g in range(len(xs))]
    _, ties = np.unique(allv, return_counts=True)
    factor = n * (n + 1) / 12 - ((ties**3 - ties).sum()) / (12 * (n - 1))
    zs, ps, pairs = [], [], _pairs(len(xs))
    for i, j in pairs:
        se = math.sqrt(factor * (1 / xs[i].size + 1 / xs[j].size)) if factor > 0 else 0.0
        z = (mean_ranks[j] - mean_ranks[i]) / se if se > 0 else math.nan
        zs.append(z)
        ps.append(2 * stats.norm.sf(abs(z)) if not math.isnan(z) else math.nan)
    padj = holm(ps)
    return [
        Pair(i, j, float(xs[j].mean() - xs[i].mean()), math.nan, math.nan, float(z), math.nan,
             float(pa))
        for (i, j), z, pa in zip(pairs, zs, padj, strict=True)
    ]


def dunnett(samples: Samples, control: int, confidence: float = 0.95,
            seed: int = 20100728) -> list[Pair]:
    """Dunnett's many-to-one comparisons against ``samples[control]``, :func:`scipy.stats.dunnett`.

    Returns
    -------
    list of Pair
        One per treated sample ``j`` with ``i = control``: ``mean_j - mean_control``, its
        simultaneous CI, t and df = N - k. scipy integrates the multivariate t numerically
        (randomised quasi-Monte Carlo); a fixed seed makes the report reproducible.

    Notes
    -----
    Dunnett CW (1955) J Am Stat Assoc 50:1096-1121.
    """
    xs = _as_samples(samples)
    k, n = len(xs), sum(x.size for x in xs)
    treated = [j for j in range(k) if j != control]
    res = stats.dunnett(*(xs[j] for j in treated), control=xs[control],
                        rng=np.random.default_rng(seed))
    ci = res.confidence_interval(confidence_level=confidence)
    return [
        Pair(control, j, float(xs[j].mean() - xs[control].mean()), float(ci.low[m]),
             float(ci.high[m]), float(res.statistic[m]), n - k, float(res.pvalue[m]))
        for m, j in enumerate(treated)
    ]


def t_test(x: np.ndarray, y: np.ndarray, *, equal_var: bool,
           confidence: float = 0.95) -> Pair:
    """Student's (``equal_var=True``) or Welch's two-sample t-test of ``y`` against ``x``.

    Returns
    -------
    Pair
        ``i = 0, j = 1``, ``mean(y) - mean(x)`` with its CI, t, df and the (unadjusted)
        two-sided p-value, from :func:`scipy.stats.ttest_ind`.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    res = stats.ttest_ind(y, x, equal_var=equal_var)
    ci = res.confidence_interval(confidence_level=confidence)
    return Pair(0, 1, float(y.mean() - x.mean()), float(ci.low), float(ci.high),
                float(res.statistic), float(res.df), float(res.pvalue))


def _hedges_j(df: float) -> float:
    """Exact small-sample correction J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2))."""
    return math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)


def hedges_g(x: np.ndarray, y: np.ndarray,
             confidence: float = 0.95) -> tuple[float, float, float]:
    """Hedges' g of ``y`` versus ``x`` with a noncentral-t confidence interval.

    Parameters
    ----------
    x, y : (n,) arrays
        Two samples, each n >= 2.
    confidence : float
        Two-sided confidence level of the interval.

    Returns
    -------
    g, ci_low, ci_high : float
        ``g = J(df) · (ȳ - x̄) / s_pooled`` with df = n_x + n_y - 2; NaN when the pooled SD
        is 0.

    Notes
    -----
    Hedges LV (1981) J Educ Stat 6:107-128 (exact J). The interval inverts the noncentral t
    distribution of ``t = d / sqrt(1/n_x + 1/n_y)``: the noncentrality parameters δ_lo, δ_hi
    with ``P(T_{df, δ_lo} <= t) = (1 + c)/2`` and ``P(T_{df, δ_hi} <= t) = (1 - c)/2`` are
    scaled back to g (Cumming G, Finch S (2001) Educ Psychol Meas 61:532-574).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    nx, ny = x.size, y.size
    df = nx + ny - 2
    sp2 = ((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / df
    if not sp2 > 0:
        return math.nan, math.nan, math.nan
    d = (y.mean() - x.mean()) / math.sqrt(sp2)
    j = _hedges_j(df)
    scale = math.sqrt(1 / nx + 1 / ny)
    t = d / scale

    def ncp_for(prob: float) -> float:
        def f(nc: float) -> float:
            return nct_cdf(t, df, nc) - prob

        lo, hi = t - 2.0, t + 2.0
        step = 2.0
        while f(lo) < 0:  # cdf decreases in nc: move lo down until cdf(lo) >= prob
            step *= 2
            lo = t - step
        step = 2.0
        while f(hi) > 0:
            step *= 2
            hi = t + step
        return float(optimize.brentq(f, lo, hi, xtol=1e-10))

    alpha = 1 - confidence
    lo_nc, hi_nc = ncp_for(1 - alpha / 2), ncp_for(alpha / 2)
    return float(j * d), float(j * lo_nc * scale), float(j * hi_nc * scale)


def percent_change(mean: float, reference: float) -> float:
    """``100 (mean - reference) / reference``; NaN when the reference mean is 0."""
    return 100.0 * (mean - reference) / reference if reference != 0 else math.nan


def percent_prevented(treated: float, model: float, control: float) -> float:
    """Share of the model-induced change prevented by a treatment, in %.

    ``100 (treated - model) / (control - model)``: 0 % = no better than the untreated model,
    100 % = back at the control level, > 100 % overshoot, < 0 % worse than the model. The sign
    convention holds for parameters that fall (BV/TV) and that rise (Tb.Sp) after the model.
    NaN when the model mean equals the control mean (no change to prevent).
    """
    return 100.0 * (treated - model) / (control - model) if control != model else math.nan
