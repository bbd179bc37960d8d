"""What the estimates cost against the sweep they stand in for, end to end, on a suite of the
paper-images experiment's shapes, and the ratio projected to paper-images at its recipe.

    python benchmarks/bench_estimate.py --size tiny      # shows that it runs (6 minutes on 2 loaded cores)
    python benchmarks/bench_estimate.py                  # --size small: the measurement, on an idle machine
                                                         # (roughly 30-60 minutes on 2 cores)

The demo's 100x target was a property of its tiny transfers, not of the method: each demo
transfer trains for under a second, so the estimates' fixed cost per point (forward passes and
scores on up to 2000 x 512 features) is about as large as the training it replaces. Here the
suite has paper-images' shapes: three generated tasks of 3 x 32 x 32 images standing for CIFAR-10,
CIFAR-100 and SVHN (10, 100 and 10 classes), the six-layer DenseNet with the paper's widths and
DenseNet's recipe (SGD, Nesterov momentum, step schedule, batch 64), every ordered pair and every
l_c, one seed, a few epochs. The prefix cache is off, since CIFAR's random crop and flip keep the
real sweep from caching prefix outputs.

Both sides are timed end to end as a user meets them (the command's wall time: start-up, the work,
the report), each from the same trained primaries, which both need, so neither is charged for them:
1. `layerwise estimate` once untimed, to train the primaries; then again, timed: the estimates
   alone (estimate_costs.json also records their own wall time, without start-up and report);
2. `layerwise run`: the 42 transfers.
The start-up and the report are fixed costs, a few seconds: at --size tiny they are a large part
of both sides, so the figures that count only the work itself are printed too.

Projection: the sweep's cost per training image-epoch of a transfer (its records' own seconds
and the command's wall) times paper-images' image-epochs per seed (6 pairs x 7 l_c x 300 epochs x
the target's 45,000 or 67,257 training images), against the estimates' cost per scored image
times paper-images' scored images per seed (6 curves x at most 2000 training + 1000 validation
examples, estimate.py's caps). At --size small and above the suite reaches those caps, so the
estimates' side is the paper's own (per seed); at --size tiny it is scaled up linearly, which the
fixed per-point costs make pessimistic for the estimates.

Timings mean something only on a machine doing nothing else: the machine (cores, CPU model) and
its load average before each side are printed with the figures, and the run says when the load
was above half a core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from layerwise.estimate import COSTS, TRAIN_CAP, VAL_CAP, machine  # noqa: E402
from layerwise.store import Store  # noqa: E402

# (training, validation, test) images per task; the paper's CIFAR split is 45,000 / 5,000
SIZES = {"tiny": (200, 100, 100), "small": (2000, 1000, 100), "medium": (4500, 1000, 500), "large": (9000, 1000, 1000)}
TASKS = {"cifar10-like": 10, "cifar100-like": 100, "svhn-like": 10}
PAPER_TRAIN = {"cifar10-like": 45_000, "cifar100-like": 45_000, "svhn-like": 67_257}
PAPER_EPOCHS, PAPER_LAYERS = 300, 6  # densenet6: L_H = 6, so 7 values of l_c


def generate(path: Path, classes: int, sizes, seed: int) -> None:
    """Colour images a network can learn something from: a smooth random template per class plus
    noise, standardised; labels spread evenly over the classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (classes, 3, 8, 8))
    templates = coarse.repeat(4, axis=2).repeat(4, axis=3)  # 32 x 32
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        y = rng.permutation(np.arange(n) % classes)
        x = 0.7 * templates[y] + rng.normal(0, 1, (n, 3, 32, 32))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x.astype(np.float32), y.astype(np.int64)
    np.savez(path, **arrays)


