"""The adaptive search against the full sweep: the same advice on what to freeze, for how much
training? On the demo suite (12 curves, 3 seeds) and on the README's freeze example (a primary
trained on printed digits, transferred to scikit-learn's handwritten digits as PNGs, 3 seeds).

    python benchmarks/bench_search.py [--only demo|freeze|replicates] [--keep DIR]

For each: the advice of each curve under both searches, and what each cost: training examples x
epochs (all jobs, and the transfers alone: the primaries and baselines are the same in both) and
wall seconds. The target: the same advice for at least 11 of the 12 demo curves at no more than
40% of the full sweep's training cost. Then, from the full sweep's records, what any search could
cost on the demo's curves (replay_search.py). `replicates`: the demo's seeds are one draw, so the
demo is also swept fully with 5 seeds and the search replayed on each 3 of them (10 replicates of
the demo with other seeds). Run it with nothing else running: it prints the machine
(cores, CPU model, load average before each run) beside its timings.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import replay_search
from bench_demo import cpu_model


def layerwise(*args) -> float:
    """Run a layerwise command; return its wall seconds."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "layerwise", *args, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def cost(out: Path) -> dict:
    """Training examples x epochs a run directory's jobs ran (given primaries train nothing), and
    the seconds its transfers spent training, summed over workers."""
    total = transfers = seconds = 0
    for path in (out / "jobs").glob("*.json"):
        r = json.loads(path.read_text())
        spent = len(r.get("history") or []) * (r.get("examples") or 0)
        total += spent
        if r["kind"] == "transfer":
            transfers += spent
            seconds += r.get("seconds") or 0
    return {"all": total, "transfers": transfers, "seconds": seconds}


def advice(out: Path) -> dict:
    return {(w["arch"], w["source"], w["target"]): w["frozen"]
            for w in json.loads((out / "observations.json").read_text())["what_to_freeze"]}


def compare(name: str, full: Path, adaptive: Path, seconds: dict) -> None:
    want, got = advice(full), advice(adaptive)
    same = sum(want[k] == got.get(k) for k in want)
    spent = {mode: cost(out) for mode, out in (("full", full), ("adaptive", adaptive))}
    print(f"\n{name}: advice (l_c) per curve, full -> adaptive")
    for key in sorted(want):
        print(f"  {key[0]} {key[1]} -> {key[2]}: {want[key]} -> {got.get(key)}" + ("" if want[key] == got.get(key) else "  DIFFERS"))
    print(f"  same advice for {same} of {len(want)} curves")
    for part in ("all", "transfers"):
        ratio = spent["adaptive"][part] / spent["full"][part]
        print(f"  cost, {part} jobs (examples x epochs): full {spent['full'][part]:,}, adaptive "
              f"{spent['adaptive'][part]:,}: {100 * ratio:.1f}%")
    print(f"  training seconds of the transfers, summed over workers: full {spent['full']['seconds']:.1f} s, adaptive "
          f"{spent['adaptive']['seconds']:.1f} s: {100 * spent['adaptive']['seconds'] / spent['full']['seconds']:.1f}% "
          "(the l_c skipped are the deep ones, the cheapest: only the layers above l_c train)")
    print(f"  wall: full {seconds['full']:.1f} s, adaptive {seconds['adaptive']:.1f} s: "
          f"{100 * seconds['adaptive'] / seconds['full']:.1f}%")


def demo(root: Path) -> None:
    seconds = {}
    for mode in ("full", "adaptive"):
        print(f"demo, {mode}: load average {os.getloadavg()[0]:.2f} before the run", flush=True)
        seconds[mode] = layerwise("run", "demo", "--out", str(root / f"demo-{mode}"), "--search", mode)
    compare("demo (12 curves, 3 seeds)", root / "demo-full", root / "demo-adaptive", seconds)
    print("\nwhat any search could cost on these curves (replay_search.py, from the full sweep's records):")
    replay_search.report(root / "demo-full")


def freeze(root: Path) -> None:
    """The README's freeze example: its primary trained once, then `layerwise freeze` both ways."""
    layerwise("run", "demo", "--out", str(root / "printed"), "--set", 'tasks=["printed-digits"]',
              "--set", 'archs=["alexnet-small"]', "--set", "seeds=[0]")
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / "handwritten" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype("uint8")).save(folder / f"{i}.png")
    checkpoint = next((root / "printed" / "checkpoints").glob("*.safetensors"))
    seconds = {}
    for mode in ("full", "adaptive"):
        print(f"freeze, {mode}: load average {os.getloadavg()[0]:.2f} before the run", flush=True)
        seconds[mode] = layerwise("freeze", "--model", str(checkpoint), "--arch", "alexnet-small", "--name",
                                  "printed-digits", "--data", str(root / "handwritten"), "--set",
                                  "data.handwritten.shape=[1,16,16]", "--out", str(root / f"freeze-{mode}"),
                                  "--search", mode)
    compare("freeze example (1 curve, 3 seeds)", root / "freeze-full", root / "freeze-adaptive", seconds)


def replicates(root: Path) -> None:
    run = root / "demo-5-seeds"
    print(f"demo with seeds 0-4, full: load average {os.getloadavg()[0]:.2f} before the run", flush=True)
    layerwise("run", "demo", "--out", str(run), "--set", "seeds=[0,1,2,3,4]", "--search", "full")
    print("\nthe adaptive search on each 3 of the 5 seeds (replay_search.py, from the 5-seed sweep's records):")
    costs, same, curves = [], 0, 0
    for seeds in itertools.combinations(range(5), 3):
        found = replay_search.replays(run, list(seeds))
        (_, kept, cost, transfers), (_, _, floor, _) = found["rows"][:2]
        costs.append(cost)
        same, curves = same + kept, curves + found["curves"]
        print(f"  seeds {seeds}: same advice for {kept} of {found['curves']} curves; cost, all jobs {100 * cost:.1f}% "
              f"(exact floor {100 * floor:.1f}%), transfers {100 * transfers:.1f}%")
    print(f"  over the {len(costs)}: same advice for {same} of {curves} curves; cost, all jobs, mean "
          f"{100 * sum(costs) / len(costs):.1f}%, from {100 * min(costs):.1f}% to {100 * max(costs):.1f}%; "
          f"{sum(cost <= 0.4 for cost in costs)} of {len(costs)} at 40% or less")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["demo", "freeze", "replicates"])
    parser.add_argument("--keep", help="keep the run directories here")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "demo"):
            demo(root)
        if args.only in (None, "freeze"):
            freeze(root)
        if args.only in (None, "replicates"):
            replicates(root)


if __name__ == "__main__":
    main()
