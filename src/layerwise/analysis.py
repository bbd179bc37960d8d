"""From job records to curves, transferability scores, asymmetry and a summary in words.

Transfer results are compared with the baseline of the same architecture and seed: the *gain* of
a transfer is its secondary test metric minus the baseline's, signed so that positive means
better than training on the secondary task alone (for error rates the sign flips). It is in the
metric's own points (accuracy or error in percent). A pair's *transferability* is the mean gain
over `l_c`, averaged over seeds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Dict, List, Optional, Tuple

import numpy as np

Pair = Tuple[str, str]


@dataclass
class Curve:
    arch: str
    source: str
    target: str
    metric: str
    lower_is_better: bool
    frozen: List[int]
    mean: List[float]
    std: List[float]
    baseline_mean: float
    baseline_std: float
    seeds: int


def _baselines(records) -> Dict[Tuple[str, str, int], dict]:
    return {(r["arch"], r["target"], r["seed"]): r for r in records if r["kind"] == "scratch"}


def _sign(record) -> float:
    return -1.0 if record["lower_is_better"] else 1.0


def curves(records, split: str = "test") -> List[Curve]:
    """One curve per (arch, primary, secondary): the secondary metric against `l_c`, with the
    baseline, mean and standard deviation over seeds."""
    base = _baselines(records)
    groups = defaultdict(lambda: defaultdict(list))
    info = {}
    for r in records:
        if r["kind"] == "transfer":
            groups[r["arch"], r["source"], r["target"]][r["frozen"]].append(r[split][r["metric"]])
            info[r["arch"], r["source"], r["target"]] = r
    out = []
    for (arch, source, target), by_frozen in sorted(groups.items()):
        r = info[arch, source, target]
        baseline = [b[split][b["metric"]] for (a, t, _), b in base.items() if a == arch and t == target]
        frozen = sorted(by_frozen)
        out.append(Curve(arch, source, target, r["metric"], r["lower_is_better"], frozen,
                         [float(np.mean(by_frozen[k])) for k in frozen], [float(np.std(by_frozen[k])) for k in frozen],
                         float(np.mean(baseline)) if baseline else float("nan"),
                         float(np.std(baseline)) if baseline else float("nan"),
                         max(len(v) for v in by_frozen.values())))
    return out


def freezable(curve: Curve, tolerance: float = 1.0) -> int:
    """The deepest `l_c` such that holding that many layers (and every shallower choice) costs
    at most `tolerance` metric points against the baseline: how much of the primary can be
    frozen for this secondary task. -1 when even `l_c = 0` costs more."""
    sign = -1.0 if curve.lower_is_better else 1.0
    depth = -1
    for k, mean in zip(curve.frozen, curve.mean):
        if sign * (mean - curve.baseline_mean) < -tolerance:
            break
        depth = k
    return depth


def similarity(records) -> Dict[Tuple[str, str, str, int], List[float]]:
    """(arch, source, target, l_c) -> linear CKA of each body layer between the primary and the
    fine-tuned transfer, averaged over seeds."""
    groups = defaultdict(list)
    for r in records:
        if r["kind"] == "transfer" and r.get("similarity"):
            groups[r["arch"], r["source"], r["target"], r["frozen"]].append(r["similarity"])
    return {k: [float(v) for v in np.mean(v, axis=0)] for k, v in sorted(groups.items())}


def gains_by_seed(records, split: str = "test") -> Dict[Tuple[str, str, str], Dict[int, float]]:
    """(arch, source, target) -> seed -> mean gain over l_c against that seed's baseline."""
    base = _baselines(records)
    per = defaultdict(lambda: defaultdict(list))
    for r in records:
        b = base.get((r["arch"], r["target"], r["seed"]))
        if r["kind"] == "transfer" and b is not None:
            gain = _sign(r) * (r[split][r["metric"]] - b[split][b["metric"]])
            per[r["arch"], r["source"], r["target"]][r["seed"]].append(gain)
    return {k: {s: float(np.mean(v)) for s, v in seeds.items()} for k, seeds in per.items()}


def transferability(records, split: str = "test") -> Dict[Tuple[str, str, str], Tuple[float, float]]:
    """(arch, source, target) -> (mean, std over seeds) of the transferability; arch "all" is the
    mean over architectures."""
    by_seed = gains_by_seed(records, split)
    out = {k: (float(np.mean(list(v.values()))), float(np.std(list(v.values())))) for k, v in by_seed.items()}
    pairs = defaultdict(list)
    for (arch, s, t), (mean, _) in out.items():
        pairs[s, t].append(mean)
    for (s, t), means in pairs.items():
        out["all", s, t] = (float(np.mean(means)), float(np.std(means)))
    return out


