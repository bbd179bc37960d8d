"""From a results table to the paper's observations, each with its statistic and interval.

`observations(results)` takes the `results.csv` table of a run (a pandas DataFrame, a path, or a
list of job records) and returns every verdict the report prints. It reads nothing else, so
results produced anywhere can be analysed, and the statistics are testable on tables alone.

Units. A transfer's *gain* is the baseline's error minus the transfer's (the baseline is the
model of the same architecture and seed trained on the secondary task alone), so positive means
the transfer is better. An error is the metric itself when lower is better, else 100 minus it (a
higher-is-better metric is a percentage). The gain is kept in metric points, and is also
*normalised*: divided by how far the baseline's mean error over seeds lies below the chance error
(what a predictor that ignores its input scores), it is the gain as a share of what the baseline
learned above chance (-0.5: the transfer lost half of it), which compares across tasks, metrics
and difficulty. A table without a chance level for a task normalises that task by the baseline's
mean error instead (the relative change in error), and says so in its notes. `l_c` is also a
fraction of depth, `l_c / L_H`, and a pair's *transferability* is the area under its
normalised-gain curve over that fraction (divided by the fraction's span), so architectures of
different depth count alike. Every comparison between pairs, directions or architectures uses the
normalised transferability.

Statistics (see `stats`): seeds are the independent units and every test pairs by seed; sample
standard deviations (ddof = 1) and t intervals; Holm's correction across the comparisons of one
family (the asymmetry table; the `l_c` values of one curve). Model-selection decisions (what to
freeze) use the validation split, and the test split is only reported.

Meanings changed by issue #16 (keys kept): `what_to_freeze[].frozen` is the deepest l_c whose loss
is *shown* within the tolerance (equivalence, fixed sequence from l_c = 0; `stats.safe_depth`), no
longer the deepest not significantly worse, and `established` is true exactly when some l_c was
shown safe; new keys say where the sequence stopped and how many seeds would decide it.
`relatedness.stability` is split-half agreement (two disjoint halves of the seeds), so
`kendall_tau_mean` is near 0 on noise, and `top_pair_frequency` / `first_merge_frequency` are the
shares of splits in which both halves agree; `relatedness.p_value` tests whether pairs differ at all.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used (see the package docstring)
    import pandas as pd

from . import stats
from .errors import UserError
from .results import RESULT_COLUMNS, metric_lower_is_better, plain, result_rows

SCALE_FLOOR = 5.0  # metric points: the least margin over chance a normalised gain is divided by
REQUIRED = ["arch", "source", "target", "seed", "frozen", "split", "metric", "value"]
GROUP = ["arch", "source", "target"]


class Record(dict):
    """A dict whose keys also read as attributes (`obs.factors.verdict`); JSON-serialisable."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# ---------------------------------------------------------------------------------------------
# The table


def results_table(results) -> pd.DataFrame:
    """`results` as a DataFrame with results.csv's columns: a DataFrame, a CSV path, or job records."""
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results.copy()
    if isinstance(results, (str, Path)):
        try:
            return pd.read_csv(results)
        except (OSError, pd.errors.ParserError) as err:
            raise UserError(f"cannot read the results table {results}: {err}") from None
    return pd.DataFrame(result_rows(list(results)), columns=RESULT_COLUMNS)


def _clean(df: pd.DataFrame, notes: List[str]) -> pd.DataFrame:
    """One row per job and split, holding the task's own metric as an error, with every column the
    analysis needs (missing optional columns are inferred, and said so)."""
    import pandas as pd

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"the results table lacks the column(s) {', '.join(missing)}; expected at least "
                        f"{', '.join(REQUIRED)} (the columns of results.csv)")
    if "status" in df.columns:
        pruned = df["status"] == "pruned"
        if pruned.any():
            notes.append(f"{df.loc[pruned, 'key'].nunique() if 'key' in df.columns else int(pruned.sum())} transfers "
                         "stopped early by the adaptive search (they could not come within the tolerance) are not "
                         "points of any curve; their l_c counts as not shown safe")
        failed = df["status"].notna() & ~df["status"].isin(["ok", "", "pruned"])
        if failed.any():
            notes.append(f"{int(failed.sum())} rows of failed jobs left out")
        df = df[~failed & ~pruned]
    df = df.copy()
    df["source"] = df["source"].where(df["source"].notna(), "").astype(str).replace("nan", "")
    if "kind" not in df.columns:
        df["kind"] = np.where(df["source"] == "", "scratch", "transfer")
    if "main" in df.columns:
        df = df[df["main"].astype(str).str.lower().isin(["true", "1", "yes"])]
    else:  # the first metric listed for a task is its own (results.csv lists it first)
        first = df.groupby("target", sort=False)["metric"].first()
        df = df[df["metric"] == df["target"].map(first)]
    if "lower_is_better" in df.columns:
        df["lower"] = df["lower_is_better"].astype(str).str.lower().isin(["true", "1", "yes"])
    else:
        df["lower"] = df["metric"].map(metric_lower_is_better)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    bad = ~np.isfinite(df["value"])
    if bad.any():
        notes.append(f"{int(bad.sum())} rows without a finite value left out")
        df = df[~bad]
    df["error"] = np.where(df["lower"], df["value"], 100.0 - df["value"])
    for col in ("fold", "source_fold"):  # blank (no folds) becomes -1, so that it groups with numbers
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(-1) if col in df.columns else -1
    df["frozen"] = pd.to_numeric(df["frozen"], errors="coerce")
    if "num_layers" not in df.columns or df["num_layers"].isna().all():
        depth = df[df["kind"] == "transfer"].groupby("arch")["frozen"].max()
        df["num_layers"] = df["arch"].map(depth)
        if len(depth):
            notes.append("num_layers not given: each architecture's depth is taken as its largest l_c")
    return df


