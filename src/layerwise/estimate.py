"""Cheap per-layer transferability estimates, and how well they agree with the real sweep.

A sweep fine-tunes (L_H + 1) models per ordered pair and seed. The scores here need only forward
passes: for every (arch, seed, primary -> secondary, l_c) the primary's first l_c body layers are
applied to the secondary task's training and validation examples (l_c = 0: the raw inputs), the
outputs are flattened, and four scores say how well those fixed features suit the secondary labels:

- `probe`: accuracy (%) on validation of a ridge-regression classifier (one-vs-rest least squares
  on one-hot targets, closed form, so deterministic) fitted on the standardised training features;
- `logme`: LogME (You et al., ICML 2021): per class, the log evidence of a Bayesian linear model
  of the one-hot target, maximised over its prior and noise precisions (alpha, beta) by the
  paper's fixed-point updates through the features' singular values (from the smaller Gram
  matrix); averaged over classes, divided by the number of examples. Computed on the training
  features as they are (no standardisation: the paper's form; it is invariant to scaling all
  features by one factor, not each by its own);
- `hscore`: H-score (Bao et al., ICIP 2019): tr(cov(f)^-1 cov(E[f | y])) on the training
  features, with the covariance shrunk slightly towards its mean variance so that it inverts when
  examples are few;
- `knn`: accuracy (%) on validation of a 5-nearest-neighbour vote (Euclidean, standardised
  features; ties go to the class of the nearer neighbour).

Costs are kept to seconds: at most TRAIN_CAP training and VAL_CAP validation examples per task,
drawn without replacement with the sweep's seed (the same draw for every primary, so the curves
of one seed are paired), and features wider than MAX_DIMS are reduced by a seeded Gaussian random
projection (distances and inner products are kept up to a small distortion, Johnson-Lindenstrauss),
the same projection for both splits. Tasks scored per utterance are scored here per example.
"""

from __future__ import annotations

import functools
from concurrent import futures
from typing import Dict

import numpy as np
import torch

TRAIN_CAP = 2000
VAL_CAP = 1000
MAX_DIMS = 512
KNN_K = 5
RIDGE = 1.0  # the probe's penalty per training example, on standardised features
SHRINKAGE = 1e-3  # the H-score covariance's weight on its mean variance
SCORES = ("probe", "logme", "hscore", "knn")
PRECISION = (1e-10, 1e10)  # the range LogME's alpha and beta are kept in


# ---------------------------------------------------------------------------------------------
# Features


