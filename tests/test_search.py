"""The adaptive search along l_c (search.py): its decision rule on simulated curves with a known
answer, and the real thing end to end, stopped and started again, in worker processes."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli_env, records
from layerwise import analysis, search
from layerwise.cli import main
from layerwise.config import config_from_dict
from layerwise.errors import UserError
from layerwise.plan import Job
from layerwise.runner import EarlyStop, Stopped
from layerwise.sweep import Sweep

DEPTH, EPOCHS, TOLERANCE = 6, 4, 1.0


def simulated_curves(rng, curves: int, seeds: int, loss: float, safe: int, noise: float = 1.0):
    """Validation accuracies of `curves` independent curves (each into its own task): a baseline
    per seed at 80 plus noise, and transfers at 80 - `loss` from l_c = safe + 1 on (0 up to
    `safe`), each job with its own noise (`noise` times a t with 5 degrees of freedom: heavy tails), and a
    learning curve that climbs to its final value over EPOCHS epochs."""
    base = 80 + noise * rng.standard_t(5, size=(curves, seeds))
    levels = np.arange(DEPTH + 1)
    transfer = 80 - loss * (levels > safe)[None, None, :] + noise * rng.standard_t(5, size=(curves, seeds, DEPTH + 1))
    return base, transfer


def record(job: Job, value: float, history=None, status="ok") -> dict:
    epochs = EPOCHS if history is None else len(history)
    history = history or [{"epoch": e, "val_accuracy": value - 6 * (1 - e / EPOCHS) ** 2} for e in range(1, EPOCHS + 1)]
    return {"kind": job.kind, "arch": job.arch, "source": job.source, "target": job.target, "seed": job.seed,
            "frozen": job.frozen, "num_layers": DEPTH, "val": {"accuracy": value}, "test": {"accuracy": value},
            "metric": "accuracy", "lower_is_better": False, "chance": 10.0, "best_epoch": epochs, "fold": None,
            "source_fold": None, "key": job.key, "status": status, "history": history}


def train(job: Job, value: float) -> dict:
    """A simulated transfer that stops early as the runner's EarlyStop would."""
    history = []
    for epoch in range(1, EPOCHS + 1):
        acc = value - 6 * (1 - epoch / EPOCHS) ** 2
        history.append({"epoch": epoch, "val_accuracy": acc})
        if job.rung is not None and search.should_stop(job.rung, epoch, 100 - acc, EPOCHS):
            return record(job, acc, history, "pruned")
    return record(job, value)


def run_search(base, transfer, one_at_a_time=False, rungs=True):
    """The adaptive search's advice per curve and what it trained, and the full rule's advice on
    every l_c of the same simulated data. `one_at_a_time`: as with one worker, the first job the
    search lists, then ask again (else every job it lists); `rungs`: transfers may stop early."""
    curves, seeds = base.shape
    jobs = [Job("scratch", "x", f"t{c}", s, f"b{c}-{s}") for c in range(curves) for s in range(seeds)]
    jobs += [Job("transfer", "x", f"t{c}", s, f"x{c}-{s}-{k}", f"s{c}", k, f"p{c}-{s}")
             for c in range(curves) for s in range(seeds) for k in range(DEPTH + 1)]
    finished = {job.key: record(job, base[int(job.target[1:]), job.seed]) for job in jobs if job.kind == "scratch"}
    adaptive = search.Search(jobs, TOLERANCE, 0.05)
    while todo := adaptive.todo(finished):
        for job in todo[:1] if one_at_a_time else todo:
            value = transfer[int(job.target[1:]), job.seed, job.frozen]
            finished[job.key] = train(job, value) if rungs else record(job, value)
    every = [record(job, transfer[int(job.target[1:]), job.seed, job.frozen]) for job in jobs if job.kind == "transfer"]
    full = analysis.freeze_rules(every + [finished[j.key] for j in jobs if j.kind == "scratch"], TOLERANCE)
    order = lambda rules: [r["frozen"] for r in sorted(rules, key=lambda r: int(r["target"][1:]))]  # noqa: E731
    trained = [r for r in finished.values() if r["kind"] == "transfer"]
    return np.array(order(analysis.freeze_rules(list(finished.values()), TOLERANCE))), np.array(order(full)), trained


@pytest.mark.parametrize("loss, curves, seeds, power", [(TOLERANCE, 1000, 5, 0.7), (3.0, 200, 5, 0.7),
                                                         (TOLERANCE, 1000, 3, 0.3)])