def per_seed(results, notes: Optional[List[str]] = None) -> pd.DataFrame:
    """One row per (arch, source, target, seed, l_c, split): the transfer's metric, its baseline's,
    the gain in points and normalised, and l_c as a fraction of depth; folds averaged."""

    notes = [] if notes is None else notes
    df = _clean(results_table(results), notes)
    keys = ["arch", "target", "seed", "fold", "split"]
    base = df[df["kind"] == "scratch"].groupby(keys, as_index=False).agg(baseline=("value", "mean"),
                                                                          baseline_error=("error", "mean"))
    scale = _scales(df, base, notes)
    t = df[df["kind"] == "transfer"].merge(base, on=keys, how="left").merge(scale, on=["arch", "target", "fold", "split"], how="left")
    orphan = t["baseline"].isna()
    if orphan.any():
        notes.append(f"{int(orphan.sum())} transfer rows have no baseline of the same architecture, task and seed; left out")
        t = t[~orphan]
    flat = ~(t["scale"] > 0)
    if flat.any():
        names = sorted(set(t.loc[flat, "target"]))
        notes.append(f"the baseline of {', '.join(names)} is no better than chance (or has no errors), so its "
                     "normalised gains are undefined: its curves are in metric points only, and it is left out of "
                     "transferability, asymmetry, factors and relatedness")
    t = t.assign(gain=t["baseline_error"] - t["error"])
    t["rel"] = np.where(flat, np.nan, t["gain"] / t["scale"].where(~flat, 1.0))
    out = t.groupby(GROUP + ["seed", "frozen", "split"], as_index=False).agg(
        num_layers=("num_layers", "max"), metric=("metric", "first"), lower=("lower", "first"),
        value=("value", "mean"), baseline=("baseline", "mean"), gain=("gain", "mean"), rel=("rel", "mean"))
    out["frozen"] = out["frozen"].astype(int)
    out["fraction"] = out["frozen"] / out["num_layers"]
    return out


def _scales(df: pd.DataFrame, base: pd.DataFrame, notes: List[str]) -> pd.DataFrame:
    """What a gain is divided by, per (arch, target, fold, split): the distance from the chance
    error to the baseline's mean error over seeds (the share of what the baseline learned above
    chance), or, for a task whose chance level is not given, the baseline's mean error (the
    relative change in error)."""
    import pandas as pd

    scale = base.groupby(["arch", "target", "fold", "split"], as_index=False).agg(error=("baseline_error", "mean"))
    chance = pd.to_numeric(df["chance"], errors="coerce") if "chance" in df.columns else pd.Series(np.nan, df.index)
    chance_error = pd.Series(np.where(df["lower"], chance, 100.0 - chance), index=df.index)
    levels = chance_error.groupby(df["target"]).max()
    scale["chance_error"] = scale["target"].map(levels)
    missing = sorted(set(scale.loc[scale["chance_error"].isna(), "target"]))
    if missing:
        notes.append(f"no chance level for {', '.join(missing)}: its gains are normalised by the baseline's error "
                     "(the relative change in error) instead of the baseline's distance from chance")
    margin = scale["chance_error"] - scale["error"]
    floored = scale["chance_error"].notna() & (margin > 0) & (margin < SCALE_FLOOR)
    if floored.any():
        names = sorted(set(scale.loc[floored, "target"]))
        notes.append(f"the baseline of {', '.join(names)} is less than {SCALE_FLOOR:g} points above chance: its gains are "
                     f"divided by {SCALE_FLOOR:g} points instead, so that a small gain is not read as a multiple of a "
                     "margin that is mostly noise")
    margin = np.where(floored, SCALE_FLOOR, margin)
    scale["scale"] = np.where(scale["chance_error"].notna(), margin, scale["error"])
    return scale[["arch", "target", "fold", "split", "scale"]]


def area(fraction: np.ndarray, values: np.ndarray) -> float:
    """Mean height of a curve over its span of depth fractions (trapezoids); a lone point is itself."""
    if len(values) == 1:
        return float(values[0])
    span = fraction[-1] - fraction[0]
    return float(np.sum(np.diff(fraction) * (values[1:] + values[:-1]) / 2) / span)


def seed_scores(table: pd.DataFrame, split: str, notes: List[str]) -> pd.DataFrame:
    """Per (arch, source, target, seed): the area under the normalised and raw gain curves. A
    seed that lacks some `l_c` of its curve is left out rather than averaged over fewer points."""
    import pandas as pd

    rows, incomplete = [], []
    for (arch, source, target), curve in table[table["split"] == split].groupby(GROUP):
        levels = sorted(curve["frozen"].unique())
        if curve["rel"].isna().any():  # no normalised gain (said in the notes)
            continue
        for seed, one in curve.groupby("seed"):
            one = one.sort_values("frozen")
            if list(one["frozen"]) != levels:
                incomplete.append(f"{arch} {source} → {target} seed {seed}")
                continue
            f = one["fraction"].to_numpy(float)
            rows.append({"arch": arch, "source": source, "target": target, "seed": seed,
                         "score": area(f, one["rel"].to_numpy(float)), "points": area(f, one["gain"].to_numpy(float))})
    if incomplete:
        notes.append(f"{len(incomplete)} curves of one seed lack some l_c and are left out of transferability "
                     f"(first: {incomplete[0]})")
    return pd.DataFrame(rows, columns=GROUP + ["seed", "score", "points"])


