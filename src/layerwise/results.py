"""The run directory's tables, without pandas (worker processes import this; pandas costs them a
second at every start): the columns and rows of results.csv, which metrics are lower-is-better,
the columns of estimates.csv, and the one conversion that makes any value JSON-safe.

    results.csv    one row per (successful job, split, metric)
    estimates.csv  one row per (arch, source, target, seed, l_c, score)
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List

import numpy as np

# results.csv: `main` marks the task's own metric (the one that selects the epoch and draws the
# curves); `chance` is that metric's value for a predictor that ignores its input (given on the main
# metric's rows); `num_layers` is L_H; `fold` and `source_fold` are the folds of the secondary and
# primary task for tasks evaluated over several folds (empty otherwise). `status` is "ok", or "pruned"
# for a transfer the adaptive search stopped early (search.py): its validation metrics at the epoch
# it stopped, which are not a point of any curve.
RESULT_COLUMNS = ["arch", "source", "target", "seed", "frozen", "num_layers", "split", "metric", "main",
                  "lower_is_better", "chance", "value", "epoch", "fold", "source_fold", "key", "status"]

# estimates.csv: `fraction` is l_c / L_H, `score` the estimate's name (estimate.SCORES).
ESTIMATE_COLUMNS = ["arch", "source", "target", "seed", "frozen", "fraction", "score", "value"]

LOWER_IS_BETTER = {"error", "err", "per", "fer", "wer", "cer", "ue", "loss"}  # metric names, lower case


def metric_lower_is_better(metric: str) -> bool:
    """Whether a metric of this name is an error (lower is better) rather than an accuracy."""
    name = str(metric).lower()
    return name in LOWER_IS_BETTER or name.endswith("error")


def _lower_is_better(record: Dict[str, Any], metric: str) -> bool:
    return bool(record["lower_is_better"]) if metric == record["metric"] else metric_lower_is_better(metric)


def result_rows(records: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The rows of results.csv for finished records (failed jobs have no metrics and no rows)."""
    rows = []
    blank = lambda v: "" if v is None else v  # noqa: E731
    for r in records:
        if r.get("status", "ok") not in ("ok", "pruned"):
            continue
        for split in ("val", "test"):
            for metric, value in r[split].items():
                rows.append({"arch": r["arch"], "source": blank(r["source"]), "target": r["target"], "seed": r["seed"],
                             "frozen": blank(r["frozen"]), "num_layers": r["num_layers"], "split": split,
                             "metric": metric, "main": metric == r["metric"],
                             "lower_is_better": _lower_is_better(r, metric),
                             "chance": blank(r.get("chance")) if metric == r["metric"] else "",
                             "value": float(f"{value:.6g}"),
                             "epoch": r["best_epoch"], "fold": blank(r.get("fold")),
                             "source_fold": blank(r.get("source_fold")), "key": r["key"],
                             "status": r.get("status", "ok")})
    return rows


def plain(value: Any, mapping: type = dict) -> Any:
    """`value` as what json.dumps writes without complaint and other tools read: Python scalars
    for numpy's, None for NaN and infinities (JSON has neither), lists for tuples, and `mapping`
    (a dict subclass) for every dict, with string keys."""
    if isinstance(value, dict):
        return mapping({str(k): plain(v, mapping) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [plain(v, mapping) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