def test_the_adaptive_advice_is_too_deep_in_at_most_alpha_of_curves(loss, curves, seeds, power):
    """Curves safe to l_c = 2, then losing exactly the tolerance (the hardest case: a loss the test
    can only just not tell from a safe one; 1,000 curves, Monte Carlo error 0.7%) or a planted 3
    points, with noise small enough that the safe levels are often shown safe: with 5 seeds, and
    with 3, where the first seeds of an l_c often settle it without the others."""
    base, transfer = simulated_curves(np.random.default_rng(17 + int(loss) + seeds), curves, seeds, loss, safe=2,
                                      noise=0.3)
    adaptive, full, trained = run_search(base, transfer)
    assert np.mean(adaptive > 2) <= 0.05 + 0.007
    assert np.mean(adaptive == 2) > power  # and it does find the safe depth
    assert np.all(adaptive <= full)  # a stop can only make the advice shallower
    pruned = {int(r["target"][1:]) for r in trained if r["status"] == "pruned"}
    same = [c for c in range(curves) if c not in pruned]
    assert len(same) > 0.05 * curves and np.array_equal(adaptive[same], full[same])  # test for test, the full rule's
    assert len(trained) < 0.6 * curves * seeds * (DEPTH + 1)


def test_a_transfer_stops_early_only_where_its_own_loss_settles_its_level():
    """With 5 seeds one seed that loses more than the tolerance does not settle its l_c (the other
    four can outweigh it), so no transfer gets a rung and the advice is the full rule's on every
    curve; with 3 seeds it does, and transfers far out of the tolerance stop early. Every curve here
    loses 3 points from l_c = 2; at l_c = 1 the first seed loses 2 points and the others gain 1
    (with 5 seeds, shown safe on the mean: a bound near -0.9)."""
    for seeds, stops in ((5, False), (3, True)):
        base, transfer = simulated_curves(np.random.default_rng(21), 100, seeds, 3.0, safe=1, noise=0.3)
        transfer[:, 0, 1] -= 2.0
        transfer[:, 1:, 1] += 1.0
        adaptive, full, trained = run_search(base, transfer)
        pruned = [r for r in trained if r["status"] == "pruned"]
        assert bool(pruned) == stops
        if not stops:
            np.testing.assert_array_equal(adaptive, full)
            assert np.mean(adaptive == 1) > 0.5  # l_c = 1 is shown safe despite its one bad seed


def test_the_search_stops_at_the_first_level_not_shown_safe_and_skips_the_rest():
    base, transfer = simulated_curves(np.random.default_rng(3), 200, 5, 8.0, safe=1, noise=0.3)
    adaptive, full, trained = run_search(base, transfer)
    levels = {}
    for r in trained:
        levels.setdefault(r["target"], set()).add(r["frozen"])
    for c, advice in enumerate(adaptive):
        assert levels[f"t{c}"] == set(range(advice + 2))  # every l_c up to the one that stopped it, no other
    assert np.mean(adaptive == 1) > 0.5 and max(adaptive) <= 1


def test_the_other_seeds_of_a_level_its_first_seeds_decide_are_not_trained():
    """One job at a time (one worker), no early stops: an l_c whose first seed already loses far
    more than the tolerance trains no other seed (with 3 seeds the bound lies below the smallest
    gain); the advice is still the full rule's, curve for curve; and every l_c left with fewer
    seeds is one that no values of the missing seeds could have shown safe."""
    from layerwise import stats

    base, transfer = simulated_curves(np.random.default_rng(8), 30, 3, 8.0, safe=1, noise=0.3)
    adaptive, full, trained = run_search(base, transfer, one_at_a_time=True, rungs=False)
    np.testing.assert_array_equal(adaptive, full)
    seeds: dict = {}
    for r in trained:
        seeds.setdefault((r["target"], r["frozen"]), []).append(r)
    partial = {key: rs for key, rs in seeds.items() if len(rs) < 3}
    stopped_at_2 = [f"t{c}" for c in range(30) if adaptive[c] == 1]
    assert len(stopped_at_2) >= 15 and all(len(seeds[target, 2]) == 1 for target in stopped_at_2)
    for (target, level), rs in partial.items():
        gains = [r["val"]["accuracy"] - base[int(target[1:]), r["seed"]] for r in rs]
        assert not stats.can_pass(gains, 3 - len(rs), TOLERANCE)
    assert len(trained) < 30 * (3 + 3 + 2)  # l_c 0 and 1 in full, l_c 2 mostly for one seed


