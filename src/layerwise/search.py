"""Adaptive search along `l_c`: the advice on what to freeze without the whole sweep.

The advice (analysis.what_to_freeze) is the deepest `l_c` shown safe by equivalence tests run as a
fixed sequence: `l_c = 0` first, then 1, 2, ..., stopping at the first `l_c` not shown within the
tolerance. That rule never looks past the first `l_c` it cannot show safe, so those levels need not
be trained at all. `search = "adaptive"` trains the baselines, then `l_c = 0` for every seed, tests
it, trains the next `l_c` only when it passed, and stops at the first that does not. Its advice is
the full sweep's, test for test, and so is its error rate (never deeper than the full rule's).

Rungs: a transfer whose validation metric can no longer come within the tolerance stops early.
After each epoch it compares its validation error with its seed's baseline: if the error, less
twice the most any shallower `l_c` of the same curve and seed improved after that epoch (and at
least half the tolerance), still loses more than the tolerance, it stops there and is recorded as "pruned", and its `l_c` counts
as not shown safe. A stop can only make the advice shallower, never deeper, so the rule keeps
its error rate; `l_c = 0` never stops early (nothing shallower tells how far it would improve).
Only where one seed's loss beyond the tolerance settles its l_c, whatever the other seeds give
(stats.can_pass: with up to 3 seeds, not with 4 or more, where the others can outweigh it), and
where a seed's result is one transfer's (not the mean of several folds), does a transfer get a rung.

Records stay the only state: what to train next is worked out from the records each time, so a
search stopped anywhere and run again trains nothing twice and gives the same advice.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from . import analysis, stats
from .plan import Job
from .results import metric_lower_is_better

SAFETY = 2.0  # how many times the largest improvement seen at shallower l_c a stopped transfer is allowed
# ... and at least this share of the tolerance: a shallower l_c that kept its best epoch early says
# nothing of how a noisy validation error may still move (without it, 1 of the demo's 12 curves was
# advised shallower than by the full sweep; with it, 12 of 12 alike in a replay of the demo's records)
FLOOR = 0.5


def error_of(record: dict, value: float) -> float:
    """A metric value of the record's task as an error in points (lower is better)."""
    lower = record.get("lower_is_better", metric_lower_is_better(record.get("metric", "")))
    return value if lower else 100.0 - value


def history_errors(record: dict) -> List[Optional[float]]:
    """The validation error after each epoch of a record's training."""
    name = f"val_{record['metric']}"
    return [None if h.get(name) is None else error_of(record, h[name]) for h in record.get("history", [])]


def curve_of(job: Job) -> tuple:
    """What the jobs of one curve share: every seed, fold and l_c of one pair and architecture (the
    analysis averages folds within a seed)."""
    return job.arch, job.source, job.target


