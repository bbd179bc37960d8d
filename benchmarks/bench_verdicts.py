"""How often each verdict fires when nothing has an effect, and how often it finds a planted one.

Prints false-positive rates on simulated sweeps of the demo's shape (3 tasks, 2 architectures,
L_H = 6, seed noise only, baselines and primaries shared within a seed as in a real sweep) and the
factor verdict's behaviour with equal and with planted effects. No training: tables only.

    python benchmarks/bench_verdicts.py [--sweeps 600]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from results_tables import simulate  # noqa: E402

from layerwise import observations, stats  # noqa: E402


def null_rates(sweeps: int, seeds: int) -> str:
    rng = np.random.default_rng(seeds)
    family = comparisons = tested = factor = lost = curves = 0
    for r in range(sweeps):
        obs = observations(simulate(rng, seeds=seeds), resamples=200, seed=r)
        family += obs["nonsymmetric"]
        comparisons += sum(row["nonsymmetric"] for row in obs["asymmetry"])
        tested += len(obs["asymmetry"])
        factor += obs["factors"]["verdict"] != "inconclusive"
        lost += sum(d["depth"] < d["num_layers"] for d in obs["transfer_depth"])
        curves += len(obs["transfer_depth"])
    return (f"{seeds} seeds, {sweeps} null sweeps: 'nonsymmetric' anywhere {family / sweeps:.3f} "
            f"(per comparison {comparisons / tested:.4f}); factor named {factor / sweeps:.3f}; "
            f"significant loss on a curve {lost / curves:.4f}  (nominal 0.05)")


def factor_rates(reps: int, seeds: int) -> str:
    rng = np.random.default_rng(100 + seeds)
    pair = np.array([-2, -1, 0, 0, 1, 2.0])  # variance of effects 2
    arch = np.array([-1, 1.0])  # variance of effects 2
    equal = [stats.factors(pair[:, None, None] + arch[None, :, None] + rng.normal(size=(6, 2, seeds)),
                           resamples=300, seed=r)["verdict"] for r in range(reps)]
    planted = [stats.factors(3 / np.sqrt(2) * pair[:, None, None] + rng.normal(size=(6, 2, seeds)),
                             resamples=300, seed=r)["verdict"] for r in range(reps)]
    named = sum(v != "inconclusive" for v in equal) / reps
    return (f"{seeds} seeds: equal pair and architecture effects, a factor named in {named:.3f} of {reps} "
            f"(nominal 0.05); pair effects 3x the seed noise named 'tasks' in {planted.count('tasks') / reps:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=600)
    args = parser.parse_args()
    began = time.perf_counter()
    for seeds in (3, 5):
        print(null_rates(args.sweeps, seeds), flush=True)
        print(factor_rates(1000, seeds), flush=True)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
