"""How cheap can the advice on what to freeze be? Worked out from a full sweep's records, with no
training: every transfer the adaptive search would train is one the full sweep already trained, and
training is deterministic, so its records (cut where a rung would stop them) are what the search
would have recorded.

    python benchmarks/replay_search.py RUN_DIR [--seeds 0,1,2]

RUN_DIR: a full sweep (`layerwise run ... --search full`; bench_search.py --keep DIR leaves one in
DIR/demo-full); --seeds: as if it had run only these of its seeds (each set of seeds a
replicate of a smaller sweep). It prints, as shares of the full sweep's training cost (examples x epochs, all jobs
and the transfers alone), with how many curves keep the full sweep's advice:
- `search`: the adaptive search as it is (search.Search, one job at a time);
- `exact floor`: what any search that reaches the full sweep's advice test for test, without
  stopping a transfer early, must train: every l_c the advice holds (shown safe only by all its
  seeds, trained fully), and at the l_c that stops each curve the fewest seeds whose results
  already show it cannot be shown safe (stats.can_pass);
- `advice alone`: the l_c the advice holds and nothing else (no search can know where to stop
  without training the level that stops it: a bound below every search);
- the search with a rung that stops transfers sooner (SAFETY below search.SAFETY's 2).
"""

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import List, Optional

from layerwise import analysis, search, stats
from layerwise.config import config_from_dict
from layerwise.errors import UserError
from layerwise.plan import plan
from layerwise.store import Store


def spent(records) -> int:
    return sum(len(r.get("history") or []) * (r.get("examples") or 0) for r in records)


def cut(job, record: dict) -> dict:
    """The record a transfer would leave with this job's rung: itself, or its first epochs up to
    the one where search.should_stop stops it, as the runner's EarlyStop writes it."""
    if job.rung is None:
        return record
    errors = search.history_errors(record)
    for epoch, error in enumerate(errors, 1):
        if error is not None and search.should_stop(job.rung, epoch, error, len(errors)):
            history = record["history"][:epoch]
            val = {name[4:]: value for name, value in history[-1].items() if name.startswith("val_")}
            return {**record, "status": "pruned", "history": history, "val": val, "test": {}, "best_epoch": epoch}
    return record


def replay(jobs, records: dict, tolerance: float, alpha: float) -> list:
    """The records an adaptive search with one worker would leave (the first job it lists, then
    ask again)."""
    adaptive, finished = search.Search(jobs, tolerance, alpha), {}
    while todo := adaptive.todo(finished):
        job = todo[0]
        finished[job.key] = cut(job, records[job.key])
    return list(finished.values())


def advice(records, tolerance: float, alpha: float) -> dict:
    return {(r["arch"], r["source"], r["target"]): r for r in analysis.freeze_rules(records, tolerance, alpha)}


def floors(records: list, tolerance: float, alpha: float) -> tuple:
    """The records the exact floor and the advice alone keep (see the module's docstring)."""
    rules = advice(records, tolerance, alpha)
    table = analysis.per_seed(records)
    table = table[table["split"] == ("val" if (table["split"] == "val").any() else "test")]
    gains = {key: dict(zip(g["seed"], g["gain"])) for key, g in table.groupby(analysis.GROUP + ["frozen"])}
    fixed = [r for r in records if r["kind"] != "transfer"]  # primaries and baselines: trained by every search
    exact, alone = list(fixed), list(fixed)
    for key, rule in rules.items():
        mine = [r for r in records if r["kind"] == "transfer" and (r["arch"], r["source"], r["target"]) == key]
        held = [r for r in mine if r["frozen"] <= rule["frozen"]]
        exact += held
        alone += held
        stop = rule["stopped_at"]
        if stop is None:
            continue
        level = [r for r in mine if r["frozen"] == stop]
        seeds = gains[(*key, stop)]
        deciding = [subset for size in range(1, len(seeds) + 1) for subset in itertools.combinations(seeds, size)
                    if size == len(seeds) or not stats.can_pass([seeds[s] for s in subset], len(seeds) - size,
                                                                 tolerance, alpha)]
        cheapest = min(deciding, key=lambda subset: spent(r for r in level if r["seed"] in subset))
        exact += [r for r in level if r["seed"] in cheapest]
    return exact, alone


def replays(run: Path, seeds: Optional[List[int]] = None) -> dict:
    """What the module's docstring lists, for a full sweep's run directory (with only `seeds` of its
    seeds, when given): {"curves", "full" (its cost, all jobs and transfers), "rows": [(name, curves
    with the full sweep's advice (None for a bound), cost of all jobs, cost of the transfers, as
    shares of the full sweep's)]}."""
    raw = Store(run).read_config()
    if seeds is not None:
        outside = sorted(set(seeds) - set(raw.get("seeds", [0])))
        if outside:
            sys.exit(f"{run}: --seeds {outside} not among the seeds of its config.json ({raw.get('seeds', [0])})")
        raw = {**raw, "seeds": seeds}
    cfg = config_from_dict(raw)
    tolerance, alpha = cfg.analysis.tolerance, cfg.analysis.alpha
    jobs = plan(cfg)
    on_disk = {path.stem: path for path in (run / "jobs").glob("*.json")}
    records = {job.key: json.loads(on_disk[job.key].read_text()) for job in jobs if job.key in on_disk}
    missing = [job.key for job in jobs if job.key not in records]
    if missing:
        sys.exit(f"{run}: not a finished full sweep: {len(missing)} of its {len(jobs)} jobs have no record "
                 f"(jobs/{missing[0]}.json, ...)")
    everything = list(records.values())
    want = advice(everything, tolerance, alpha)
    full = {"all": spent(everything), "transfers": spent(r for r in everything if r["kind"] == "transfer")}

    def row(name: str, kept: list, search_like: bool = True) -> tuple:
        got = advice(kept, tolerance, alpha)
        same = sum(want[k]["frozen"] == got.get(k, {}).get("frozen") for k in want) if search_like else None
        return (name, same, spent(kept) / full["all"],
                spent(r for r in kept if r["kind"] == "transfer") / full["transfers"])

    rows = [row(f"search (SAFETY {search.SAFETY:g})", replay(jobs, records, tolerance, alpha))]
    exact, alone = floors(everything, tolerance, alpha)
    rows += [row("exact floor", exact), row("advice alone", alone, search_like=False)]
    default = search.SAFETY
    try:
        for safety in (1.9, 1.8, 1.5):
            search.SAFETY = safety
            rows.append(row(f"search (SAFETY {safety:g})", replay(jobs, records, tolerance, alpha)))
    finally:
        search.SAFETY = default
    return {"curves": len(want), "full": full, "rows": rows}


def report(run: Path, seeds: Optional[List[int]] = None) -> None:
    """Print replays(run, seeds)."""
    found = replays(run, seeds)
    print(f"{run}{'' if seeds is None else f' (seeds {seeds})'}: {found['curves']} curves; the full sweep cost "
          f"{found['full']['all']:,} examples x epochs ({found['full']['transfers']:,} in transfers)")
    for name, same, cost, transfers in found["rows"]:
        said = "(a bound, not a search)".ljust(31) if same is None else \
            f"same advice for {same:>2} of {found['curves']} curves"
        print(f"  {name:<22} {said}; cost, all jobs {100 * cost:5.1f}%, transfers {100 * transfers:5.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a full sweep's run directory")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")],
                        help="only these of its seeds, comma-separated (e.g. 0,1,2)")
    args = parser.parse_args()
    try:
        report(Path(args.run), args.seeds)
    except UserError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