@functools.lru_cache(maxsize=8)
def _projection(dims: int, out: int, seed: int = 0) -> torch.Tensor:
    """A fixed Gaussian random projection, scaled so that squared lengths are kept on average."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(dims, out, generator=g) / out ** 0.5


def flat_features(x: torch.Tensor, max_dims: int = MAX_DIMS) -> np.ndarray:
    """Layer outputs as a float64 matrix (examples, at most `max_dims` columns)."""
    f = x.detach().reshape(len(x), -1).float()
    if f.shape[1] > max_dims:
        f = f @ _projection(f.shape[1], max_dims).to(f.device)
    return f.cpu().double().numpy()


def _standardise(train: np.ndarray, *others: np.ndarray):
    """Every split centred and scaled by the training split's mean and standard deviation
    (constant features keep scale 1, so they stay constant rather than blow up)."""
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(a - mean) / sd for a in (train, *others)]


def _one_hot(y: np.ndarray):
    classes = np.unique(y)
    return (y[:, None] == classes[None, :]).astype(float), classes


# ---------------------------------------------------------------------------------------------
# Scores


def linear_probe(train_f, train_y, val_f, val_y, ridge: float = RIDGE) -> float:
    """Validation accuracy (%) of one-vs-rest ridge regression on one-hot targets: W minimises
    ||X W - (Y - mean Y)||^2 + ridge * n * ||W||^2 on standardised X; a class is the argmax of
    X W. Solved in the smaller of the primal (features) and dual (examples) forms."""
    x, v = _standardise(np.asarray(train_f, float), np.asarray(val_f, float))
    targets, classes = _one_hot(np.asarray(train_y))
    targets = targets - targets.mean(axis=0)
    n, d = x.shape
    penalty = ridge * n
    if d <= n:
        w = np.linalg.solve(x.T @ x + penalty * np.eye(d), x.T @ targets)
    else:
        w = x.T @ np.linalg.solve(x @ x.T + penalty * np.eye(n), targets)
    predicted = classes[np.argmax(v @ w, axis=1)]
    return float(100.0 * np.mean(predicted == np.asarray(val_y)))


def logme_class(sigma: np.ndarray, z2: np.ndarray, rest: float, n: int, d: int, iterations: int = 100,
                tol: float = 1e-7):
    """LogME's maximised evidence for one target vector t, from the squared singular values
    `sigma` of the features F (n x d), the squared coordinates `z2` of t in F's left singular
    basis, and `rest` = the squared length of t outside F's column span. Returns
    (evidence / n, alpha, beta). The fixed point: gamma = sum(beta s / (alpha + beta s)),
    alpha = gamma / m'm, beta = (n - gamma) / ||F m - t||^2, m = beta A^-1 F' t,
    A = alpha I + beta F'F."""
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        shrink = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / shrink))
        mm = float(np.sum(beta ** 2 * sigma * z2 / shrink ** 2))
        residual = float(np.sum((alpha / shrink) ** 2 * z2)) + rest
        # Bounded: when the features fit t exactly (as many features as examples), the evidence
        # grows as the noise vanishes (beta -> inf) towards a finite limit, which the bound approaches.
        new_alpha = min(max(gamma / max(mm, 1e-300), PRECISION[0]), PRECISION[1])
        new_beta = min(max((n - gamma) / max(residual, 1e-300), PRECISION[0]), PRECISION[1])
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    shrink = alpha + beta * sigma
    mm = float(np.sum(beta ** 2 * sigma * z2 / shrink ** 2))
    residual = float(np.sum((alpha / shrink) ** 2 * z2)) + rest
    # log|A|: the d - k directions outside F's row span contribute log(alpha) each.
    logdet = float(np.sum(np.log(shrink))) + (d - len(sigma)) * np.log(alpha)
    evidence = (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi) - beta * residual - alpha * mm - logdet) / 2
    return evidence / n, alpha, beta


def logme(features, labels) -> float:
    """LogME of features for class labels: the mean over classes of `logme_class` on one-hot
    targets."""
    f = np.asarray(features, float)
    n, d = f.shape
    targets, _ = _one_hot(np.asarray(labels))
    # F's spectrum from the eigenvectors of the smaller Gram matrix, as cheap as an SVD gets:
    # with F = U S V', F'F = V S^2 V' and U' t = S^-1 V' F' t; FF' = U S^2 U'.
    sigma, vectors = np.linalg.eigh(f.T @ f if n > d else f @ f.T)
    keep = sigma > 1e-10 * max(sigma.max(), 1e-300)  # directions F does not span count as d - k below
    sigma, vectors = sigma[keep], vectors[:, keep]
    z = (vectors.T @ (f.T @ targets)) / np.sqrt(sigma)[:, None] if n > d else vectors.T @ targets  # (k, classes)
    rest = np.maximum((targets ** 2).sum(axis=0) - (z ** 2).sum(axis=0), 0.0)
    return float(np.mean([logme_class(sigma, z[:, c] ** 2, rest[c], n, d)[0] for c in range(targets.shape[1])]))


def hscore(features, labels, shrinkage: float = SHRINKAGE) -> float:
    """H-score: tr(cov(f)^-1 cov(E[f | y])), both covariances over the examples (classes weighted
    by their frequency); cov(f) is shrunk towards (mean variance) x I by `shrinkage` and inverted
    by pseudo-inverse."""
    f = np.asarray(features, float)
    f = f - f.mean(axis=0)
    n, d = f.shape
    cov = f.T @ f / n
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    targets, _ = _one_hot(np.asarray(labels))
    counts = targets.sum(axis=0)
    means = targets.T @ f / counts[:, None]  # (classes, d): E[f | y]
    between = (means * (counts / n)[:, None]).T @ means
    return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ between))