def _interval(values) -> dict:
    i = stats.mean_interval(values)
    return {"mean": i.mean, "sd": i.sd, "ci": None if i.low is None else [i.low, i.high], "n": i.n}


# ---------------------------------------------------------------------------------------------
# The observations


def curves(table: pd.DataFrame, split: str, alpha: float, test: str) -> List[dict]:
    """Per (arch, pair, l_c): the metric, the baseline and the gain with intervals; the gain tested
    against 0 and Holm-adjusted across the curve's `l_c` values."""

    out = []
    for (arch, source, target), curve in table[table["split"] == split].groupby(GROUP):
        points = []
        for frozen, at in curve.groupby("frozen"):
            result = stats.paired_test(at["gain"], test)
            points.append({"arch": arch, "source": source, "target": target, "frozen": int(frozen),
                           "num_layers": int(at["num_layers"].max()), "fraction": float(at["fraction"].iloc[0]),
                           "metric": at["metric"].iloc[0], "lower_is_better": bool(at["lower"].iloc[0]),
                           "seeds": len(at), "value": _interval(at["value"]), "baseline": _interval(at["baseline"]),
                           "gain": _interval(at["gain"]), "relative_gain": _interval(at["rel"]),
                           "t": result.statistic, "p": result.p})
        for point, adjusted in zip(points, stats.holm([p["p"] for p in points])):
            point["p_adjusted"] = adjusted
            point["significant_loss"] = adjusted is not None and adjusted < alpha and point["gain"]["mean"] < 0
        out += points
    return out


def transfer_depth(points: List[dict]) -> List[dict]:
    """Per curve: the deepest `l_c` such that neither it nor any shallower `l_c` loses significantly
    against the baseline (-1 when full fine-tuning already does); None with one seed."""
    out = []
    by_curve = defaultdict(list)
    for p in points:
        by_curve[p["arch"], p["source"], p["target"]].append(p)
    for (arch, source, target), ps in by_curve.items():
        ps.sort(key=lambda p: p["frozen"])
        depth = None
        if min(p["seeds"] for p in ps) >= 2:
            depth = -1
            for p in ps:
                if p["significant_loss"]:
                    break
                depth = p["frozen"]
        num_layers = ps[0]["num_layers"]
        out.append({"arch": arch, "source": source, "target": target, "num_layers": num_layers, "depth": depth,
                    "fraction": None if depth is None or depth < 0 else depth / num_layers})
    return out


def transferability(scores: pd.DataFrame) -> List[dict]:
    """Per (arch, ordered pair), and averaged over architectures ("all"): the normalised
    transferability and its points equivalent, with intervals over seeds."""

    out = []
    for (arch, source, target), g in scores.groupby(GROUP):
        out.append({"arch": arch, "source": source, "target": target, **_interval(g["score"]),
                    "points": _interval(g["points"])})
    if scores["arch"].nunique() > 1:
        pooled = scores.groupby(["source", "target", "seed"], as_index=False)[["score", "points"]].mean()
        for (source, target), g in pooled.groupby(["source", "target"]):
            out.append({"arch": "all", "source": source, "target": target, **_interval(g["score"]),
                        "points": _interval(g["points"])})
    return out


def asymmetry(scores: pd.DataFrame, alpha: float, test: str) -> List[dict]:
    """A → B against B → A per architecture (and pooled over architectures), paired by seed,
    Holm-adjusted across every comparison of the table."""
    import pandas as pd

    frames = [scores]
    if scores["arch"].nunique() > 1:
        frames.append(scores.groupby(["source", "target", "seed"], as_index=False)[["score", "points"]].mean().assign(arch="all"))
    rows = []
    for arch, g in pd.concat(frames).groupby("arch", sort=False):
        by = {k: dict(zip(v["seed"], v["score"])) for k, v in g.groupby(["source", "target"])}
        tasks = sorted({t for k in by for t in k})
        for i, a in enumerate(tasks):
            for b in tasks[i + 1:]:
                ab, ba = by.get((a, b)), by.get((b, a))
                if not ab or not ba:
                    continue
                seeds = sorted(set(ab) & set(ba))
                if not seeds:
                    continue
                diffs = np.array([ab[s] - ba[s] for s in seeds])
                result = stats.paired_test(diffs, test)
                rows.append({"arch": arch, "a": a, "b": b, "a_to_b": float(np.mean([ab[s] for s in seeds])),
                             "b_to_a": float(np.mean([ba[s] for s in seeds])), "difference": _interval(diffs),
                             "seeds": len(seeds), "test": test, "statistic": result.statistic, "df": result.df,
                             "p": result.p, "note": result.note, "_diffs": diffs})
    tested = sum(r["p"] is not None for r in rows)
    for row, adjusted in zip(rows, stats.holm([r["p"] for r in rows])):
        row["p_adjusted"] = adjusted
        row["nonsymmetric"] = adjusted is not None and adjusted < alpha
        # adjusted as the p-value is: it excludes 0 exactly where Holm rejects; "difference" is unadjusted
        wide, level = stats.adjusted_interval(row.pop("_diffs"), row["p"], adjusted, alpha, test)
        bounded = wide is not None and wide.low is not None and np.isfinite([wide.low, wide.high]).all()
        row["ci_adjusted"] = [wide.low, wide.high] if bounded else None  # None: unbounded or no noise estimate
        row["ci_adjusted_level"] = level
        row["assessable"] = _can_reject(test, row["seeds"], tested, alpha)
    return rows


