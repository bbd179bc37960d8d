"""How well the estimates agree with the real sweep, and what they advise.

The real curve of a pair is the normalised gain on the validation split: validation, because the
estimates are meant for decisions (what to freeze, which primary), and decisions here are taken on
validation data only; the test split is read once, to report. Each seed's estimate curve (from
that seed's primary) is correlated with the same seed's real curve (from the same primary), so
the seeds are independent replicates of the whole comparison: a correlation is summarised over
seeds on Fisher's z scale (the mean of atanh r with its t interval, turned back by tanh), which
keeps the interval inside [-1, 1].
"""

from __future__ import annotations

import numpy as np

from . import analysis, stats

KEYS = ["arch", "source", "target"]


def real_curves(records):
    """Per (arch, source, target, seed, l_c): the validation normalised gain (folds averaged)."""
    table = analysis.per_seed(records)
    return table.loc[table["split"] == "val", KEYS + ["seed", "frozen", "fraction", "rel"]].reset_index(drop=True)


def mean_curves(real):
    """The real curves averaged over seeds, per (arch, source, target, l_c)."""
    return real.groupby(KEYS + ["frozen"], as_index=False).agg(fraction=("fraction", "first"), rel=("rel", "mean"))


def _rank_correlations(a, b):
    """Kendall's tau-b and Spearman's rho of two paired sequences; None where either is constant
    or too short to rank."""
    from scipy import stats as sps

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None
    return float(sps.kendalltau(a, b).statistic), float(sps.spearmanr(a, b).statistic)


def _height(fraction, values) -> float:
    """The mean height of a curve over its span of depth fractions (trapezoids), as the analysis
    measures transferability."""
    return analysis.area(np.asarray(fraction, float), np.asarray(values, float))


Z_LIMIT = 0.999  # correlations of +-1 are kept just inside, where atanh is finite


def fisher_interval(values):
    """The mean of correlations over seeds and its 95% interval on Fisher's z scale: a t interval
    of atanh(r) (r kept within Z_LIMIT of +-1), turned back by tanh, so it stays inside [-1, 1]
    (and always holds the mean); (None, None, None) without values."""
    r = np.asarray(values, float)
    if not len(r):
        return None, None, None
    mean = float(r.mean())
    i = stats.mean_interval(np.arctanh(np.clip(r, -Z_LIMIT, Z_LIMIT)))
    if i.low is None:
        return mean, None, None
    return mean, min(float(np.tanh(i.low)), mean), max(float(np.tanh(i.high)), mean)


def _summarise(per_seed, by):
    """Per group of `by`: the mean over seeds of per-seed tau and rho with 95% intervals (Fisher's
    z), the seeds that could be ranked, and the curves that could not (constant or too short:
    they have no rank correlation and are counted, not averaged in)."""
    import pandas as pd

    rows = []
    for key, g in per_seed.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for name in ("tau", "rho"):
            mean, low, high = fisher_interval(g[name].dropna())
            row.update({name: mean, f"{name}_low": low, f"{name}_high": high})
        row["seeds"] = int(g["tau"].notna().sum())
        row["unranked"] = int(g["unranked"].sum()) if "unranked" in g else int(g["tau"].isna().sum())
        rows.append(row)
    return pd.DataFrame(rows)


def reachable(estimates):
    """Each estimate curve as the best score of any layer at or above l_c: a transfer that holds l_c
    layers constant still starts from the primary's later layers, so it can reach the features of
    any of them, but none below l_c. Frozen layers only take options away, so this curve, like the
    real one, never rises with l_c. Scores are renamed "NAME (reachable)"."""
    out = estimates.sort_values("frozen", ascending=False).copy()
    out["value"] = out.groupby(KEYS + ["seed", "score"])["value"].cummax()
    out["score"] = out["score"] + " (reachable)"
    return out.sort_values(KEYS + ["seed", "score", "frozen"])


def depth_only(estimates):
    """The reference any estimate must beat: no score at all, only "the more layers held
    constant, the worse" (value -l_c), named "-l_c (no estimate)"."""
    one = estimates[estimates["score"] == estimates["score"].iloc[0]].copy()
    return one.assign(value=-one["frozen"].astype(float), score="-l_c (no estimate)")


ADVICE_SCORES = ("probe", "knn")  # accuracies in %, so a tolerance in points means what it does for the sweep


