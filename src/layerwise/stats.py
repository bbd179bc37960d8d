"""The statistics behind every verdict: few seeds, paired comparisons, honest intervals.

Seeds are the independent units of an experiment: every job of one seed shares that seed's
primaries and baselines, so results within a seed are correlated and results of different seeds
are not. Every test here therefore works on per-seed values (paired by seed), and every bootstrap
resamples whole seeds.

- `mean_interval`: mean, sample standard deviation (ddof = 1) and a t interval with n - 1 degrees
  of freedom.
- `paired_test`: a one-sample test of per-seed differences against 0: Student's t (n - 1 degrees
  of freedom) or the exact sign-flip permutation test (which needs 6 or more seeds to ever reach
  p < 0.05, since its smallest p-value is 2 / 2^n).
- `holm`: Holm's step-down adjustment, which keeps the family-wise error rate across the
  comparisons one report makes; `adjusted_interval` gives each row the interval at the level Holm
  tested it at (inverting the sign-flip test where that is the test), so interval and verdict agree.
- `safe_depth`: what to freeze, by equivalence: the deepest `l_c` whose loss is shown within the
  tolerance (a one-sided t bound), tested from `l_c = 0` upward as a fixed sequence, with the seeds
  a one-sided paired t equivalence test would need where the evidence stops short.
- `rm_oneway`: do the levels of one factor (ordered pairs) differ at all? A repeated-measures F test
  with seeds as subjects, Greenhouse-Geisser corrected.
- `split_half_agreement`: how well a ranking reproduces: Kendall tau between the rankings of two
  disjoint halves of the seeds (near 0 when there is nothing to rank), not agreement of resamples
  with the run's own ranking (which is high on pure noise).
- `factors`: a two-way decomposition of per-seed scores into a pair effect, an architecture effect,
  their interaction and the seed residual, tested as a repeated-measures design with seeds as
  subjects (Greenhouse-Geisser corrected), with a delete-one-seed jackknife interval for the
  difference between the two effects (its tails stay near nominal from 3 seeds on), and a test of their
  interaction (do the architectures order the pairs differently?). A factor's "spread" is the
  square root of sum(effect^2) / (levels - 1), seed noise subtracted.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

TESTS = ("t", "sign-flip")


@functools.lru_cache(maxsize=None)
def _t_quantile(q: float, df: int) -> float:
    from scipy import stats as sps

    return float(sps.t.ppf(q, df))


@dataclass
class Interval:
    mean: float
    sd: Optional[float]  # sample standard deviation over seeds (ddof = 1); None with one seed
    low: Optional[float]
    high: Optional[float]
    n: int


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of per-seed values with a t interval (n - 1 degrees of freedom)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), None, None, None, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, None, None, None, n)
    sd = float(x.std(ddof=1))
    half = _t_quantile(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)
    return Interval(mean, sd, mean - half, mean + half, n)


@dataclass
class TestResult:
    statistic: Optional[float]
    df: Optional[int]
    p: Optional[float]  # two-sided; None when it cannot be assessed
    note: str = ""


def sign_flip_p(diffs: np.ndarray) -> float:
    """Exact two-sided p-value of the sign-flip permutation test of the mean against 0: the share of
    the 2^n sign patterns whose mean is at least as far from 0 as the observed one."""
    observed = abs(diffs.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(diffs))))
    means = np.abs(signs @ diffs) / len(diffs)
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def paired_test(diffs: Sequence[float], test: str = "t") -> TestResult:
    """Test per-seed differences against 0 (two-sided)."""
    from scipy import stats as sps

    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}; got {test!r}")
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2:
        return TestResult(None, None, None, "one seed: significance cannot be assessed")
    sd = d.std(ddof=1)
    if not sd > 0:
        return TestResult(None, n - 1, None, "no variation over seeds: significance cannot be assessed")
    t = float(d.mean() / (sd / np.sqrt(n)))
    if test == "sign-flip":
        if n > 20:
            raise ValueError("the exact sign-flip test enumerates 2^n patterns; use test='t' beyond 20 seeds")
        return TestResult(t, n - 1, sign_flip_p(d))
    return TestResult(t, n - 1, float(2 * sps.t.sf(abs(t), n - 1)))


def sign_flip_interval(diffs: Sequence[float], confidence: float) -> Optional[Interval]:
    """The interval that inverts the exact sign-flip test: the shifts d0 the test of mean(diffs - d0)
    does not reject at 1 - confidence, so it excludes 0 exactly when the test rejects. Its p-value
    changes only where some sign pattern's mean meets the observed one, so it is evaluated between
    every such breakpoint. (-inf, inf) when even the smallest p-value, 2 / 2^n, is not below
    1 - confidence; None beyond 10 seeds (use the t interval)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2 or n > 10:
        return None
    mean = float(d.mean())
    if 2.0 / 2 ** n >= 1 - confidence:
        return Interval(mean, float(d.std(ddof=1)), float("-inf"), float("inf"), n)
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    num, k = signs @ d, signs.sum(axis=1)
    # |num - d0 k| = |sum(d) - n d0| where d0 = (num -+ sum(d)) / (k -+ n)
    with np.errstate(divide="ignore", invalid="ignore"):
        cuts = np.concatenate([(num - d.sum()) / (k - n), (num + d.sum()) / (k + n)])
    cuts = np.unique(cuts[np.isfinite(cuts)])
    points = np.concatenate([[cuts[0] - 1], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1], cuts])
    observed = np.abs(d.sum() - n * points)[:, None]
    tie = 1e-12 * np.maximum(1.0, observed)  # as sign_flip_p: equal means count as extreme
    p = (np.abs(num[None, :] - points[:, None] * k[None, :]) >= observed - tie).mean(axis=1)
    accepted = points[p > 1 - confidence]
    return Interval(mean, float(d.std(ddof=1)), float(accepted.min()), float(accepted.max()), n)


