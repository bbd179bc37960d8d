"""How cheap can the advice on what to freeze be? Worked out from a full sweep's records, with no
training: every transfer the adaptive search would train is one the full sweep already trained, and
training is deterministic, so its records (cut where a rung would stop them) are what the search
would have recorded.

    python benchmarks/replay_search.py RUN_DIR

RUN_DIR: a full sweep (`layerwise run ... --search full`; bench_search.py --keep DIR leaves one in
DIR/demo-full). It prints, as shares of the full sweep's training cost (examples x epochs, all jobs
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
    exact, alone = [r for r in records if r["kind"] != "transfer"], [r for r in records if r["kind"] != "transfer"]
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


def report(run: Path) -> None:
    """Print the lines of the module's docstring for a full sweep's run directory."""
    store = Store(run)
    cfg = config_from_dict(store.read_config())
    tolerance, alpha = cfg.analysis.tolerance, cfg.analysis.alpha
    jobs = plan(cfg)
    records = {path.stem: json.loads(path.read_text()) for path in (run / "jobs").glob("*.json")}
    missing = [job.key for job in jobs if job.key not in records]
    if missing:
        sys.exit(f"{run}: not a finished full sweep: {len(missing)} of its {len(jobs)} jobs have no record "
                 f"(jobs/{missing[0]}.json, ...)")
    everything = list(records.values())
    want = advice(everything, tolerance, alpha)
    full = {"all": spent(everything), "transfers": spent(r for r in everything if r["kind"] == "transfer")}

    def line(name: str, kept: list, same: bool = True) -> None:
        got = advice(kept, tolerance, alpha)
        kept_advice = sum(want[k]["frozen"] == got.get(k, {}).get("frozen") for k in want)
        same = f"same advice for {kept_advice:>2} of {len(want)} curves" if same else "(a bound, not a search)".ljust(31)
        cost = spent(kept) / full["all"]
        transfers = spent(r for r in kept if r["kind"] == "transfer") / full["transfers"]
        print(f"  {name:<22} {same}; cost, all jobs {100 * cost:5.1f}%, "
              f"transfers {100 * transfers:5.1f}%")

    print(f"{run}: {len(want)} curves; the full sweep cost {full['all']:,} examples x epochs "
          f"({full['transfers']:,} in transfers)")
    line(f"search (SAFETY {search.SAFETY:g})", replay(jobs, records, tolerance, alpha))
    exact, alone = floors(everything, tolerance, alpha)
    line("exact floor", exact)
    line("advice alone", alone, same=False)
    default = search.SAFETY
    for safety in (1.9, 1.8, 1.5):
        search.SAFETY = safety
        line(f"search (SAFETY {safety:g})", replay(jobs, records, tolerance, alpha))
    search.SAFETY = default


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a full sweep's run directory")
    try:
        report(Path(parser.parse_args().run))
    except UserError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