def _can_reject(test: str, seeds: int, family: int, alpha: float) -> bool:
    """Whether any comparison of the family could be called at all: the exact sign-flip test's
    smallest p-value is 2 / 2^n, which Holm multiplies by the family's size at first."""
    if seeds < 2:
        return False
    return test != "sign-flip" or family * 2.0 / 2 ** seeds < alpha


def factor_table(scores: pd.DataFrame, notes: List[str]) -> np.ndarray:
    """y[pair, arch, seed] of normalised transferability, keeping the pairs every architecture has
    and the seeds every cell has."""

    archs = sorted(scores["arch"].unique())
    cells = scores.groupby(["source", "target"])["arch"].nunique()
    pairs = [p for p, n in cells.items() if n == len(archs)]
    if len(pairs) < len(cells):
        notes.append(f"{len(cells) - len(pairs)} ordered pairs not run on every architecture are left out of the factor analysis")
    kept = scores[[(s, t) in set(pairs) for s, t in zip(scores["source"], scores["target"])]]
    counts = kept.groupby("seed").size()
    seeds = sorted(counts[counts == len(pairs) * len(archs)].index)
    y = np.full((len(pairs), len(archs), len(seeds)), np.nan)
    index = {(s, t): i for i, (s, t) in enumerate(pairs)}
    for row in kept[kept["seed"].isin(seeds)].itertuples():
        y[index[row.source, row.target], archs.index(row.arch), seeds.index(row.seed)] = row.score
    return y


def relatedness(scores: pd.DataFrame, resamples: int, seed: int, alpha: float = 0.05) -> Optional[dict]:
    """Task relatedness from normalised transferability averaged over architectures: the matrix with
    intervals; whether the ordered pairs differ at all (`p_value`: a repeated-measures F test over
    pairs with seeds as subjects; `related`: it rejects at alpha); a hierarchical clustering and a
    ranking, which mean something only when it rejects; and how well the ranking reproduces
    (`stability`: split-half agreement, near 0 when the pairs do not differ). `resamples`: the
    number of random splits of the seeds."""

    pooled = scores.groupby(["source", "target", "seed"], as_index=False)["score"].mean()
    if pooled.empty:
        return None
    tasks = list(dict.fromkeys(list(pooled["source"]) + list(pooled["target"])))
    pairs = sorted(set(zip(pooled["source"], pooled["target"])))
    matrix = np.full((len(tasks), len(tasks)), np.nan)
    entries = []
    for (source, target), g in pooled.groupby(["source", "target"]):
        i = _interval(g["score"])
        matrix[tasks.index(source), tasks.index(target)] = i["mean"]
        entries.append({"source": source, "target": target, **i})
    wide = pooled.pivot(index="seed", columns=["source", "target"], values="score").dropna()
    out = {"tasks": tasks, "matrix": matrix.tolist(), "pairs": entries, "linkage": None, "stability": None,
           "test": None, "p_value": None, "related": False, "alpha": alpha}
    if len(tasks) >= 2:
        out["linkage"] = _cluster(matrix).tolist()
    order = sorted(pairs, key=lambda p: -matrix[tasks.index(p[0]), tasks.index(p[1])])
    out["ranking"] = [{"source": s, "target": t, "rank": r + 1} for r, (s, t) in enumerate(order)]
    if len(wide) >= 2 and len(pairs) >= 2:
        test = stats.rm_oneway(wide.to_numpy(float).T)
        out["test"] = {"method": "repeated-measures F over ordered pairs, seeds as subjects, Greenhouse-Geisser",
                       "F": test["F"], "df": test["df"], "epsilon": test["epsilon"], "p": test["p"]}
        out["p_value"] = test["p"]
        out["related"] = test["p"] is not None and test["p"] < alpha
        out["stability"] = _stability(wide, order, resamples, seed)
        for entry, interval in zip(out["ranking"], _rank_intervals(wide, order, resamples, seed)):
            entry["rank_interval"] = interval
    return out


def _rank_intervals(wide: pd.DataFrame, order, resamples: int, seed: int) -> List[List[float]]:
    """Each ranked pair's 95% percentile interval of its rank over resamples of the seeds (one pair at
    a time, unadjusted); kept for readers of observations.json, not a measure of reproducibility."""
    rng = np.random.default_rng(seed)
    values = wide.to_numpy(float)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    ranks = (-means).argsort(axis=1).argsort(axis=1) + 1
    low, high = np.percentile(ranks, [2.5, 97.5], axis=0)
    columns = list(wide.columns)
    return [[float(low[columns.index(p)]), float(high[columns.index(p)])] for p in order]