def freeze_advice(estimates, tolerance: float = 1.0):
    """What to freeze by the estimates alone, per (arch, pair, score): the deepest l_c whose
    reachable score (averaged over seeds) stays within `tolerance` accuracy points of the best the
    primary offers anywhere (its reachable value at the shallowest l_c). Only the accuracy-like
    scores advise; LogME and H-score have no unit a tolerance could be given in."""
    import pandas as pd

    chosen = reachable(estimates[estimates["score"].isin(ADVICE_SCORES)])
    mean = chosen.groupby(KEYS + ["score", "frozen"], as_index=False)["value"].mean()
    rows = []
    for key, curve in mean.groupby(KEYS + ["score"]):
        curve = curve.sort_values("frozen")
        within = curve[curve["value"] >= curve["value"].iloc[0] - tolerance]  # a prefix: reachable never rises
        rows.append({**dict(zip(KEYS + ["score"], key)), "frozen": int(within["frozen"].max()), "tolerance": tolerance})
    return pd.DataFrame(rows, columns=KEYS + ["score", "frozen", "tolerance"])


def curve_agreement(estimates, real):
    """Per (arch, pair, score): tau and rho over l_c between each seed's estimate curve and the
    same seed's real curve, summarised over seeds; and per (arch, score), with arch "all" for
    every architecture, the mean over curves of each seed's correlations, summarised over seeds.
    Curves that cannot be ranked (constant) are counted in `unranked`, not averaged."""
    import pandas as pd

    merged = estimates.merge(real[KEYS + ["seed", "frozen", "rel"]], on=KEYS + ["seed", "frozen"])
    rows = []
    for key, g in merged.groupby(KEYS + ["score", "seed"], sort=False):
        g = g.sort_values("frozen")
        tau, rho = _rank_correlations(g["value"], g["rel"])
        rows.append(dict(zip(KEYS + ["score", "seed"], key), tau=tau, rho=rho, unranked=int(tau is None)))
    per_seed = pd.DataFrame(rows, columns=KEYS + ["score", "seed", "tau", "rho", "unranked"])
    mean = {"tau": ("tau", "mean"), "rho": ("rho", "mean"), "unranked": ("unranked", "sum")}
    per_arch = per_seed.groupby(["arch", "score", "seed"], as_index=False).agg(**mean)
    every = per_seed.groupby(["score", "seed"], as_index=False).agg(**mean).assign(arch="all")
    return _summarise(per_seed, KEYS + ["score"]), _summarise(pd.concat([per_arch, every]), ["arch", "score"])


def pair_agreement(estimates, real, rebase: bool = True):
    """Per (arch, score), and "all" averaged over architectures: tau and rho over ordered pairs
    between each seed's estimated transferability and the same seed's real one. Real
    transferability is the mean height of the real curve over l_c / L_H; estimated, the mean height
    of the score's gain over its shallowest l_c (the raw inputs when l_c = 0 is planned), which
    takes each secondary task's own difficulty out as the baseline does for the real curve.
    `rebase=False` is for a score that is already a gain against the baseline (a truncated sweep's
    curve, truncated.py): its own height is compared, as the real curve's is."""
    import pandas as pd

    truth = {k: _height(g["fraction"], g["rel"]) for k, g in real.sort_values("frozen").groupby(KEYS + ["seed"])}
    rows = []
    for (arch, score, seed), g in estimates.groupby(["arch", "score", "seed"], sort=False):
        est, got = [], []
        for key, c in g.sort_values("frozen").groupby(KEYS):
            if (*key, seed) in truth:
                est.append(_height(c["fraction"], c["value"] - (c["value"].iloc[0] if rebase else 0.0)))
                got.append(truth[(*key, seed)])
        tau, rho = _rank_correlations(est, got)
        rows.append({"arch": arch, "score": score, "seed": seed, "tau": tau, "rho": rho, "unranked": int(tau is None)})
    per_seed = pd.DataFrame(rows, columns=["arch", "score", "seed", "tau", "rho", "unranked"])
    mean = {"tau": ("tau", "mean"), "rho": ("rho", "mean"), "unranked": ("unranked", "sum")}
    every = per_seed.groupby(["score", "seed"], as_index=False).agg(**mean).assign(arch="all")
    return _summarise(pd.concat([per_seed, every]), ["arch", "score"])


def always_freeze(chosen: dict, deepest: int):
    """The reference for the advice: one fixed l_c = k for every curve, against the sweep's own
    choices `chosen` {(arch, source, target): l_c}. Returns [(k, curves where k is the sweep's
    choice, mean distance in layers)] for k = 0..deepest. The best k can only be picked after
    seeing the sweep's choices, so its count is an upper bound for any fixed k chosen beforehand."""
    got = np.array([v for v in chosen.values() if v is not None], float)
    return [(k, int((got == k).sum()), float(np.abs(got - k).mean()) if len(got) else float("nan"))
            for k in range(deepest + 1)]