def write_config(folder: Path, epochs: int, sizes) -> Path:
    lines = ['name = "bench-estimate"', f"tasks = {json.dumps(list(TASKS))}", 'archs = ["densenet6"]', "seeds = [0]",
             'frozen = "all"', 'pairs = "all"', 'checkpoints = "primaries"', "",
             "[train]", f"epochs = {epochs}", "batch_size = 64", "eval_batch_size = 1000", 'optimizer = "sgd"',
             "lr = 0.1", "momentum = 0.9", "nesterov = true", "weight_decay = 1e-4", 'schedule = "step"',
             "milestones = [0.5, 0.75]", "gamma = 0.1", "cache_prefix = false", "",
             "[arch_options.densenet6]", "growth = 12", "convs = 4", "stem = 24"]
    for i, (name, classes) in enumerate(TASKS.items()):
        generate(folder / f"{name}.npz", classes, sizes, seed=i)
        lines += ["", f'[data."{name}"]', 'kind = "arrays"', f'path = "{name}.npz"']
    path = folder / "suite.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def layerwise(*args) -> float:
    """Run the command line to the end; its wall seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "layerwise", *args, "--quiet"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def loaded(before: dict) -> str:
    return " (NOT a clean measurement: other work was running)" if before["load_average"] > 0.5 else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="images per generated task: " + "; ".join(f"{k}: {v[0]} train, {v[1]} val, {v[2]} test"
                                                                       for k, v in SIZES.items()))
    parser.add_argument("--epochs", type=int, help="epochs of every run (default: 1 at --size tiny, else 2)")
    parser.add_argument("--keep", help="keep the suite and its run directory in this folder")
    args = parser.parse_args()
    sizes, epochs = SIZES[args.size], args.epochs or (1 if args.size == "tiny" else 2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        config, out = write_config(folder, epochs, sizes), folder / "run"
        layerwise("estimate", str(config), "--out", str(out))  # the primaries (and a first estimate)
        est_machine = machine()
        est_command = layerwise("estimate", str(config), "--out", str(out))
        estimates = json.loads((out / COSTS).read_text())["estimates"]
        run_machine = machine()
        run_seconds = layerwise("run", str(config), "--out", str(out))
        store = Store(out)
        records = [r for r in store.records(store.read_plan()) if r.get("status", "ok") == "ok"]
    transfers = [r for r in records if r["kind"] == "transfer"]
    primaries = [r for r in records if r["kind"] == "scratch"]
    cores = estimates["cores"] or 1
    fit_core = sum(r["seconds"] * r.get("threads", 1) for r in transfers)
    image_epochs = len(transfers) * epochs * sizes[0]
    curves = len(TASKS) * (len(TASKS) - 1)
    scored = curves * (min(sizes[0], TRAIN_CAP) + min(sizes[1], VAL_CAP))
    paper_image_epochs = sum(PAPER_TRAIN[t] for s in TASKS for t in TASKS if s != t) * (PAPER_LAYERS + 1) * PAPER_EPOCHS
    paper_scored = curves * (TRAIN_CAP + VAL_CAP)

    print(f"suite: 3 generated tasks of 3x32x32 ({sizes[0]} train, {sizes[1]} val images each), densenet6, "
          f"{epochs} epoch(s), 1 seed: {len(primaries)} primaries, {len(transfers)} transfers, "
          f"{estimates['points']} estimated points")
    print(f"estimates: `layerwise estimate` {est_command:.1f} s wall on {cores} core(s) ({est_command * cores:.1f} "
          f"core-seconds); the estimates alone {estimates['wall_seconds']:.1f} s; load average before: "
          f"{est_machine['load_average']:.2f}{loaded(est_machine)}")
    print(f"sweep: `layerwise run` of the {len(transfers)} transfers {run_seconds:.1f} s wall "
          f"({run_seconds * cores:.1f} core-seconds); their records' own training {fit_core:.1f} core-seconds; "
          f"load average before: {run_machine['load_average']:.2f}{loaded(run_machine)}")
    print(f"measured ratio, this suite: {run_seconds / est_command:.1f}x end to end; "
          f"{fit_core / (estimates['wall_seconds'] * cores):.1f}x the transfers' own training against the estimates alone")
    per_image_sweep = run_seconds * cores / image_epochs
    per_image_fit = fit_core / image_epochs
    per_scored = est_command * cores / scored
    per_scored_alone = estimates["wall_seconds"] * cores / scored
    paper_estimates = per_scored * paper_scored
    print(f"per image: a transfer's training image-epoch {1e3 * per_image_sweep:.2f} core-ms end to end "
          f"({1e3 * per_image_fit:.2f} core-ms of its own training); an estimated image {1e3 * per_scored:.2f} core-ms "
          f"end to end ({1e3 * per_scored_alone:.2f} core-ms the estimates alone)")
    capped = sizes[0] >= TRAIN_CAP and sizes[1] >= VAL_CAP
    print(f"projected to paper-images at {PAPER_EPOCHS} epochs, per seed ({paper_image_epochs / 1e6:.0f} M transfer "
          f"image-epochs; {paper_scored} estimated images, the caps"
          + ("" if capped else f", scaled up from {scored}: below the caps, so pessimistic for the estimates") + "): "
          f"sweep {per_image_sweep * paper_image_epochs / 3600:.0f} core-hours, estimates "
          f"{paper_estimates / 60:.1f} core-minutes: {per_image_sweep * paper_image_epochs / paper_estimates:,.0f}x "
          f"end to end ({per_image_fit * paper_image_epochs / (per_scored_alone * paper_scored):,.0f}x the transfers' "
          "own training against the estimates alone)")
    print(f"machine: {est_machine['machine_cores']} cores, {est_machine['cpu']}")
    print(json.dumps({"size": args.size, "epochs": epochs, "estimate_command_seconds": round(est_command, 2),
                      "estimate_seconds": estimates["wall_seconds"],
                      "cores": cores, "sweep_seconds": round(run_seconds, 2), "transfer_fit_core_seconds": round(fit_core, 2),
                      "load_before": [est_machine["load_average"], run_machine["load_average"]]}))


if __name__ == "__main__":
    main()