def _symmetric_distance(matrix: np.ndarray) -> np.ndarray:
    """Relatedness of two tasks is the mean of both directions (one if only one ran); the
    distance is how far it falls below the most related pair's."""
    both = np.where(np.isnan(matrix), matrix.T, matrix)
    np.fill_diagonal(both, 0.0)
    pair = np.stack([both, both.T])
    runs = np.isfinite(pair).sum(axis=0)
    sym = np.where(runs > 0, np.nansum(pair, axis=0) / np.maximum(runs, 1), np.nan)  # NaN: neither direction ran
    top = np.nanmax(sym[~np.eye(len(sym), dtype=bool)]) if np.isfinite(sym).any() else 0.0
    dist = top - sym
    worst = np.nanmax(dist) if np.isfinite(dist).any() else 1.0
    dist = np.where(np.isnan(dist), worst + 1.0, dist)  # pairs never run are the farthest apart
    np.fill_diagonal(dist, 0.0)
    return dist


def _cluster(matrix: np.ndarray) -> np.ndarray:
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    return hierarchy.linkage(squareform(_symmetric_distance(matrix), checks=False), method="average")


def _stability(wide: pd.DataFrame, order, splits: int, seed: int) -> dict:
    """How well the ranking of ordered pairs, and the clustering's first merge (the two tasks most
    related both ways, which average linkage joins first), reproduce: split the seeds into two
    disjoint halves at random and compare the halves (`stats.split_half_agreement`), as an
    independent repeat of the run with half the seeds would. Agreement of resamples with the run's
    own ranking is not used: it is high even on pure noise."""

    values = wide.to_numpy(float)  # (seeds, pairs)
    columns = list(wide.columns)
    ranking = stats.split_half_agreement(values, splits, seed)
    unordered = sorted({tuple(sorted(c)) for c in columns})
    both = np.stack([values[:, [k for k, c in enumerate(columns) if tuple(sorted(c)) == u]].mean(axis=1)
                     for u in unordered], axis=1)  # (seeds, unordered pairs)
    merge = stats.split_half_agreement(both, splits, seed)
    return {"method": "split-half", "splits": splits, "resamples": splits, "half": ranking["half"],
            "kendall_tau_mean": ranking["kendall_tau_mean"], "kendall_tau_interval": ranking["kendall_tau_interval"],
            "top_pair": list(order[0]), "top_pair_frequency": ranking["top_agreement"],
            "first_merge": list(unordered[int(np.argmax(both.mean(axis=0)))]),
            "first_merge_frequency": merge["top_agreement"]}


PRUNED = "a transfer stopped early: it could not come within the tolerance"


def stopped_levels(results, tolerance: float, alpha: float = 0.05) -> Dict[tuple, str]:
    """{(arch, source, target, l_c): why} for the l_c the adaptive search stopped before training
    them fully: a transfer stopped early (it could not come within the tolerance), or seeds without
    a result whatever values of which could not show the l_c safe (stats.can_pass). Either way the
    l_c is not shown safe, as the full sweep's rule would also find."""
    df = results_table(results)
    out: Dict[tuple, str] = {}
    if df.empty:
        return out
    source = df["source"].where(df["source"].notna(), "").astype(str).replace("nan", "")
    df = df.assign(source=source)
    if "status" in df.columns:
        pruned = df[df["status"] == "pruned"]
        for a, s, t, k in zip(pruned["arch"], pruned["source"], pruned["target"], pruned["frozen"]):
            out[a, s, t, int(k)] = PRUNED
    baseline_seeds = df[df["source"] == ""].groupby(["arch", "target"])["seed"].agg(set).to_dict()
    transfers = df[df["source"] != ""]
    if transfers.empty:
        return out
    table = per_seed(df)
    split = "val" if (table["split"] == "val").any() else "test"
    gains = {key: g["gain"].to_numpy(float) for key, g in table[table["split"] == split].groupby(GROUP + ["frozen"])}
    for (a, s, t, k), seeds in transfers.groupby(GROUP + ["frozen"])["seed"]:
        key = (a, s, t, int(k))
        missing = sorted(baseline_seeds.get((a, t), set()) - set(seeds))
        if key in out or not missing:
            continue
        if not stats.can_pass(gains.get(key, []), len(missing), tolerance, alpha):
            out[key] = (f"seed(s) {', '.join(str(int(m)) for m in missing)} have no result, and whatever they gave, "
                        "it could not be shown safe")
    return out


def freeze_rules(results, tolerance: float, alpha: float = 0.05) -> List[dict]:
    """What to freeze for every curve of a results table (or job records), as the report says it:
    what the adaptive search asks of the records it has."""
    return what_to_freeze(per_seed(results), tolerance, alpha, stopped_levels(results, tolerance, alpha))


