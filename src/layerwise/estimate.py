"""The estimate run: cheap per-layer estimates for every curve a sweep plans, without fine-tuning.

For every (arch, seed, primary -> secondary, l_c) the recorded primary's first l_c body layers are
applied to the secondary task's examples, through the sweep's prefix cache, and scored
(scores.py). Costs are kept to seconds: at most TRAIN_CAP training and VAL_CAP validation examples
per task, drawn without replacement with the sweep's seed (the same draw for every primary, so the
curves of one seed are paired). Tasks scored per utterance are scored here per example. The curves
are mapped over the executors' worker processes as the sweep's units are; estimates.csv holds
their rows (results.ESTIMATE_COLUMNS), folds averaged within a seed. Their cost (wall seconds,
cores, and the machine with its load average, without which no timing means anything) goes to
estimate_costs.json, beside the cost of the truncated sweep they are judged against (truncated.py).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import UserError, memory_error, out_of_memory
from .executors import local_workers, map_units, unit_threads
from .plan import Job, units
from .prefix import PrefixCache
from .results import ESTIMATE_COLUMNS
from .runner import Runner, worker_runner
from .scores import all_scores, flat_features
from .store import DamagedCheckpoint, write_atomic, writing
from .tasks import Split, TaskData

TRAIN_CAP = 2000
VAL_CAP = 1000
COSTS = "estimate_costs.json"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def machine(load: Optional[float] = None) -> dict:
    """What a timing was measured on: the cores, the CPU and the 1-minute load average (taken now
    unless given), so that a time measured beside other work is seen as such."""
    return {"machine_cores": os.cpu_count(), "cpu": cpu_model(),
            "load_average": round(os.getloadavg()[0] if load is None else load, 2)}


def read_costs(out: Path) -> dict:
    """estimate_costs.json of a run directory: {what: its cost}; {} when there is none or it
    cannot be read."""
    try:
        costs = json.loads((Path(out) / COSTS).read_text())
    except (OSError, ValueError):
        return {}
    return costs if isinstance(costs, dict) else {}


def record_cost(out: Path, what: str, cost: dict) -> None:
    """Keep `cost` under `what` in the run directory's estimate_costs.json."""
    write_atomic(Path(out) / COSTS, json.dumps({**read_costs(out), what: cost}, indent=1) + "\n")


def subsample(split, cap: int, seed: int):
    """At most `cap` examples of a split, drawn without replacement by `seed`, in their order."""
    if len(split) <= cap:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split), cap, replace=False))
    index = torch.as_tensor(keep, device=split.y.device)
    return Split(split.x[index], split.y[index])


def curve_scores(primary, data, levels, seed: int, train_cfg) -> Dict[int, Dict[str, float]]:
    """{l_c: {score: value}} for one primary on one secondary task's data (one seed). The
    prefix outputs come from the sweep's prefix cache, one more layer per level, or, where they
    would exceed train.cache_limit_gb, are streamed a chunk of examples at a time and reduced to
    their flat features as they come (the same numbers: `flat_chunks`). The test split is never
    read (the cache advances every split, so it is given one validation example)."""
    train, val = subsample(data.train, TRAIN_CAP, seed), subsample(data.val, VAL_CAP, seed)
    one = Split(val.x[torch.arange(1, device=val.y.device)], val.y[:1])
    cache = PrefixCache(primary, TaskData(train, val, one), train_cfg)
    ty, vy = train.y.cpu().numpy(), val.y.cpu().numpy()
    levels, step = sorted(levels), train_cfg.eval_batch_size
    if all(cache.bytes_at(level) <= train_cfg.cache_limit_gb * 2**30 for level in levels):
        features = {level: [flat_chunks(split.x, seed, step) for split in (seen.train, seen.val)]
                    for level, seen in ((level, cache.at(level)) for level in levels)}
    else:
        streamed = [[{level: flat_features(x, seed=seed) for level, x in chunk.items()}
                     for chunk in cache.stream(split.x, levels)] for split in (train, val)]
        features = {level: [np.concatenate([chunk[level] for chunk in chunks]) for chunks in streamed]
                    for level in levels}
    return {level: all_scores(features[level][0], ty, features[level][1], vy) for level in levels}


def flat_chunks(x, seed: int, step: int) -> np.ndarray:
    """`flat_features` of `x` a chunk of `step` examples at a time, as the streamed outputs get
    them: the random projection of a whole split and of its chunks may round differently."""
    index = lambda i: torch.arange(i, min(i + step, len(x)), device=x.device)  # noqa: E731  (a lazy view takes only these)
    return np.concatenate([flat_features(x[index(i)], seed=seed) for i in range(0, len(x), step)])