def knn_accuracy(train_f, train_y, val_f, val_y, k: int = KNN_K) -> float:
    """Validation accuracy (%) of a k-nearest-neighbour majority vote on standardised features;
    among classes with equal votes, the one with the nearest neighbour wins (so relabelling the
    classes changes nothing)."""
    x, v = _standardise(np.asarray(train_f, float), np.asarray(val_f, float))
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    k = min(k, len(x))
    distance = (v ** 2).sum(1)[:, None] + (x ** 2).sum(1)[None, :] - 2 * v @ x.T
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(distance, nearest, 1), axis=1, kind="stable")
    neighbours = train_y[np.take_along_axis(nearest, order, 1)]  # (val, k), nearest first
    votes = (neighbours[:, :, None] == neighbours[:, None, :]).sum(axis=2)  # each neighbour's class's votes
    # Rank by votes, then by nearness: the first neighbour with the most votes names the class.
    best = np.argmax(votes * (k + 1) - np.arange(k)[None, :], axis=1)
    predicted = neighbours[np.arange(len(v)), best]
    return float(100.0 * np.mean(predicted == val_y))


def all_scores(train_f, train_y, val_f, val_y) -> Dict[str, float]:
    """Every score of one feature matrix: LogME and H-score on the training split, the
    classifiers fitted on training and scored on validation."""
    return {"probe": linear_probe(train_f, train_y, val_f, val_y), "logme": logme(train_f, train_y),
            "hscore": hscore(train_f, train_y), "knn": knn_accuracy(train_f, train_y, val_f, val_y)}


# ---------------------------------------------------------------------------------------------
# A sweep's estimates

COLUMNS = ["arch", "source", "target", "seed", "frozen", "fraction", "score", "value"]


def subsample(split, cap: int, seed: int):
    """At most `cap` examples of a split, drawn without replacement by `seed`, in their order."""
    from .tasks import Split

    if len(split) <= cap:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split), cap, replace=False))
    index = torch.as_tensor(keep, device=split.y.device)
    return Split(split.x[index], split.y[index])


def curve_scores(primary, data, levels, seed: int, train_cfg) -> Dict[int, Dict[str, float]]:
    """{l_c: {score: value}} for one primary on one secondary task's data (one seed). The
    prefix outputs come from the sweep's prefix cache, one more layer per level; the test split is
    never read (the cache advances every split, so it is given one validation example)."""
    from .prefix import PrefixCache
    from .tasks import Split, TaskData

    train, val = subsample(data.train, TRAIN_CAP, seed), subsample(data.val, VAL_CAP, seed)
    one = Split(val.x[torch.arange(1, device=val.y.device)], val.y[:1])
    cache = PrefixCache(primary, TaskData(train, val, one), train_cfg)
    ty, vy = train.y.cpu().numpy(), val.y.cpu().numpy()
    out = {}
    for level in sorted(levels):
        seen = cache.at(level)
        if seen is None:
            from .errors import UserError

            raise UserError(f"the prefix outputs of {TRAIN_CAP + VAL_CAP} examples after {level} layers exceed "
                            f"train.cache_limit_gb = {train_cfg.cache_limit_gb}; raise it to estimate")
        out[level] = all_scores(flat_features(seen.train.x), ty, flat_features(seen.val.x), vy)
    return out


def curve_rows(sweep, unit) -> list:
    """The rows of estimates.csv for one unit of transfers (one curve: arch, seed, pair, fold)."""
    job = unit[0]
    primary = sweep.primary(job)
    curve = curve_scores(primary, sweep.data(job.target, job.seed, job.fold), [j.frozen for j in unit], job.seed,
                         sweep.cfg.train)
    return [{"arch": job.arch, "source": job.source, "target": job.target, "seed": job.seed, "frozen": level,
             "fraction": level / primary.num_layers, "score": score, "value": value}
            for level, scores in curve.items() for score, value in scores.items()]


def estimate_unit(cfg, out: str, unit, threads: int) -> list:
    """`curve_rows` in a worker process of the local executor, with `threads` torch threads."""
    from .executors import worker_sweep

    torch.set_num_threads(threads)
    return curve_rows(worker_sweep(cfg, out), unit)