def adjusted_interval(diffs: Sequence[float], p: Optional[float], p_adjusted: Optional[float], alpha: float,
                      test: str = "t") -> tuple:
    """The interval of a mean difference adjusted as its p-value is: at confidence 1 - alpha p / p_adjusted
    (the level Holm's step-down effectively tests this row at), so it excludes 0 exactly when the
    adjusted p-value is below alpha. For the sign-flip test it inverts that test (t beyond 10 seeds).
    Returns (interval or None, confidence)."""
    if p is None or p_adjusted is None or not p_adjusted > 0:
        return None, None
    confidence = 1 - alpha * p / p_adjusted
    interval = sign_flip_interval(diffs, confidence) if test == "sign-flip" else None
    return interval or mean_interval(diffs, confidence), confidence


def holm(pvalues: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm-adjusted p-values (None stays None and does not count towards the family)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: List[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))  # step-down: adjusted values never decrease
        out[i] = running
    return out


# ---------------------------------------------------------------------------------------------
# Tasks against architectures


def _mean_squares(m: np.ndarray, other: int):
    """For m[..., level, seed] (each value a mean over `other` cells): the factor's mean square and
    its interaction with the seed (the error term of a repeated-measures test), vectorised over
    leading axes."""
    k, s = m.shape[-2:]
    level = m.mean(axis=-1, keepdims=True)
    seed = m.mean(axis=-2, keepdims=True)
    grand = m.mean(axis=(-2, -1), keepdims=True)
    factor = other * s * ((level - grand) ** 2).sum(axis=(-2, -1)) / (k - 1)
    error = other * ((m - level - seed + grand) ** 2).sum(axis=(-2, -1)) / ((k - 1) * (s - 1))
    return factor, error


def _effect_variance(y: np.ndarray, axis: int) -> np.ndarray:
    """The variance of one factor's effects in y[..., pair, arch, seed] (axis -3: pairs, -2:
    architectures), unbiased for sum(effect^2) / (levels - 1): seed noise is subtracted, so a factor
    with more levels is not larger by construction."""
    averaged = -2 if axis == -3 else -3
    other = y.shape[averaged]
    factor, error = _mean_squares(y.mean(axis=averaged), other)
    return (factor - error) / (other * y.shape[-1])


def _effect_difference(y: np.ndarray) -> np.ndarray:
    """Pair-effect variance minus architecture-effect variance, for y[..., pair, arch, seed]."""
    return _effect_variance(y, -3) - _effect_variance(y, -2)


