"""Simulated results tables in the columns of results.csv, with effects planted where asked."""

import numpy as np
import pandas as pd


def simulate(rng, tasks=("a", "b", "c"), archs=("x", "y"), seeds=3, depth=6, noise=1.0, level=None,
             pair_effect=None, arch_effect=None, loss_from=None, metric="accuracy", split_noise=True, chance=10.0):
    """One row per (job, split): baselines at `level[task]` accuracy, transfers at their target's
    level plus `pair_effect[(a, b)]` (points, reached at full depth), plus `arch_effect[arch]`; a
    loss of 10 points at every l_c >= `loss_from`. Every job gets its own noise, and val and test
    of one job share half of it. `chance`: the chance accuracy written in the `chance` column
    (None: no such column)."""
    level = level or {t: 90.0 - 10 * i for i, t in enumerate(tasks)}
    lower = metric in ("error", "per", "ue")
    rows = []

    def add(arch, source, target, seed, frozen, mean):
        shared = rng.normal(0, noise)
        for split in ("val", "test"):
            own = rng.normal(0, noise) if split_noise else 0.0
            value = mean + (shared + own) / np.sqrt(2)
            row = {"arch": arch, "source": source, "target": target, "seed": seed, "frozen": frozen,
                   "num_layers": depth, "split": split, "metric": metric, "value": 100 - value if lower else value}
            if chance is not None:
                row["chance"] = 100 - chance if lower else chance
            rows.append(row)

    for arch in archs:
        for seed in range(seeds):
            for t in tasks:
                add(arch, "", t, seed, "", level[t])
            for a in tasks:
                for b in tasks:
                    if a == b:
                        continue
                    for k in range(depth + 1):
                        shift = (pair_effect or {}).get((a, b), 0.0) * k / depth + (arch_effect or {}).get(arch, 0.0)
                        if loss_from is not None and k >= loss_from:
                            shift -= 10
                        add(arch, a, b, seed, k, level[b] + shift)
    return pd.DataFrame(rows)