class Search:
    """The adaptive search of one sweep: which jobs to run next, from the records so far."""

    def __init__(self, jobs: List[Job], tolerance: float, alpha: float):
        self.tolerance, self.alpha = tolerance, alpha
        self.primaries = [job for job in jobs if job.kind != "transfer"]
        self.curves: Dict[tuple, Dict[int, List[Job]]] = {}
        for job in jobs:
            if job.kind == "transfer":
                self.curves.setdefault(curve_of(job), {}).setdefault(job.frozen, []).append(job)
        self.baselines = {(job.arch, job.target, job.seed, job.fold): job for job in jobs if job.kind == "scratch"}
        # the l_c where one transfer's loss, however large, settles its l_c: the only ones given rungs
        self.settled_by_one = {(curve, level) for curve, levels in self.curves.items() for level, siblings in levels.items()
                               if len(siblings) == len({j.seed for j in siblings})
                               and not stats.can_pass([-tolerance - 1.0], len(siblings) - 1, tolerance, alpha)}
        self._seen: Tuple[frozenset, Dict[tuple, dict]] = (frozenset({None}), {})
        self._curves: Dict[tuple, tuple] = {}  # curve -> (what its decision was made from, the decision)

    def todo(self, finished: Dict[str, dict]) -> List[Job]:
        """The jobs to run now: unfinished primaries and baselines, then, for every curve not yet
        decided, the unfinished seeds of its next `l_c` (each with its early-stopping rule), first
        seeds first: every curve's next seed comes before any curve's seed after it, so a level a
        first seed already decides (stats.can_pass) rarely trains its others."""
        out = [job for job in self.primaries if job.key not in finished]
        waiting = []
        for curve, decision in self.decisions(finished).items():
            level = decision["next"]
            if level is not None:
                jobs = [job for job in self.curves[curve][level] if job.key not in finished]
                waiting += [(rank, self.with_rung(job, finished)) for rank, job in enumerate(jobs)]
        return out + [job for _, job in sorted(waiting, key=lambda pair: pair[0])]

    def decisions(self, finished: Dict[str, dict]) -> Dict[tuple, dict]:
        """Per curve: `done`, its l_c finished for every seed, in order from the first, up to the
        first that is not; `next`, the l_c to train now (None when decided, or waiting for its
        baselines); `rule`, what analysis.what_to_freeze makes of the done levels and of the seeds
        of `next` finished so far. The curve is decided when the rule stops at a done level, or at
        `next` because what it has already shows that `next` cannot be shown safe (a seed stopped
        early, or whatever its other seeds give: analysis.stopped_levels). A curve is worked out
        again only when its records changed."""
        if self._seen[0] == frozenset(finished):
            return self._seen[1]
        out, changed = {}, {}
        for curve, levels in self.curves.items():
            baselines = sorted({self.baselines[job.arch, job.target, job.seed, job.fold].key for job in levels[min(levels)]})
            ready = all(key in finished for key in baselines)
            done, started = [], []
            for level in sorted(levels):
                keys = [job.key for job in levels[level] if job.key in finished]
                if len(keys) < len(levels[level]):
                    started = keys  # the seeds of the next level finished so far
                    break
                done.append(level)
            keys = tuple(baselines) + tuple(job.key for level in done for job in levels[level]) + tuple(started) if ready else ()
            state = (ready, tuple(done), tuple(finished[k].get("status") for k in keys), keys)
            if curve in self._curves and self._curves[curve][0] == state:
                out[curve] = self._curves[curve][1]
                continue
            out[curve] = {"next": None, "done": done, "rule": None, "ready": ready,
                          "baseline_failed": ready and any(finished[key].get("status") != "ok" for key in baselines)}
            changed[curve] = (state, keys)
        records = {key: finished[key] for state, keys in changed.values() for key in keys}
        rules = {}
        if records:
            for rule in analysis.freeze_rules(list(records.values()), self.tolerance, self.alpha):
                rules[rule["arch"], rule["source"], rule["target"]] = rule
        for curve, (state, _) in changed.items():
            decision = out[curve]
            rule = decision["rule"] = rules.get(curve)
            self._curves[curve] = (state, decision)
            if not decision["ready"] or decision["baseline_failed"]:
                continue  # nothing to compare with: no transfer trains
            stop = None if rule is None else rule["stopped_at"]
            if stop is not None and (stop in decision["done"] or rule["stopped_early"]):
                continue  # decided: the sequence stopped
            remaining = [level for level in sorted(self.curves[curve]) if level not in decision["done"]]
            decision["next"] = remaining[0] if remaining else None
        self._seen = (frozenset(finished), out)
        return out

    def with_rung(self, job: Job, finished: Dict[str, dict]) -> Job:
        """The job with its early-stopping rule: the error its seed's baseline reached plus the
        tolerance, and per epoch how far shallower l_c of its curve and seed went on improving;
        unchanged where its loss would not settle its l_c (see the module's docstring)."""
        baseline = finished[self.baselines[job.arch, job.target, job.seed, job.fold].key]
        if baseline.get("status") != "ok" or (curve_of(job), job.frozen) not in self.settled_by_one:
            return job
        shallower = [finished[j.key] for level, jobs in self.curves[curve_of(job)].items() if level < job.frozen
                     for j in jobs if j.seed == job.seed and j.key in finished]
        margins = rung_margins([r for r in shallower if r.get("status") == "ok"])
        if not margins:
            return job
        margins = [None if m is None else max(m, FLOOR * self.tolerance) for m in margins]
        limit = error_of(baseline, baseline["val"][baseline["metric"]]) + self.tolerance
        return dataclasses.replace(job, rung=(limit, tuple(margins)))


