"""The cheap estimates against the sweep they stand in for, on a finished run of the demo suite.

    layerwise demo --out runs/demo            # once: the real curves (a few minutes)
    python benchmarks/bench_estimate.py [runs/demo]

Prints the seconds the estimates take for every (arch, seed, pair, l_c) of the run (loading each
primary, the prefix forward passes and all four scores, in the local executor's worker processes;
not Python's start-up) against the seconds its transfers trained (the sum of their records'
"seconds"), both also as core-seconds (seconds x the threads that ran them, so that estimates
and training compare whatever their parallelism), and each score's rank correlation
with the real curves, over l_c and over pairs, beside the reference that knows nothing but "more
frozen layers, worse". Timings are only comparable on an otherwise idle machine: it prints the
machine and its load average, and should run alone (e.g. under the project's CPU lock).
"""

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from bench_demo import cpu_model
from layerwise import agreement, estimate, scores
from layerwise.config import config_from_dict
from layerwise.executors import local_workers, unit_threads
from layerwise.store import Store
from layerwise.sweep import Sweep


def main():
    run_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
    store = Store(run_dir)
    config = store.read_config()
    config.pop("estimate", None)
    cfg = config_from_dict(config, str(run_dir / "config.json"))
    records = store.records(store.read_plan())
    transfers = [r for r in records if r["kind"] == "transfer"]
    sweep_seconds = sum(r["seconds"] for r in transfers)
    sweep_core_seconds = sum(r["seconds"] * r.get("threads", os.cpu_count()) for r in transfers)
    load = os.getloadavg()[0]
    sweep = Sweep(cfg, run_dir, progress=False)
    began = time.perf_counter()
    estimates = estimate.estimate_sweep(sweep, progress=False)
    seconds = time.perf_counter() - began
    workers = local_workers(cfg, sweep.device)
    cores = workers * unit_threads(cfg.threads, 0, workers)
    points = len(estimates.groupby(["arch", "source", "target", "seed", "frozen"]))
    print(f"estimates: {points} (arch, seed, pair, l_c) points x {len(scores.SCORES)} scores in {seconds:.1f} s "
          f"on {cores} core(s) ({seconds * cores:.1f} core-seconds); the sweep's {len(transfers)} transfers trained "
          f"for {sweep_seconds:.1f} s ({sweep_core_seconds:.1f} core-seconds): "
          f"{sweep_core_seconds / (seconds * cores):.1f}x cheaper in core-seconds (target: 100x)")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, load average {load:.2f} before the estimates")
    real = agreement.real_curves(records)
    forms = pd.concat([estimates, agreement.reachable(estimates), agreement.depth_only(estimates)])
    _, by_arch = agreement.curve_agreement(forms, real)
    pairs = agreement.pair_agreement(forms, real)
    table = by_arch.merge(pairs, on=["arch", "score"], suffixes=(" l_c", " pairs"))
    columns = ["arch", "score", "tau l_c", "tau_low l_c", "tau_high l_c", "rho l_c", "tau pairs", "tau_low pairs",
               "tau_high pairs", "rho pairs"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[columns].sort_values(["arch", "score"]).round(2).to_string(index=False))
    print(json.dumps({"estimate_seconds": round(seconds, 2), "estimate_cores": cores,
                      "sweep_seconds": round(sweep_seconds, 2), "sweep_core_seconds": round(sweep_core_seconds, 2)}))


if __name__ == "__main__":
    main()