def curve_rows(runner: Runner, unit: List[Job]) -> list:
    """The rows of estimates.csv for one unit of transfers (one curve: arch, seed, pair, fold)."""
    job = unit[0]
    primary, _ = runner.primary(job)
    curve = curve_scores(primary, runner.data(job.target, job.seed, job.fold), [j.frozen for j in unit], job.seed,
                         runner.cfg.train)
    return [{"arch": job.arch, "source": job.source, "target": job.target, "seed": job.seed, "frozen": level,
             "fraction": level / primary.num_layers, "score": score, "value": value}
            for level, scores in curve.items() for score, value in scores.items()]


def estimate_unit(cfg, out: str, unit: List[Job], threads: int) -> Optional[list]:
    """`curve_rows` in the process that holds the unit (a local worker), with `threads` torch
    threads; None when the unit's primary checkpoint cannot be read: the primary and its record
    are then set aside, so that it trains again."""
    torch.set_num_threads(threads)
    runner = worker_runner(cfg, out)
    try:
        return curve_rows(runner, unit)
    except DamagedCheckpoint as err:
        runner.store.set_job_aside(err.key, err.why)
        runner.forget()
        return None
    except Exception as err:
        if out_of_memory(err):
            runner.forget()
            job = unit[0]
            raise memory_error(f"the estimates of {job.arch} {job.source} -> {job.target} seed {job.seed}", err) from None
        raise


def estimate_sweep(sweep, progress: bool = True):
    """Estimate curves for every (arch, seed, primary -> secondary, l_c) the sweep plans, from its
    recorded primaries; returns the rows of estimates.csv (folds averaged within a seed). The
    curves are mapped over the local executor's worker processes, as its units are. A primary
    whose checkpoint turns out damaged is set aside, trained again, and its curves estimated then."""
    import pandas as pd

    curves = [unit for unit in units(sweep.jobs) if unit[0].kind == "transfer"]
    workers = local_workers(sweep.cfg, sweep.device) if sweep.cfg.executor == "local" else 1
    rows: Dict[str, list] = {}
    with tqdm(total=len(curves), unit="curve", desc="estimates", disable=not progress, dynamic_ncols=True) as bar:
        for _ in range(2):  # a second round once the primaries set aside are trained again
            damaged: set = set()

            def done(unit: List[Job], found: Optional[list]) -> None:
                if found is None:
                    damaged.add(unit[0].primary)
                else:
                    rows[unit[0].key] = found
                    bar.update()

            map_units(sweep.cfg, sweep.store.root, estimate_unit,
                      lambda: [u for u in curves if u[0].key not in rows and u[0].primary not in damaged],
                      workers, done=done)
            if not damaged:
                break
            train_primaries(sweep)
    if len(rows) < len(curves):
        raise UserError(f"the primaries of {len(curves) - len(rows)} curves could not be read even after training "
                        f"them again; see {sweep.store.damaged}")
    table = pd.DataFrame([row for unit in curves for row in rows[unit[0].key]], columns=ESTIMATE_COLUMNS)
    return table.groupby(ESTIMATE_COLUMNS[:-1], as_index=False, sort=False)["value"].mean()


def train_primaries(sweep) -> None:
    """Train the sweep's primaries that are not recorded yet, and nothing else. The run directory
    keeps the plan of the whole sweep first, so its results.csv and report count what has not run,
    however this is stopped."""
    planned, mode = sweep.jobs, sweep.mode
    sweep.check_directory()  # the whole plan against what the directory holds
    with sweep.store.locked():
        sweep.store.start(sweep.cfg.to_dict(), [job.key for job in planned], mode)
    sweep.jobs, sweep.mode = [job for job in planned if job.primary is None], "extend"  # a part of it
    search, sweep.search = sweep.search, None  # an adaptive search picks transfers: none train here
    try:
        sweep.run()
    finally:
        sweep.jobs, sweep.mode, sweep.search = planned, mode, search


def write_estimates(sweep, progress: bool = True):
    """estimates.csv in the sweep's run directory, written whole or not at all (a kill while it
    is written leaves the last one), and their cost in estimate_costs.json: the wall seconds of
    estimate_sweep (loading each primary and data, forward passes, scores), on the cores its
    workers were given; returns the path of estimates.csv."""
    path = sweep.store.root / "estimates.csv"
    load, began = os.getloadavg()[0], time.perf_counter()
    table = estimate_sweep(sweep, progress)
    seconds = time.perf_counter() - began
    with writing(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    cores = None
    if sweep.cfg.executor == "local":
        workers = local_workers(sweep.cfg, sweep.device)
        cores = workers * unit_threads(sweep.cfg.threads, 0, workers)
    points = len(table.groupby(ESTIMATE_COLUMNS[:5]))
    record_cost(sweep.store.root, "estimates", {"points": points, "wall_seconds": round(seconds, 2), "cores": cores,
                                                "core_seconds": None if cores is None else round(seconds * cores, 2),
                                                **machine(load)})
    return path