def _rm_effect(y: np.ndarray, axis: int) -> dict:
    """Repeated-measures test of one factor of y[pair, arch, seed] (axis -3 or -2), the other
    averaged out, with seeds as subjects: F = MS_factor / MS_factor x seed, Greenhouse-Geisser
    corrected for correlated levels (transfers of one seed share primaries and baselines)."""
    from scipy import stats as sps

    averaged = -2 if axis == -3 else -3
    m = y.mean(axis=averaged)  # (levels, seeds)
    k, s = m.shape
    other = y.shape[averaged]
    ms_factor, ms_error = (float(v) for v in _mean_squares(m, other))
    # Greenhouse-Geisser epsilon from the double-centred covariance of the levels over seeds.
    centre = np.eye(k) - 1.0 / k
    c = centre @ np.atleast_2d(np.cov(m)) @ centre
    denominator = (k - 1) * float(np.trace(c @ c))
    epsilon = float(np.trace(c) ** 2 / denominator) if denominator > 0 else 1.0
    epsilon = min(1.0, max(1.0 / (k - 1), epsilon))
    variance = float(_effect_variance(y, axis))
    out = {"levels": k, "mean_square": ms_factor, "error_mean_square": ms_error, "epsilon": epsilon,
           "variance": variance, "spread": float(np.sqrt(max(variance, 0.0))), "F": None, "df": None, "p": None}
    if ms_error > 0:
        f = ms_factor / ms_error
        df1, df2 = epsilon * (k - 1), epsilon * (k - 1) * (s - 1)
        out.update(F=float(f), df=[round(df1, 3), round(df2, 3)], p=float(sps.f.sf(f, df1, df2)))
    return out


def _interaction(y: np.ndarray) -> dict:
    """Do the architectures order the pairs differently? F = MS_pair x arch / MS_pair x arch x seed
    (uncorrected for sphericity), and the least rank correlation between two architectures' orderings
    of the pairs (negative: some architectures order the pairs oppositely)."""
    from scipy import stats as sps

    p, a, s = y.shape
    cell = y.mean(axis=2)
    inter = cell - cell.mean(1, keepdims=True) - cell.mean(0, keepdims=True) + cell.mean()
    # the residual of the three-way model, the pair x arch x seed interaction (its error term)
    e = (y - y.mean(2, keepdims=True) - y.mean(1, keepdims=True) - y.mean(0, keepdims=True)
         + y.mean((1, 2), keepdims=True) + y.mean((0, 2), keepdims=True) + y.mean((0, 1), keepdims=True) - y.mean())
    df1, df2 = (p - 1) * (a - 1), (p - 1) * (a - 1) * (s - 1)
    ms, ms_error = s * (inter ** 2).sum() / df1, (e ** 2).sum() / df2
    out = {"F": None, "df": [df1, df2], "p": None, "least_rank_correlation": None, "opposite": False}
    if ms_error > 0:
        f = float(ms / ms_error)
        out.update(F=f, p=float(sps.f.sf(f, df1, df2)))
    if p >= 3:
        rho = [sps.spearmanr(cell[:, i], cell[:, j])[0] for i in range(a) for j in range(i + 1, a)]
        rho = [r for r in rho if np.isfinite(r)]
        if rho:
            out["least_rank_correlation"] = float(min(rho))
            out["opposite"] = bool(min(rho) < 0)
    return out


def jackknife_interval(y: np.ndarray, statistic, confidence: float = 0.95) -> tuple:
    """The delete-one-seed jackknife interval of statistic(y[..., seed]): estimate +- Student's t
    (seeds - 1 degrees of freedom) times the jackknife standard error. Each variance estimate here
    averages cross-products of distinct seeds (a U-statistic), for which the jackknife is nearly
    unbiased, so its tails stay near nominal even with 3 seeds, where a bootstrap that repeats seeds
    does not."""
    from scipy import stats as sps

    s = y.shape[-1]
    estimate = float(statistic(y))
    loo = np.array([float(statistic(np.delete(y, i, axis=-1))) for i in range(s)])
    se = float(np.sqrt((s - 1) / s * ((loo - loo.mean()) ** 2).sum()))
    half = sps.t.ppf(0.5 + confidence / 2, s - 1) * se
    return estimate - half, estimate + half, se