def what_to_freeze(table: pd.DataFrame, tolerance: float, alpha: float = 0.05,
                   stopped: Optional[Dict[tuple, str]] = None) -> List[dict]:
    """Per (arch, pair), by equivalence (`stats.safe_depth`): the deepest `l_c` whose loss against the
    baseline, on the validation split, is shown to be within `tolerance` metric points (the lower end
    of the one-sided (1 - alpha) interval of the gain above -tolerance), testing l_c = 0, 1, ... in
    order and stopping at the first not shown safe; -1 when not even l_c = 0 is, with the seeds that
    would be needed to decide. A loss that is merely not significant is not safe. The test split at
    the chosen `l_c` is reported, never used to choose. `established` is kept for old readers: it is
    true exactly when some l_c was shown safe. An l_c in `stopped` (stopped_levels: the adaptive
    search stopped it, and why) is not shown safe, so the sequence stops there at the latest."""

    split = "val" if (table["split"] == "val").any() else "test"
    out = []
    tests = {key: group for key, group in table[table["split"] == "test"].groupby(GROUP + ["frozen"])}
    why, stops = stopped or {}, {}
    for arch, source, target, k in why:
        stops[arch, source, target] = min(k, stops.get((arch, source, target), k))
    for (arch, source, target), curve in table[table["split"] == split].groupby(GROUP):
        gains = {int(k): g["gain"].to_numpy(float) for k, g in curve.groupby("frozen")}
        stop = stops.get((arch, source, target))
        levels = sorted(k for k in gains if stop is None or k < stop)
        rule = stats.safe_depth([gains[k] for k in levels], tolerance, alpha)
        chosen = int(levels[rule["frozen"]]) if rule["frozen"] >= 0 else -1
        stopped = None if rule["stopped_at"] is None else int(levels[rule["stopped_at"]])
        if stopped is None and stop is not None:
            stopped = stop
            rule = {**rule, "status": f"stopped early at l_c = {stop}: {why[arch, source, target, stop]}",
                    "seeds_needed": None}
        at_test = tests.get((arch, source, target, chosen), table.iloc[:0])
        out.append({"arch": arch, "source": source, "target": target, "num_layers": int(curve["num_layers"].max()),
                    "frozen": chosen, "chosen_on": split, "tolerance": tolerance, "alpha": alpha,
                    "rule": "equivalence, fixed sequence from l_c = 0", "established": chosen >= 0,
                    "status": rule["status"], "stopped_at": stopped, "seeds_needed": rule["seeds_needed"],
                    "stopped_early": stop is not None and stopped == stop,
                    "seeds_cap": rule["seeds_cap"], "seeds": int(curve.groupby("frozen").size().min()),
                    "lower_bounds": dict(zip(levels, rule["lower"])),
                    "test_value": _interval(at_test["value"]) if len(at_test) else None,
                    "test_gain": _interval(at_test["gain"]) if len(at_test) else None})
    return out


def observations(results, alpha: float = 0.05, test: str = "t", tolerance: float = 1.0,
                 resamples: int = 2000, seed: int = 0) -> Record:
    """Every verdict of the report, from a results table alone.

    `results`: results.csv as a DataFrame (or its path, or job records). Required columns: arch,
    source (empty for models trained from scratch), target, seed, frozen (empty for those), split
    ("val", "test"), metric, value; optional: num_layers (L_H; else the largest l_c), lower_is_better
    (else from the metric's name), chance (the metric's chance level; else gains are normalised by
    the baseline's error), main (which metric is the task's own; else the first listed per task),
    fold and source_fold (scores are averaged over folds), status (failed jobs are left out).
    `test`: "t" (paired t, n - 1 degrees of freedom) or "sign-flip" (exact permutation).
    Returns a dict (keys also read as attributes) that json.dumps writes as it is.
    """
    if test not in stats.TESTS:
        raise UserError(f"test must be one of {', '.join(stats.TESTS)}; got {test!r}")
    notes: List[str] = []
    raw = results_table(results)
    table = per_seed(raw, notes)
    stopped = stopped_levels(raw, tolerance, alpha)
    seeds = int(table["seed"].nunique()) if len(table) else 0
    out: Dict[str, Any] = {
        "settings": {"alpha": alpha, "test": test, "tolerance": tolerance, "resamples": resamples,
                     "confidence": 0.95, "correction": "holm",
                     "gain": "baseline error minus transfer error; normalised: divided by the chance error minus "
                             "the baseline's mean error (by the baseline's mean error where no chance level is given)",
                     "transferability": "area under the normalised gain over l_c / L_H, divided by its span",
                     "folds": "averaged within each seed"},
        "seeds": seeds, "notes": notes, "curves": [], "transfer_depth": [], "transferability": [],
        "asymmetry": [], "nonsymmetric": False, "factors": None, "relatedness": None, "what_to_freeze": []}
    if table.empty:
        notes.append("no transfer has a usable baseline yet, so there is nothing to compare")
        out["factors"] = {"verdict": "inconclusive", "interval": None, "difference": None, "note": "no transfers"}
        return plain(out, Record)
    if seeds < 2:
        notes.append("one seed: significance cannot be assessed, so no verdict is asserted")
    split = "test" if (table["split"] == "test").any() else table["split"].iloc[0]
    out["curves"] = curves(table, split, alpha, test)
    out["transfer_depth"] = transfer_depth(out["curves"])
    out["what_to_freeze"] = what_to_freeze(table, tolerance, alpha, stopped)
    if not (table["split"] == "val").any():
        notes.append("no validation rows: what to freeze was chosen on the test split")
    out["split"] = split
    if PRUNED in stopped.values() or partial_curves(table):
        notes.append("the curves stop at different l_c (an adaptive search trains only what the advice needs), so "
                     "transferability, nonsymmetry, tasks against architectures and relatedness, which compare whole "
                     "curves, are not computed")
        out["factors"] = {"verdict": "inconclusive", "interval": None, "difference": None, "note": "partial curves"}
        return plain(out, Record)
    scores = seed_scores(table, split, notes)
    out["transferability"] = transferability(scores)
    out["asymmetry"] = asymmetry(scores, alpha, test)
    out["nonsymmetric"] = any(r["nonsymmetric"] for r in out["asymmetry"])
    if scores["arch"].nunique() >= 2:
        y = factor_table(scores, notes)
        out["factors"] = stats.factors(y, alpha) if y.size else \
            {"verdict": "inconclusive", "interval": None, "difference": None, "note": "no seed has every cell"}
    else:
        out["factors"] = {"verdict": "inconclusive", "interval": None, "difference": None,
                          "note": "one architecture: the tasks cannot be weighed against architectures"}
    out["relatedness"] = relatedness(scores, min(resamples, 1000), seed, alpha)
    return plain(out, Record)