def estimate_sweep(sweep, progress: bool = True):
    """Estimate curves for every (arch, seed, primary -> secondary, l_c) the sweep plans, from its
    recorded primaries; returns the rows of estimates.csv (folds averaged within a seed). The
    curves are spread over the local executor's worker processes, as its units are."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .executors import WorkerPool, local_workers, unit_threads
    from .plan import units

    groups = [u for u in units(sweep.jobs) if u[0].kind == "transfer"]
    workers = local_workers(sweep.cfg, sweep.device) if sweep.cfg.executor == "local" else 1
    bar = tqdm(total=len(groups), unit="curve", desc="estimates", disable=not progress, dynamic_ncols=True)
    with bar:
        if workers > 1:
            threads = unit_threads(sweep.cfg.threads, 0, workers)
            with WorkerPool(workers, threads) as pool:
                pending = [pool.submit(estimate_unit, sweep.cfg, str(sweep.store.root), unit, threads) for unit in groups]
                for future in futures.as_completed(pending):
                    future.result()  # a curve's error, raised here
                    bar.update()
                rows = [row for future in pending for row in future.result()]
        else:
            rows = []
            for unit in groups:
                rows += curve_rows(sweep, unit)
                bar.update()
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.groupby(COLUMNS[:-1], as_index=False, sort=False)["value"].mean()


def train_primaries(sweep) -> None:
    """Train the sweep's primaries that are not recorded yet, and nothing else. The run directory
    keeps the plan of the whole sweep, so its report still counts what has not run."""
    planned, mode = sweep.jobs, sweep.mode
    sweep.check_directory()  # the whole plan against what the directory holds
    sweep.jobs, sweep.mode = [job for job in planned if job.primary is None], "extend"  # a part of it
    try:
        sweep.run()
    finally:
        sweep.jobs, sweep.mode = planned, mode
    with sweep.store.locked():
        sweep.store.start(sweep.cfg.to_dict(), [job.key for job in planned], "extend")


def write_estimates(sweep, progress: bool = True):
    """estimates.csv in the sweep's run directory; returns its path."""
    path = sweep.store.root / "estimates.csv"
    estimate_sweep(sweep, progress).to_csv(path, index=False, float_format="%.6g")
    return path


# ---------------------------------------------------------------------------------------------
# Estimates against the real sweep
#
# The real curve of a pair is the normalised gain on the validation split, averaged over seeds:
# validation, because the estimates are meant for decisions (what to freeze, which primary), and
# decisions here are taken on validation data only; the test split is read once, to report.
# Each seed's estimate curve (from that seed's primary) is correlated with the real curve, so the
# seeds are replicates: a correlation is the mean over seeds with a t interval.

KEYS = ["arch", "source", "target"]


def real_curves(records):
    """Per (arch, source, target, l_c): the validation normalised gain averaged over seeds."""
    from . import analysis

    table = analysis.per_seed(records)
    table = table[table["split"] == "val"]
    return table.groupby(KEYS + ["frozen"], as_index=False).agg(fraction=("fraction", "first"), rel=("rel", "mean"))


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
    from .analysis import area

    return area(np.asarray(fraction, float), np.asarray(values, float))


def _summarise(per_seed, by):
    """Mean over seeds, with a 95% t interval, of per-seed tau and rho, grouped by `by`."""
    import pandas as pd

    from . import stats

    rows = []
    for key, g in per_seed.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for name in ("tau", "rho"):
            i = stats.mean_interval(g[name].dropna())
            row.update({name: i.mean, f"{name}_low": i.low, f"{name}_high": i.high})
        row["seeds"] = int(g["tau"].notna().sum())
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
    real curve, summarised over seeds; and per (arch, score), with arch "all" for every
    architecture, the mean over curves of each seed's correlations, summarised over seeds."""
    import pandas as pd

    merged = estimates.merge(real[KEYS + ["frozen", "rel"]], on=KEYS + ["frozen"])
    rows = []
    for key, g in merged.groupby(KEYS + ["score", "seed"], sort=False):
        g = g.sort_values("frozen")
        tau, rho = _rank_correlations(g["value"], g["rel"])
        rows.append(dict(zip(KEYS + ["score", "seed"], key), tau=tau, rho=rho))
    per_seed = pd.DataFrame(rows, columns=KEYS + ["score", "seed", "tau", "rho"])
    per_arch = per_seed.groupby(["arch", "score", "seed"], as_index=False)[["tau", "rho"]].mean()
    every = per_seed.groupby(["score", "seed"], as_index=False)[["tau", "rho"]].mean().assign(arch="all")
    return _summarise(per_seed, KEYS + ["score"]), _summarise(pd.concat([per_arch, every]), ["arch", "score"])