@dataclass
class Asymmetry:
    arch: str
    a: str
    b: str
    a_to_b: float
    b_to_a: float
    difference: float  # a_to_b - b_to_a
    spread: Optional[float]  # standard deviation of the difference over seeds (None with one seed)
    seeds: int

    @property
    def clear(self) -> bool:
        """The difference is larger than twice its standard error over seeds."""
        if self.spread is None:
            return False
        if self.spread == 0:
            return self.difference != 0
        return abs(self.difference) > 2 * self.spread / np.sqrt(self.seeds)


def asymmetry(records, split: str = "test") -> List[Asymmetry]:
    by_seed = gains_by_seed(records, split)
    rows = []
    archs = sorted({k[0] for k in by_seed})
    tasks = sorted({t for k in by_seed for t in k[1:]})
    for arch in archs:
        for a, b in combinations(tasks, 2):
            ab, ba = by_seed.get((arch, a, b)), by_seed.get((arch, b, a))
            if not ab or not ba:
                continue
            seeds = sorted(set(ab) & set(ba))
            if not seeds:
                continue
            diffs = [ab[s] - ba[s] for s in seeds]
            rows.append(Asymmetry(arch, a, b, float(np.mean([ab[s] for s in seeds])), float(np.mean([ba[s] for s in seeds])),
                                  float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(seeds) > 1 else None, len(seeds)))
    return rows


def tasks_against_architectures(scores) -> Optional[Tuple[float, float]]:
    """(spread across architectures for the same pair, spread across pairs for the same
    architecture), each the mean range of transferability in metric points; None when the run
    has fewer than two architectures or two pairs."""
    archs = sorted({k[0] for k in scores if k[0] != "all"})
    pairs = sorted({k[1:] for k in scores if k[0] != "all"})
    if len(archs) < 2 or len(pairs) < 2:
        return None
    by_arch = [np.ptp([scores[a, s, t][0] for a in archs if (a, s, t) in scores]) for s, t in pairs]
    by_pair = [np.ptp([scores[a, s, t][0] for s, t in pairs if (a, s, t) in scores]) for a in archs]
    return float(np.mean(by_arch)), float(np.mean(by_pair))


def summary(records, split: str = "test") -> List[str]:
    """Plain sentences about what this run measured, generated from the numbers."""
    scores = transferability(records, split)
    if not scores:
        return ["No transfer has finished yet, so there is nothing to compare."]
    lines = []
    overall = sorted(((v[0], s, t) for (a, s, t), v in scores.items() if a == "all"), reverse=True)
    best, worst = overall[0], overall[-1]
    lines.append(f"Transferability (mean gain over l_c against the baseline, averaged over architectures and seeds) "
                 f"ranges from {worst[0]:+.2f} points ({worst[1]} → {worst[2]}) to {best[0]:+.2f} points "
                 f"({best[1]} → {best[2]}); read as task relatedness, {best[1]} → {best[2]} is the most related ordered pair "
                 f"and {worst[1]} → {worst[2]} the least.")
    rows = asymmetry(records, split)
    if rows:
        top = max(rows, key=lambda r: abs(r.difference))
        clear = [r for r in rows if r.clear]
        noise = "" if top.spread is None else f" (standard deviation over {top.seeds} seeds: {top.spread:.2f})"
        lines.append(f"Nonsymmetry: the largest difference between the two directions of a pair is "
                     f"{top.difference:+.2f} points for {top.arch}, {top.a} → {top.b} ({top.a_to_b:+.2f}) against "
                     f"{top.b} → {top.a} ({top.b_to_a:+.2f}){noise}. "
                     + (f"{len(clear)} of {len(rows)} (architecture, pair) comparisons differ by more than twice "
                        "their standard error over seeds, so transferability is nonsymmetric here."
                        if top.seeds > 1 else "With one seed there is no estimate of noise; run more seeds to judge it.")
                     + ("" if clear or top.seeds < 2 else " None exceeds the seed noise, so this run does not show nonsymmetry."))
    full = {k[:3]: v for k, v in similarity(records).items() if k[3] == 0}
    if full:
        first = np.mean([v[0] for v in full.values()])
        last = np.mean([v[-1] for v in full.values()])
        most = min(full, key=lambda k: np.mean(full[k]))
        lines.append(f"Layer similarity: fully fine-tuned (l_c = 0), the first layer keeps a linear CKA of {first:.2f} "
                     f"with the primary's on average and the last layer {last:.2f}; {most[0]} {most[1]} → {most[2]} "
                     f"rewrites its primary the most (mean CKA {np.mean(full[most]):.2f} over layers).")
    versus = tasks_against_architectures(scores)
    if versus:
        across_archs, across_pairs = versus
        verdict = ("the tasks matter more than the architecture" if across_pairs > across_archs
                   else "the architecture matters as much as or more than the tasks")
        lines.append(f"Tasks against architectures: for the same pair, transferability differs across architectures by "
                     f"{across_archs:.2f} points on average; for the same architecture, it differs across pairs by "
                     f"{across_pairs:.2f} points. In this run {verdict}.")
    return lines