def partial_curves(table: pd.DataFrame) -> bool:
    """Whether the curves of one architecture hold different l_c (an adaptive search's do)."""
    levels = table.groupby(GROUP)["frozen"].agg(lambda f: tuple(sorted(set(f))))
    return any(len(set(group)) > 1 for _, group in levels.groupby(level="arch"))


# ---------------------------------------------------------------------------------------------
# Words


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def _ci_pct(ci, label: str = "") -> str:
    return "" if not ci else f", 95% CI{label} {100 * ci[0]:+.1f}% to {100 * ci[1]:+.1f}%"


def summary(obs: Record) -> List[str]:
    """Plain sentences about what the run measured, stated only as strongly as the statistics allow."""
    if not obs["transferability"]:
        return ["Nothing to compare yet" + (": " + "; ".join(obs["notes"]) if obs["notes"] else "") + "."]
    lines = []
    seeds = obs["seeds"]
    pooled = [t for t in obs["transferability"] if t["arch"] == "all"] or obs["transferability"]
    best, worst = max(pooled, key=lambda t: t["mean"]), min(pooled, key=lambda t: t["mean"])
    lines.append(f"Transferability (the mean gain against the baseline over the depth fraction l_c / L_H, as a share "
                 f"of what the baseline learned above chance; positive: fewer errors than training on the secondary "
                 f"task alone) ranges from "
                 f"{_pct(worst['mean'])} ({worst['source']} → {worst['target']}{_ci_pct(worst['ci'], ' (unadjusted)')}) to "
                 f"{_pct(best['mean'])} ({best['source']} → {best['target']}{_ci_pct(best['ci'], ' (unadjusted)')}), over "
                 f"{seeds} seed(s), for these test sets (the intervals are over seeds; the extremes are picked from "
                 "many pairs, so their unadjusted intervals overstate how sure the ends are).")
    rel = obs.get("relatedness") or {}
    stab = rel.get("stability")
    if rel.get("p_value") is not None:
        if rel.get("related"):
            lines.append(f"Task relatedness: the ordered pairs differ in transferability (repeated-measures F test over "
                         f"pairs, seeds as subjects, p = {rel['p_value']:.3g}); {best['source']} → {best['target']} ranks "
                         "first" + (f", and two disjoint halves of the seeds rank the pairs alike with a mean Kendall tau "
                                    f"of {stab['kendall_tau_mean']:.2f} (0: no agreement) and put the same pair first in "
                                    f"{100 * stab['top_pair_frequency']:.0f}% of {stab['splits']} random splits"
                                    if stab else "") + ".")
        else:
            lines.append(f"Task relatedness: this run does not show that the ordered pairs differ in transferability "
                         f"(repeated-measures F test over pairs, p = {rel['p_value']:.3g}), so no ranking or clustering "
                         "of the tasks is asserted" + (f"; two halves of the seeds rank the pairs alike with a mean "
                                                       f"Kendall tau of {stab['kendall_tau_mean']:.2f}" if stab else "")
                         + ".")
    lines += _asymmetry_lines(obs)
    f = obs.get("factors") or {}
    if f.get("tasks"):
        iv = f["interval"]
        verdict = {"tasks": "the tasks matter more than the architecture",
                   "architecture": "the architecture matters more than the tasks",
                   "inconclusive": "neither can be said to matter more (inconclusive)"}[f["verdict"]]
        lines.append(f"Tasks against architectures: the spread (standard deviation of effects, divisor levels - 1, "
                     f"seed noise subtracted) of transferability across ordered pairs is "
                     f"{_pct(f['tasks']['spread'])[1:]} of the baseline's margin over chance and across architectures "
                     f"{_pct(f['architecture']['spread'])[1:]} (pair effect p = {_fmt_p(f['tasks']['p'])}, architecture "
                     f"effect p = {_fmt_p(f['architecture']['p'])}); the difference of their variances is "
                     f"{1e4 * f['difference']:+.1f} (% of margin)², 95% delete-one-seed jackknife interval "
                     f"[{1e4 * iv[0]:+.1f}, {1e4 * iv[1]:+.1f}]. In this run {verdict}." + _interaction_words(f))
    elif f.get("note"):
        lines.append(f"Tasks against architectures: not assessed ({f['note']}).")
    depths = [d for d in obs["transfer_depth"] if d["depth"] is not None]
    if depths:
        short = sorted((d for d in depths if d["depth"] < d["num_layers"]), key=lambda d: d["depth"])
        lines.append(f"Transfer depth (the deepest l_c with no significant loss against the baseline, Holm across the "
                     f"l_c of each curve): {len(depths) - len(short)} of {len(depths)} curves keep every layer without a "
                     "significant loss" + ("." if not short else "; the shallowest: " + ", ".join(
                         f"{d['arch']} {d['source']} → {d['target']} at l_c = {d['depth']} of {d['num_layers']}"
                         for d in short[:3]) + "."))
    lines += _freeze_lines(obs)
    for note in obs["notes"]:
        lines.append(f"Note: {note}.")
    return lines