def pair_agreement(estimates, real):
    """Per (arch, score), and "all" averaged over architectures: tau and rho over ordered pairs
    between each seed's estimated transferability and the real one. Real transferability is the
    mean height of the real curve over l_c / L_H; estimated, the mean height of the score's gain
    over its shallowest l_c (the raw inputs when l_c = 0 is planned), which takes each secondary
    task's own difficulty out as the baseline does for the real curve."""
    import pandas as pd

    truth = {k: _height(g["fraction"], g["rel"]) for k, g in real.sort_values("frozen").groupby(KEYS)}
    rows = []
    for (arch, score, seed), g in estimates.groupby(["arch", "score", "seed"], sort=False):
        est, got = [], []
        for key, c in g.sort_values("frozen").groupby(KEYS):
            if key in truth:
                est.append(_height(c["fraction"], c["value"] - c["value"].iloc[0]))
                got.append(truth[key])
        tau, rho = _rank_correlations(est, got)
        rows.append({"arch": arch, "score": score, "seed": seed, "tau": tau, "rho": rho})
    per_seed = pd.DataFrame(rows, columns=["arch", "score", "seed", "tau", "rho"])
    every = per_seed.groupby(["score", "seed"], as_index=False)[["tau", "rho"]].mean().assign(arch="all")
    return _summarise(pd.concat([per_seed, every]), ["arch", "score"])


# ---------------------------------------------------------------------------------------------
# The report's part

LABELS = {"real": "real: normalised gain (val)", "probe": "linear probe accuracy (%)", "logme": "LogME",
          "hscore": "H-score", "knn": "5-NN accuracy (%)"}


