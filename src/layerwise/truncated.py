"""The equal-cost reference for the estimates: the real sweep with its transfers trained for fewer epochs.

An estimate is worth its cost only when it beats what the same cost buys from the method itself:
the sweep's transfers trained for a few epochs instead of the recipe's, from the same primaries
and against the same baselines. `layerwise estimate CONFIG --truncated EPOCHS` runs that sweep,
really trained, into its own run directory OUT/truncated-EPOCHS/ (`train.finetune_epochs =
EPOCHS`, which leaves the primaries' keys as they are, so the run's primaries are linked in, not
trained again), and records its cost beside the estimates' cost in OUT/estimate_costs.json
(estimate.record_cost). The report reads its validation curves as one more estimate, named
"truncated sweep (E epochs)", and its own advice beside the estimates'.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import List, Tuple

from . import agreement
from .errors import UserError, warn
from .estimate import machine, record_cost
from .executors import local_workers, unit_threads
from .store import Store
from .sweep import Sweep

PREFIX = "truncated-"


def folder(out: Path, epochs: int) -> Path:
    """The run directory of the truncated sweep of `out`."""
    return Path(out) / f"{PREFIX}{epochs}"


def name(epochs: int) -> str:
    """The truncated sweep's name as an estimate in the report's tables."""
    return f"truncated sweep ({epochs} epoch{'' if epochs == 1 else 's'})"


def truncated_config(cfg, epochs: int):
    """The sweep's config with its transfers trained for `epochs` epochs (the schedule follows,
    so each transfer is a whole short run) and no estimates of its own."""
    if epochs < 1:
        raise UserError(f"--truncated must be a number of epochs of at least 1; got {epochs}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, finetune_epochs=epochs), estimate=False)


def _link(src: Path, dest: Path) -> None:
    """A hard link where the file system allows one (the primaries' checkpoints can be large), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def share_primaries(source: Store, dest: Store, jobs) -> int:
    """Link the finished primaries of `source` that `jobs` plan into `dest`; returns how many. Their
    keys are the same in both plans (finetune_epochs is in the transfers' keys only)."""
    shared = 0
    for job in jobs:
        if job.primary is not None or dest.has(job.key) or not source.has(job.key):
            continue
        if source.checkpoint_path(job.key).exists():
            _link(source.checkpoint_path(job.key), dest.checkpoint_path(job.key))
        _link(source.jobs / f"{job.key}.json", dest.jobs / f"{job.key}.json")
        shared += 1
    return shared


def run_truncated(cfg, out: Path, epochs: int, progress: bool = True) -> Path:
    """Train the truncated sweep of the run `out` into folder(out, epochs), from `out`'s primaries,
    and record its cost when this call trained all of its transfers (a resumed one is not a whole
    measurement, so the cost measured before is kept). Returns its run directory."""
    short = truncated_config(cfg, epochs)
    sweep = Sweep(short, folder(out, epochs), progress=progress)
    sweep.check_directory()
    with sweep.store.locked():
        sweep.store.start(short.to_dict(), [job.key for job in sweep.jobs])
        share_primaries(Store(out), sweep.store, sweep.jobs)
    transfers = [job for job in sweep.jobs if job.kind == "transfer"]
    missing = [job for job in sweep.jobs if job.primary is None and not sweep.store.has(job.key)]
    if missing:
        warn(f"{len(missing)} primaries of {out} are not trained; the truncated sweep trains them, and its cost "
             "counts them")
    load = os.getloadavg()[0]
    began = time.perf_counter()
    ran = sweep.run()
    seconds = time.perf_counter() - began
    trained = [job for job in ran if job.kind == "transfer"]
    if len(trained) < len(transfers):
        if trained:
            warn(f"the truncated sweep in {sweep.store.root} was resumed ({len(trained)} of {len(transfers)} transfers "
                 "trained now): its cost is not measured again")
        return sweep.store.root
    records = [r for r in sweep.store.records(job.key for job in trained) if r.get("status", "ok") == "ok"]
    cores = None
    if short.executor == "local":
        workers = local_workers(short, sweep.device)
        cores = workers * unit_threads(short.threads, 0, workers)
    record_cost(out, name(epochs), {
        "epochs": epochs, "transfers": len(trained), "wall_seconds": round(seconds, 2), "cores": cores,
        "core_seconds": None if cores is None else round(seconds * cores, 2),
        "fit_seconds": round(sum(r.get("seconds", 0.0) for r in records), 2),
        "fit_core_seconds": round(sum(r.get("seconds", 0.0) * r.get("threads", 1) for r in records), 2),
        **machine(load)})
    return sweep.store.root


def runs(out: Path) -> List[Tuple[int, List[dict]]]:
    """(epochs, finished records) of every truncated sweep kept in the run directory `out`, fewest
    epochs first; a folder that is not a readable run is passed over."""
    found = []
    for path in sorted(Path(out).glob(f"{PREFIX}*")):
        store = Store(path)
        if not path.is_dir() or not store.is_run():
            continue
        try:
            epochs = int(store.read_config().get("train", {}).get("finetune_epochs"))
            records = store.records(store.read_plan())
        except (UserError, TypeError, ValueError):
            continue
        found.append((epochs, [r for r in records if r.get("status", "ok") == "ok"]))
    return sorted(found, key=lambda item: item[0])


def as_estimates(records, epochs: int):
    """The truncated sweep's validation curves (each seed's normalised gain, as the real curve is
    measured) as rows of estimates.csv, named name(epochs)."""
    curves = agreement.real_curves(records)
    return curves.assign(score=name(epochs), value=curves["rel"])[
        agreement.KEYS + ["seed", "frozen", "fraction", "score", "value"]]