def _freeze_lines(obs: Record) -> List[str]:
    """What to freeze, over all curves: how many have some l_c shown safe, and for the rest how many
    seeds would decide."""
    advice = obs.get("what_to_freeze") or []
    if not advice:
        return []
    safe = [w for w in advice if w["frozen"] >= 0]
    tolerance = advice[0]["tolerance"]
    line = (f"What to freeze (equivalence: an l_c is advised only where its loss is shown to be less than "
            f"{tolerance:g} point(s), tested in order from l_c = 0 on the validation split): {len(safe)} of "
            f"{len(advice)} curves have some l_c shown safe")
    stuck = [w for w in advice if w["frozen"] < 0]
    if stuck:
        needed = [w["seeds_needed"] for w in stuck if w.get("seeds_needed") is not None]
        line += (f"; for the other {len(stuck)}, not even full fine-tuning is shown within the tolerance" +
                 (f", and deciding l_c = 0 would take {min(needed)} to {max(needed)} seeds where the observed "
                  "loss allows it at all" if needed else ", and no number of seeds up to 100 would show it"))
    return [line + "."]


def _asymmetry_lines(obs: Record) -> List[str]:
    """The nonsymmetry verdict, its interval adjusted as its p-value is, and claims about the
    pooled architectures made only from the pooled rows."""
    rows, seeds = obs["asymmetry"], obs["seeds"]
    if not rows:
        return []
    if seeds < 2:
        return ["Nonsymmetry: with one seed there is no estimate of noise, so no difference between directions "
                "can be called nonsymmetric; run more seeds."]
    alpha = obs["settings"]["alpha"]
    if not any(r.get("assessable", True) for r in rows):
        return [f"Nonsymmetry cannot be assessed with {seeds} seeds: the exact sign-flip test's smallest p-value, "
                f"2 / 2^{seeds}, times the {len(rows)} comparisons of Holm's correction, is not below alpha "
                f"{alpha:g}; use more seeds or test = \"t\"."]
    clear = [r for r in rows if r["nonsymmetric"]]
    top = min(rows, key=lambda r: (r["p_adjusted"] is None, r["p_adjusted"] or 1.0, -abs(r["difference"]["mean"])))
    d = top["difference"]
    ci = top.get("ci_adjusted")
    interval = "" if not ci else (f", {100 * top['ci_adjusted_level']:.4g}% interval, the level Holm's correction for the "
                                  f"{len(rows)} comparisons tested it at, {100 * ci[0]:+.1f}% to {100 * ci[1]:+.1f}%")
    line = (f"Nonsymmetry: {len(clear)} of {len(rows)} comparisons of A → B with B → A differ after Holm's correction "
            f"({top['test']} test over seeds, alpha {alpha:g}). The strongest: {top['arch']}, {top['a']} → {top['b']} "
            f"{_pct(top['a_to_b'])} against {top['b']} → {top['a']} {_pct(top['b_to_a'])} (difference "
            f"{_pct(d['mean'])}{interval}), adjusted p = " + _fmt_p(top["p_adjusted"]) + ". ")
    pooled = [r for r in rows if r["arch"] == "all"]
    if clear:
        where = sorted({r["arch"] for r in clear})
        line += ("Transferability is nonsymmetric here" + (" pooled over architectures" if "all" in where else
                                                           f" for {', '.join(where)} (not shown pooled over architectures)"
                                                           if pooled else "") + ".")
    else:
        line += "This run does not show nonsymmetry beyond seed noise."
    return [line]


def _interaction_words(f: dict) -> str:
    """The pair x architecture interaction, said when it matters: the architectures order the pairs
    oppositely, or differently beyond seed noise."""
    inter = f.get("interaction_test") or {}
    if inter.get("p") is None:
        return ""
    words = f" Interaction (pair x architecture, F test over seeds, uncorrected for sphericity): p = {inter['p']:.3g}"
    if inter.get("opposite"):
        words += (f"; the architectures order the pairs oppositely (least rank correlation "
                  f"{inter['least_rank_correlation']:+.2f}), so a verdict on either factor alone averages that away")
    return words + "."


def _fmt_p(p: Optional[float]) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def similarity(records) -> Dict[tuple, List[float]]:
    """(arch, source, target, l_c) -> linear CKA of each body layer between the primary and the
    fine-tuned transfer, averaged over seeds."""
    groups = defaultdict(list)
    for r in records:
        if r.get("kind") == "transfer" and r.get("similarity"):
            groups[r["arch"], r["source"], r["target"], r["frozen"]].append(r["similarity"])
    return {k: [float(v) for v in np.mean(v, axis=0)] for k, v in sorted(groups.items())}