def plot_estimates(estimates, real, path) -> None:
    """A column per ordered pair; the first row the real curve (when the sweep ran), the others
    each score's estimate curve, mean over seeds, one line per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(zip(estimates["source"], estimates["target"])))
    archs = sorted(estimates["arch"].unique())
    rows = (["real"] if real is not None and len(real) else []) + list(SCORES)
    fig, axes = plt.subplots(len(rows), len(pairs), figsize=(2.9 * len(pairs) + 0.6, 2.1 * len(rows) + 0.6),
                             squeeze=False, sharex="col")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    means = estimates.groupby(KEYS + ["score", "frozen"], as_index=False)["value"].mean()
    for c, (source, target) in enumerate(pairs):
        axes[0, c].set_title(f"{source} → {target}", fontsize=9)
        axes[-1, c].set_xlabel("$l_c$")
        for r, row in enumerate(rows):
            ax = axes[r, c]
            table, column = (real, "rel") if row == "real" else (means[means["score"] == row], "value")
            for j, arch in enumerate(archs):
                g = table[(table["arch"] == arch) & (table["source"] == source) & (table["target"] == target)]
                g = g.sort_values("frozen")
                ax.plot(g["frozen"], g[column], marker="o", ms=2.5, color=colors[j % len(colors)], label=arch)
            if c == 0:
                ax.set_ylabel(LABELS[row], fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ci_text(row, name, suffix="") -> str:
    """`mean [low, high]` of one correlation in a row of an agreement table."""
    mean, low, high = (row.get(f"{name}{part}{suffix}") for part in ("", "_low", "_high"))
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:+.2f}" + ("" if low is None or not np.isfinite(low) else f" [{low:+.2f}, {high:+.2f}]")


def write_estimate_report(out, records) -> str:
    """The report's section on the estimates of the run directory `out` (its estimates.csv): writes
    estimates.png and, when the sweep also has real curves, estimate_curves.csv (per pair) and
    estimate_agreement.csv (per architecture and overall); returns the HTML fragment, "" when the
    run has no estimates."""
    import html
    from pathlib import Path

    import pandas as pd

    from .report import _table, write_csv

    out = Path(out)
    if not (out / "estimates.csv").exists():
        return ""
    try:
        estimates = pd.read_csv(out / "estimates.csv")
        missing = set(COLUMNS) - set(estimates.columns)
        if missing:
            raise ValueError(f"it lacks the column(s) {', '.join(sorted(missing))}")
    except (ValueError, OSError) as err:  # pandas' parser errors are ValueErrors
        from .errors import warn

        warn(f"{out / 'estimates.csv'} cannot be read ({err}); its report section is left out: "
             "run `layerwise estimate` again to remake it")
        return ""
    done = [r for r in records if r.get("status", "ok") == "ok"]
    real = real_curves(done) if any(r.get("kind") == "transfer" for r in done) else None
    plot_estimates(estimates, real, out / "estimates.png")
    parts = ["<h2>Estimates without fine-tuning</h2>",
             "<p>Estimated transferability of each l_c from forward passes only: the primary's first l_c layers "
             "applied to the secondary task's examples (at most {} training and {} validation examples, features "
             "wider than {} reduced by a seeded random projection), scored by a linear probe (ridge, validation "
             "accuracy), LogME and H-score (on the training examples) and a 5-nearest-neighbour vote (validation "
             "accuracy). These are <b>estimates</b>: nothing was fine-tuned to make them; the figures above "
             "are the real sweep.</p>".format(TRAIN_CAP, VAL_CAP, MAX_DIMS)]
    caption = ("Estimated curves (mean over seeds) beside the real one (top row, when the sweep ran): a column "
               "per ordered pair, a line per architecture.")
    parts.append(f'<figure><img src="estimates.png" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                 "</figcaption></figure>")
    advice = freeze_advice(estimates)
    real_advice = {}
    if real is not None and not real.empty:
        from .analysis import per_seed, what_to_freeze

        real_advice = {(w["arch"], w["source"], w["target"]): w["frozen"] for w in what_to_freeze(per_seed(done), 1.0)}
    advice["real"] = [real_advice.get(k) for k in zip(advice["arch"], advice["source"], advice["target"])]
    header = ["arch", "primary", "secondary", "score", "freeze l_c (estimate)", "freeze l_c (sweep, validation)"]
    rows = [[r["arch"], r["source"], r["target"], r["score"], r["frozen"],
             "" if r["real"] is None else r["real"]] for r in advice.to_dict("records")]
    write_csv(out / "estimate_freeze.csv", header, rows)
    matched = advice.dropna(subset=["real"])
    agreement = "".join(f" {score}: {int((g['frozen'] == g['real']).sum())} of {len(g)} equal to the sweep's choice, "
                        f"mean distance {np.mean(np.abs(g['frozen'] - g['real'])):.1f} layers."
                        for score, g in matched.groupby("score"))
    parts += ["<h3>What to freeze, estimated</h3><p><b>Estimates</b>, not measurements: the deepest l_c whose "
              "reachable probe or kNN accuracy stays within 1 point of the best the primary offers; beside it, the "
              "sweep's own choice on validation data where it ran." + agreement + "</p>", _table(header, rows)]
    if real is None or real.empty:
        parts.append("<p>The sweep has no finished transfers yet, so the estimates cannot be checked against it; "
                     "<code>layerwise run</code> with the same config produces the real curves.</p>")
        return "\n".join(parts)
    both_forms = pd.concat([estimates, reachable(estimates), depth_only(estimates)])
    per_curve, by_arch = curve_agreement(both_forms, real)
    pairs = pair_agreement(both_forms, real)
    both = by_arch.merge(pairs, on=["arch", "score"], how="outer", suffixes=("", "_pairs"))
    header = ["arch", "score", "tau over l_c", "rho over l_c", "tau over pairs", "rho over pairs", "seeds"]
    rows = [[r["arch"], r["score"], _ci_text(r, "tau"), _ci_text(r, "rho"), _ci_text(r, "tau", "_pairs"),
             _ci_text(r, "rho", "_pairs"), r["seeds"]] for r in both.to_dict("records")]
    write_csv(out / "estimate_agreement.csv", header, rows)
    per_curve.to_csv(out / "estimate_curves.csv", index=False, float_format="%.4f")
    parts += ["<p>How far each estimate can be trusted here: rank correlations (Kendall's tau-b, Spearman's rho) "
              "with the real curve, the validation normalised gain averaged over seeds (validation, because "
              "decisions are taken on validation data). Over l_c: within each curve; over pairs: the estimated "
              "transferability (the mean gain of the score over its shallowest l_c) against the real one. Each "
              "seed's estimates are one replicate: mean over seeds with a 95% t interval. 1 is perfect "
              "agreement, 0 none, -1 a reversed ranking. A score's <i>reachable</i> form is the best score of "
              "any layer at or above l_c (what a transfer holding l_c layers can still reach); the row "
              "<i>-l_c (no estimate)</i> is the reference every estimate must beat over l_c: it only says that "
              "holding more layers constant is worse. Per pair: "
              '<a href="estimate_curves.csv">estimate_curves.csv</a>; every estimate: '
              '<a href="estimates.csv">estimates.csv</a>.</p>', _table(header, rows)]
    return "\n".join(parts)