def test_a_transfer_stops_early_only_when_even_twice_the_best_later_improvement_cannot_save_it():
    rung = (20.0, (3.0, 1.0, None, 0.0))  # error limit, margins after epochs 1-4
    assert search.should_stop(rung, 1, 26.5, 5) and not search.should_stop(rung, 1, 25.5, 5)
    assert search.should_stop(rung, 2, 22.5, 5) and not search.should_stop(rung, 2, 21.5, 5)
    assert not search.should_stop(rung, 3, 90.0, 5)  # no shallower l_c ran that epoch
    assert not search.should_stop(rung, 5, 90.0, 5)  # the last epoch: nothing left to save
    margins = search.rung_margins([{"metric": "accuracy", "lower_is_better": False, "val": {"accuracy": 90.0},
                                    "history": [{"val_accuracy": 80.0}, {"val_accuracy": 88.0}, {"val_accuracy": 90.0}]}])
    assert margins == [10.0, 2.0, 0.0]


def test_the_runner_records_a_stopped_transfer_as_pruned_with_what_it_reached(tmp_path):
    raw = {**FREEZE, "frozen": [0, 2], "seeds": [0], "workers": 1, "train": {"epochs": 2, "batch_size": 32}}
    sweep = Sweep(config_from_dict(raw), tmp_path, progress=False)
    sweep.run()
    job = next(j for j in sweep.jobs if j.kind == "transfer" and j.frozen == 2)
    sweep.store.remove_record(job.key)
    stopped = sweep.runner.run_job(dataclasses.replace(job, rung=(-1.0, (0.0, 0.0))))
    assert stopped["status"] == "pruned" and stopped["best_epoch"] == 1 and len(stopped["history"]) == 1
    assert "stopped after epoch 1 of 2" in stopped["reason"] and stopped["val"]["accuracy"] > 0
    assert 0 < stopped["seconds"] < 60  # the time it trained, as a finished transfer's record has
    rows = [r for r in analysis.results_table(sweep.store.records(k.key for k in sweep.jobs)).itertuples()
            if r.key == job.key]
    assert rows and {r.status for r in rows} == {"pruned"} and {r.split for r in rows} == {"val"}
    watch = EarlyStop(dataclasses.replace(job, rung=(60.0, (5.0, 5.0))), sweep.cfg.task("printed-digits"), 3)
    watch(1, {"accuracy": 35.0})  # error 65, less 2 x 5: within the limit of 60
    with pytest.raises(Stopped):
        watch(2, {"accuracy": 25.0})  # error 75, less 10, still above 60


FREEZE = {"tasks": ["printed-letters", "printed-digits"], "archs": ["alexnet-small"], "seeds": [0, 1, 2],
          "frozen": "all", "pairs": [["printed-letters", "printed-digits"]], "train": {"epochs": 3, "batch_size": 32},
          "task_options": {"printed-digits": {"per_class": 16}, "printed-letters": {"per_class": 6}},
          "arch_options": {"alexnet-small": {"width": 4, "hidden": 16}}, "workers": 2, "threads": 1}