def rung_margins(records: List[dict]) -> List[Optional[float]]:
    """Per epoch, the most any of these trainings improved its validation error after that epoch
    (to the epoch it kept); None where none of them ran that epoch."""
    width = max((len(r.get("history", [])) for r in records), default=0)
    margins: List[Optional[float]] = [None] * width
    for record in records:
        errors = history_errors(record)
        best = error_of(record, record["val"][record["metric"]])
        for epoch, error in enumerate(errors):
            if error is not None:
                gain = max(error - best, 0.0)
                margins[epoch] = gain if margins[epoch] is None else max(margins[epoch], gain)
    return margins


def should_stop(rung: tuple, epoch: int, error: float, epochs: int) -> bool:
    """Whether a transfer with this rung (limit, margins) stops after `epoch` (1-based) with
    validation error `error`: not after its last epoch, nor where no shallower l_c says how far
    it could still improve."""
    limit, margins = rung
    if epoch >= epochs or epoch > len(margins) or margins[epoch - 1] is None:
        return False
    return error - SAFETY * margins[epoch - 1] > limit


def summary(records: List[dict], epochs: int, levels_of) -> List[dict]:
    """Per curve of an adaptive run: which l_c were trained, to how many epochs (per seed), which
    stopped early, which seeds of an l_c were not needed (`untrained`: whatever they gave, it could
    not be shown safe) and which l_c were skipped, and what the transfers cost in examples x epochs
    against training every l_c fully for every seed with a baseline. `levels_of(record)` lists the
    l_c the plan has for that curve."""
    seeds_of: Dict[tuple, set] = {}
    for r in records:
        if r.get("kind") == "scratch":
            seeds_of.setdefault((r["arch"], r["target"], r.get("fold")), set()).add(r["seed"])
    curves: Dict[tuple, dict] = {}
    for r in records:
        if r.get("kind") != "transfer":
            continue
        key = (r["arch"], r["source"], r["target"], r.get("fold"))
        c = curves.setdefault(key, {"arch": r["arch"], "source": r["source"], "target": r["target"], "fold": r.get("fold"),
                                    "levels": levels_of(r), "trained": {}, "pruned": {}, "examples": r.get("examples"),
                                    "cost": 0, "seeds": seeds_of.get((r["arch"], r["target"], r.get("fold")), set()),
                                    "by_level": {}})
        ran = len(r.get("history") or [])  # epochs it trained
        c["trained"].setdefault(r["frozen"], []).append(ran)
        c["by_level"].setdefault(r["frozen"], set()).add(r["seed"])
        if r.get("status") == "pruned":
            c["pruned"].setdefault(r["frozen"], []).append({"seed": r["seed"], "epoch": ran})
        c["cost"] += ran * (r.get("examples") or 0)
    out = []
    for c in curves.values():
        seeds, by_level = c.pop("seeds") | set().union(*c["by_level"].values()), c.pop("by_level")
        c["skipped"] = [level for level in c["levels"] if level not in c["trained"]]
        c["untrained"] = {str(k): sorted(seeds - trained) for k, trained in sorted(by_level.items()) if seeds - trained}
        c["full_cost"] = len(c["levels"]) * len(seeds) * epochs * (c["examples"] or 0)
        c["trained"] = {str(k): v for k, v in sorted(c["trained"].items())}
        c["pruned"] = {str(k): v for k, v in sorted(c["pruned"].items())}
        out.append(c)
    return out


def untrained_text(curve: dict) -> str:
    """The seeds of a curve's l_c not needed, in words: "l_c 2: seeds 1, 2" ("" when none)."""
    return "; ".join(f"l_c {k}: seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                     for k, seeds in curve.get("untrained", {}).items())


def levels_text(levels) -> str:
    """l_c values in words: "0-3, 5" (none: "none")."""
    values = sorted(int(v) for v in levels)
    if not values:
        return "none"
    runs, start = [], values[0]
    for previous, value in zip(values, values[1:] + [None]):
        if value != previous + 1:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
            start = value
    return ", ".join(runs)
