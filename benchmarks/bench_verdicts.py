"""How often each verdict fires when nothing has an effect, and how often it finds a planted one.

Prints false-positive rates on simulated sweeps of the demo's shape (3 tasks, 2 architectures,
L_H = 6, seed noise only, baselines and primaries shared within a seed as in a real sweep) and the
factor verdict's behaviour with equal and with planted effects; then the power tables of the rules
issue #16 rebuilt, on the pure functions with tests/test_verdicts.py's simulations (noise that
differs by task, a baseline's noise shared by a seed's transfers): how often the freeze advice
reaches the true safe depth and how often it lands inside a planted loss, and how often the
relatedness test rejects with and without differences between pairs. No training: tables only.

    python benchmarks/bench_verdicts.py [--sweeps 600] [--reps 2000] [--only power]
"""

import argparse
import sys
import time
from pathlib import Path
from typing import List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from results_tables import simulate  # noqa: E402
from test_verdicts import DEPTH, TOLERANCE, advice, curve_gains, pair_scores  # noqa: E402

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
    equal = [stats.factors(pair[:, None, None] + arch[None, :, None] + rng.normal(size=(6, 2, seeds)))["verdict"]
             for r in range(reps)]
    planted = [stats.factors(3 / np.sqrt(2) * pair[:, None, None] + rng.normal(size=(6, 2, seeds)))["verdict"]
               for r in range(reps)]
    named = sum(v != "inconclusive" for v in equal) / reps
    return (f"{seeds} seeds: equal pair and architecture effects, a factor named in {named:.3f} of {reps} "
            f"(nominal 0.05); pair effects 3x the seed noise named 'tasks' in {planted.count('tasks') / reps:.3f}")


def freeze_power(reps: int) -> List[str]:
    """The freeze advice (tolerance 1 point, L_H = 6) with no loss, and with a 3-point loss from
    l_c = 3 on (true safe depth 2)."""
    lines = ["| seeds | no loss: some l_c shown safe | no loss: all 6 layers | 3-point loss from l_c = 3: "
             "reaches l_c = 2 | lands inside the loss |", "|---|---|---|---|---|"]
    for seeds in (3, 5, 10):
        rng = np.random.default_rng(200 + seeds)
        none = advice(curve_gains(rng, reps, seeds))
        lossy = advice(curve_gains(rng, reps, seeds, loss=3.0, loss_from=DEPTH // 2))
        lines.append(f"| {seeds} | {np.mean(none >= 0):.3f} | {np.mean(none == DEPTH):.3f} | "
                     f"{np.mean(lossy == DEPTH // 2 - 1):.3f} | {np.mean(lossy >= DEPTH // 2):.3f} |")
    return lines


def relatedness_power(reps: int) -> List[str]:
    """The relatedness test (6 ordered pairs) at alpha 0.05 without and with differences between
    pairs (effects spread from -e to +e, in share of margin; per-pair noise sd 0.03-0.08), and the
    split-half Kendall tau."""
    lines = ["| seeds | rejects, no differences | rejects, e = 0.15 | rejects, e = 0.3 | split-half tau, none | "
             "split-half tau, e = 0.15 |", "|---|---|---|---|---|---|"]
    for seeds in (3, 5, 10):
        rng = np.random.default_rng(300 + seeds)
        rates, taus = [], []
        for effect in (0.0, 0.15, 0.3):
            m = pair_scores(rng, reps, seeds, effect=effect)
            rates.append(np.mean([stats.rm_oneway(x)["p"] < 0.05 for x in m]))
            if effect < 0.3:
                taus.append(np.mean([stats.split_half_agreement(x.T, 20, r)["kendall_tau_mean"]
                                     for r, x in enumerate(m[:500])]))
        lines.append(f"| {seeds} | {rates[0]:.3f} | {rates[1]:.3f} | {rates[2]:.3f} | {taus[0]:+.2f} | {taus[1]:+.2f} |")
    return lines


def factor_directions(reps: int) -> List[str]:
    """Equal pair and architecture variances: how often the interval lies wholly above or below the
    truth (nominal 2.5% each) and how often each factor is named (nominal at most 2.5% each)."""
    pair, arch = np.array([-2, -1, 0, 0, 1, 2.0]), np.array([-1, 1.0])
    lines = []
    for seeds in (3, 5):
        rng = np.random.default_rng(400 + seeds)
        c = np.zeros(4)
        for r in range(reps):
            f = stats.factors(pair[:, None, None] + arch[None, :, None] + rng.normal(size=(6, 2, seeds)))
            c += [f["interval"][0] > 0, f["interval"][1] < 0, f["verdict"] == "tasks", f["verdict"] == "architecture"]
        c /= reps
        lines.append(f"{seeds} seeds, {reps} runs with equal effects: interval above the truth {c[0]:.3f}, below "
                     f"{c[1]:.3f} (nominal 0.025 each); 'tasks' named {c[2]:.3f}, 'architecture' {c[3]:.3f}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=600)
    parser.add_argument("--reps", type=int, default=2000, help="replicates per cell of the power tables")
    parser.add_argument("--only", choices=["power"], help="power: only the power tables of the pure rules")
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"What to freeze ({args.reps} curves per cell, tolerance {TOLERANCE:g} point):", flush=True)
    print("\n".join(freeze_power(args.reps)), flush=True)
    print(f"\nRelatedness ({args.reps} runs per cell, alpha 0.05):", flush=True)
    print("\n".join(relatedness_power(args.reps)), flush=True)
    print("\n" + "\n".join(factor_directions(args.reps)), flush=True)
    if args.only == "power":
        print(f"({time.perf_counter() - began:.0f} s)")
        return
    for seeds in (3, 5):
        print(null_rates(args.sweeps, seeds), flush=True)
        print(factor_rates(1000, seeds), flush=True)
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