def factors(y: np.ndarray, alpha: float = 0.05, confidence: float = 0.95) -> dict:
    """Do the tasks (ordered pairs) or the architectures shape transferability more?

    `y[pair, arch, seed]` holds one score per cell and seed (seeds complete). The pair effect and
    the architecture effect are each tested against their interaction with the seed; their
    variances (unbiased, so that a factor with more levels is not larger by construction) are
    compared through a delete-one-seed jackknife interval of their difference. A factor is named only
    when it is significant at alpha / 2 (the two gates together keep the false-positive rate at
    alpha when neither factor has any effect) and the interval excludes equality; otherwise the
    verdict is "inconclusive".
    """
    y = np.asarray(y, dtype=float)
    p, a, s = y.shape
    out = {"verdict": "inconclusive", "difference": None, "interval": None, "pairs": p, "archs": a, "seeds": s,
           "tasks": None, "architecture": None, "interaction": None, "residual": None, "note": ""}
    if p < 2 or a < 2:
        out["note"] = "needs at least two ordered pairs and two architectures"
        return out
    if s < 2:
        out["note"] = "one seed: significance cannot be assessed"
        return out
    tasks, arch = _rm_effect(y, -3), _rm_effect(y, -2)
    cell = y.mean(axis=2)
    inter = cell - cell.mean(1, keepdims=True) - cell.mean(0, keepdims=True) + cell.mean()
    resid = y - y.mean(2, keepdims=True)
    residual = float((resid ** 2).sum() / (p * a * (s - 1)))  # seed-to-seed variance of one cell
    out.update(tasks=tasks, architecture=arch,
               interaction=float(max((inter ** 2).sum() / ((p - 1) * (a - 1)) - residual / s, 0.0)),
               residual=residual)
    if s < 3:
        out["note"] = "two seeds: too few to put an interval on the difference of the effects"
        out["interaction_test"] = _interaction(y)
        return out
    low, high, se = jackknife_interval(y, _effect_difference, confidence)
    out.update(difference=float(_effect_difference(y)), interval=[float(low), float(high)], standard_error=se,
               interval_method="delete-one-seed jackknife, Student's t with seeds - 1 degrees of freedom",
               spread_divisor="levels - 1: spread = sqrt(sum(effect^2) / (levels - 1)), seed noise subtracted",
               interaction_test=_interaction(y))
    gate = alpha / 2
    if tasks["p"] is not None and tasks["p"] < gate and low > 0:
        out["verdict"] = "tasks"
    elif arch["p"] is not None and arch["p"] < gate and high < 0:
        out["verdict"] = "architecture"
    elif tasks["p"] is None and arch["p"] is None:
        out["note"] = "no variation over seeds: significance cannot be assessed"
    return out


# ---------------------------------------------------------------------------------------------
# What to freeze: equivalence, tested as a fixed sequence

SEEDS_CAP = 100  # beyond this many seeds, "more than" is all the power calculation says
POWER = 0.8


def lower_bounds(gains: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """The lower end of the one-sided (1 - alpha) t bound of the mean gain, over the last axis (seeds;
    NaN: missing), vectorised over the leading axes; NaN where fewer than two seeds give no bound."""
    from scipy import stats as sps

    g = np.asarray(gains, dtype=float)
    n = np.isfinite(g).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(n[..., None] > 0, g, 0.0), axis=-1)
        sd = np.sqrt(np.nansum((g - mean[..., None]) ** 2, axis=-1) / (n - 1))
        q = sps.t.ppf(1 - alpha, np.maximum(n - 1, 1))
        return np.where(n >= 2, mean - q * sd / np.sqrt(n), np.nan)


def deepest_safe(lower: np.ndarray, tolerance: float) -> np.ndarray:
    """Fixed-sequence testing along the last axis (l_c = 0, 1, ...): the last level before the first
    one not shown within the tolerance (-1: not even l_c = 0). Each level is tested at the full alpha
    and only if every shallower one passed, so the chance of calling any truly lossy level safe stays
    at alpha without adjustment."""
    safe = np.asarray(lower) > -tolerance  # NaN (no bound) is never safe
    passed = np.cumprod(safe, axis=-1)
    return passed.sum(axis=-1) - 1


def can_pass(gains: Sequence[float], missing: int, tolerance: float, alpha: float = 0.05) -> bool:
    """Whether an l_c with these per-seed gains, and `missing` seeds still to come (any of which may
    also never give a result), could still be shown safe (its lower bound, as in `lower_bounds`,
    above -tolerance), whatever the missing seeds give. False means that training them cannot
    change the verdict, so the adaptive search need not.

    With k known gains (mean m, sum of squared deviations S) and r more, the bound is concave in the
    r new values and symmetric in them, so it is largest with all r equal; over that common value
    its largest is m - sqrt(S (c^2 - r / (k n))), with n = k + r and c = t(1 - alpha, n - 1) /
    sqrt(n (n - 1)), and unbounded when c^2 <= r / (k n) (enough new seeds can outweigh any spread)."""
    g = np.asarray(gains, dtype=float)
    k = len(g)
    if k == 0:
        return missing >= 2  # nothing known yet: anything is possible, given two seeds
    m, spread = float(g.mean()), float(((g - g.mean()) ** 2).sum())
    for r in range(missing + 1):
        n = k + r
        if n < 2:
            continue
        c2 = _t_quantile(1 - alpha, n - 1) ** 2 / (n * (n - 1))
        if c2 <= r / (k * n) or m - np.sqrt(spread * (c2 - r / (k * n))) > -tolerance:
            return True
    return False