def write_config(folder, raw, name="search.toml"):
    """A TOML file of `raw` (top-level values, then one level of tables)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for table, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, dict):
                    lines += [f'[{table}."{key}"]'] + [f"{k} = {json.dumps(v)}" for k, v in value.items()]
                else:
                    lines += [f"[{table}]"] if f"[{table}]" not in lines else []
                    lines.append(f"{key} = {json.dumps(value)}")
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def advice_of(out):
    return [(w["arch"], w["source"], w["target"], w["frozen"], w["stopped_at"])
            for w in json.loads((out / "observations.json").read_text())["what_to_freeze"]]


@pytest.fixture(scope="module")
def full_and_adaptive(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    for mode in ("full", "adaptive"):
        config = write_config(root, {**FREEZE, "name": mode, "search": mode}, name=f"{mode}.toml")
        assert main(["run", str(config), "--out", str(root / mode), "--quiet"]) == 0
    return root


def test_adaptive_gives_the_full_sweeps_advice_and_says_what_it_trained(full_and_adaptive):
    full, adaptive = full_and_adaptive / "full", full_and_adaptive / "adaptive"
    assert advice_of(adaptive) == advice_of(full)
    obs = json.loads((adaptive / "observations.json").read_text())
    curve = obs["search"]["curves"][0]
    trained = sorted(int(k) for k in curve["trained"])
    assert trained == list(range(len(trained))) and curve["skipped"] == list(range(len(trained), 7))
    assert obs["search"]["fraction"] < 1 and curve["skipped"]
    points = {int(r.split(",")[4]) for r in (adaptive / "curves.csv").read_text().splitlines()[1:]}
    assert points == set(trained) - {int(k) for k in curve["pruned"]}  # skipped l_c are absent, never interpolated
    html = (adaptive / "report.html").read_text()
    assert "Adaptive search" in html and "skipped" in html
    full_records = records(full)
    for name, r in records(adaptive).items():  # what the search trained is what the full sweep trained
        if r["status"] == "ok":
            assert {k: v for k, v in r.items() if k not in ("seconds", "finished", "rung")} == \
                {k: v for k, v in full_records[name].items() if k not in ("seconds", "finished", "rung")}


def test_an_adaptive_run_killed_anywhere_and_started_again_trains_nothing_twice_and_gives_the_same_advice(
        full_and_adaptive, tmp_path):
    config = write_config(tmp_path, {**FREEZE, "name": "adaptive", "search": "adaptive"})
    out = tmp_path / "run"
    command = [sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.time() + 120
    while len(list(out.glob("jobs/*.json"))) < 6 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    time.sleep(1.5)
    before = {p.name: p.read_bytes() for p in out.glob("jobs/*.json")}
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    after = {p.name: p.read_bytes() for p in out.glob("jobs/*.json")}
    assert all(after[name] == seen for name, seen in before.items())  # nothing trained twice
    assert advice_of(out) == advice_of(full_and_adaptive / "adaptive")
    assert_same_search(full_and_adaptive / "adaptive", out)


def assert_same_search(want, got) -> None:
    """Two adaptive runs of one config trained the same jobs with the same outcomes, but for seeds
    of the l_c that stopped a curve: whether a seed started before another seed had shown that l_c
    could not be shown safe depends on timing, and that seed's result changes nothing."""
    varying = ("seconds", "finished")
    expected, found = records(want), records(got)
    for name in expected.keys() & found.keys():
        assert {k: v for k, v in found[name].items() if k not in varying} == \
            {k: v for k, v in expected[name].items() if k not in varying}, name
    stops = {(a, s, t): k for a, s, t, _, k in advice_of(want)}
    for name in expected.keys() ^ found.keys():
        r = expected.get(name) or found[name]
        assert r["kind"] == "transfer" and r["frozen"] == stops[r["arch"], r["source"], r["target"]], name


def test_full_after_adaptive_trains_what_was_skipped_or_stopped(full_and_adaptive, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(full_and_adaptive / "adaptive", out)
    config = write_config(tmp_path, {**FREEZE, "name": "adaptive", "search": "full"})
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert advice_of(out) == advice_of(full_and_adaptive / "full")
    assert "search" not in json.loads((out / "observations.json").read_text())
    assert all(r["status"] == "ok" for r in records(out).values())


def test_search_is_checked_and_needs_a_baseline(tiny_raw, tmp_path):
    with pytest.raises(UserError, match=r"search must be one of full, adaptive; got 'fast'"):
        config_from_dict({**tiny_raw, "search": "fast"}, "x.toml")
    (tmp_path / "w.safetensors").write_bytes(b"")
    raw = {**tiny_raw, "tasks": ["printed-digits"], "search": "adaptive",
           "primary": {"arch": "alexnet-small", "checkpoint": str(tmp_path / "w.safetensors"), "baseline": False}}
    with pytest.raises(UserError, match="adaptive.*baseline"):
        config_from_dict(raw, "x.toml")


def test_an_adaptive_search_on_ray_trains_what_it_trains_in_worker_processes(full_and_adaptive, tmp_path):
    ray = pytest.importorskip("ray")
    from layerwise.executors import connect

    connect(ray, None, num_cpus=2, include_dashboard=False)
    try:
        config = write_config(tmp_path, {**FREEZE, "name": "adaptive", "search": "adaptive", "executor": "ray"})
        assert main(["run", str(config), "--out", str(tmp_path / "ray"), "--quiet"]) == 0
    finally:
        ray.shutdown()
    assert advice_of(tmp_path / "ray") == advice_of(full_and_adaptive / "adaptive")
    assert_same_search(full_and_adaptive / "adaptive", tmp_path / "ray")


def test_estimate_on_an_adaptive_run_trains_no_transfer_and_finishes(full_and_adaptive, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(full_and_adaptive / "adaptive", out)
    before = set(records(out))
    config = write_config(tmp_path, {**FREEZE, "name": "adaptive", "search": "adaptive"})
    done = subprocess.run([sys.executable, "-m", "layerwise", "estimate", str(config), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env=cli_env(), timeout=120)  # it spun for good before
    assert done.returncode == 0, done.stderr
    assert set(records(out)) == before and (out / "estimates.csv").exists()