def seeds_needed(mean: float, sd: float, tolerance: float, alpha: float = 0.05, power: float = POWER,
                 cap: int = SEEDS_CAP) -> Optional[int]:
    """The smallest number of seeds with which the one-sided paired t test of "loss within the
    tolerance" (mean gain > -tolerance) would succeed with probability `power`, if the true mean gain
    and seed sd were the observed ones. None when no number up to `cap` does (the observed loss is at
    or beyond the tolerance, or too close to it): "more than cap"."""
    from scipy import stats as sps

    if not np.isfinite(mean) or not np.isfinite(sd) or mean + tolerance <= 0:
        return None
    if sd <= 0:
        return 2
    n = np.arange(2, cap + 1)
    reach = sps.nct.sf(sps.t.ppf(1 - alpha, n - 1), n - 1, (mean + tolerance) / (sd / np.sqrt(n)))
    hits = np.flatnonzero(reach >= power)
    return int(n[hits[0]]) if len(hits) else None


def safe_depth(gains_by_level: Sequence[Sequence[float]], tolerance: float, alpha: float = 0.05) -> dict:
    """What to freeze, by equivalence: `gains_by_level[l_c]` holds the per-seed gains (baseline error
    minus transfer error, in metric points) at l_c = 0, 1, .... An l_c is safe only when the lower end
    of the one-sided (1 - alpha) interval of its gain lies above -tolerance (its loss is shown within
    the tolerance); levels are tested from l_c = 0 upward and testing stops at the first that is not
    shown safe. Returns the deepest safe l_c (`frozen`, -1 when none), the per-level bounds, and, for
    the level that stopped the sequence, how many seeds would be needed to show it safe (None: more
    than SEEDS_CAP, or unknown with one seed)."""
    levels = [np.asarray(g, dtype=float) for g in gains_by_level]
    width = max((len(g) for g in levels), default=0)
    table = np.full((len(levels), max(width, 1)), np.nan)
    for i, g in enumerate(levels):
        table[i, :len(g)] = g
    lower = lower_bounds(table, alpha) if width else np.full(len(levels), np.nan)
    frozen = int(deepest_safe(lower, tolerance)) if len(levels) else -1
    out = {"frozen": frozen, "tolerance": tolerance, "alpha": alpha, "lower": [None if np.isnan(v) else float(v) for v in lower],
           "stopped_at": None, "seeds_needed": None, "seeds_cap": SEEDS_CAP, "status": "safe to the last l_c"}
    if frozen + 1 < len(levels):
        stop = levels[frozen + 1]
        out["stopped_at"] = frozen + 1
        if len(stop) >= 2:
            out["seeds_needed"] = seeds_needed(float(stop.mean()), float(stop.std(ddof=1)), tolerance, alpha)
        out["status"] = ("one seed: no interval, so nothing can be shown safe" if len(stop) < 2 else
                         "no l_c shown safe" if frozen < 0 else "safe up to frozen")
    return out


def rm_oneway(m: np.ndarray) -> dict:
    """Do the rows of m[level, seed] differ at all? Repeated-measures one-way F test with seeds as
    subjects (seed effects shared by a seed's jobs drop out), Greenhouse-Geisser corrected for
    correlated levels (transfers into one task share its baseline)."""
    m = np.asarray(m, dtype=float)
    return _rm_effect(m[:, None, :], -3)


def split_half_agreement(values: np.ndarray, splits: int = 200, seed: int = 0) -> dict:
    """Reproducibility of a ranking of the columns of values[seed, item] (higher first): split the
    seeds at random into two disjoint halves, rank the items by each half's mean, and take Kendall
    tau between the two rankings and whether both put the same item first, averaged over splits. An
    independent repeat of the run is what this imitates (with half the seeds), so it is near 0 when
    the items do not differ."""
    values = np.asarray(values, dtype=float)
    s = len(values)
    half = s // 2
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((splits, s)), axis=1)
    a = values[order[:, :half]].mean(axis=1)  # (splits, items)
    b = values[order[:, half:2 * half]].mean(axis=1)
    i, j = np.triu_indices(values.shape[1], 1)
    taus = (np.sign(a[:, i] - a[:, j]) * np.sign(b[:, i] - b[:, j])).mean(axis=1)  # Kendall tau-a
    return {"method": "split-half", "splits": splits, "half": half, "kendall_tau_mean": float(taus.mean()),
            "kendall_tau_interval": [float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))],
            "top_agreement": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))}
