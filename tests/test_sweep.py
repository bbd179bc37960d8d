"""Planning, frozen-prefix caching and resuming."""

import dataclasses
import json

import pytest
import torch

from conftest import interrupt_fit_at
from layerwise import UserError
from layerwise.config import config_from_dict
import layerwise.runner as runner_module
from layerwise.plan import build, plan
from layerwise.prefix import PrefixCache
from layerwise.runner import Runner
from layerwise.sweep import Sweep


def test_each_primary_is_trained_once_and_is_the_baseline_of_transfers_into_its_task(tiny_raw):
    tiny_raw["tasks"] = ["digits", "printed-digits", "printed-letters"]
    tiny_raw["archs"] = ["alexnet-small", "vgg-small"]
    tiny_raw["seeds"] = [0, 1]
    tiny_raw["frozen"] = "all"
    jobs = plan(config_from_dict(tiny_raw))
    scratch = [j for j in jobs if j.kind == "scratch"]
    transfers = [j for j in jobs if j.kind == "transfer"]
    assert len(scratch) == 3 * 2 * 2
    assert len(transfers) == 6 * 2 * 2 * 7  # ordered pairs x archs x seeds x (L_H + 1)
    assert len({j.key for j in jobs}) == len(jobs)
    keys = {(j.arch, j.seed, j.target): j.key for j in scratch}
    assert all(t.primary == keys[t.arch, t.seed, t.source] for t in transfers)
    assert {(t.source, t.target) for t in transfers} == {(a, b) for a in tiny_raw["tasks"] for b in tiny_raw["tasks"] if a != b}
    first_transfer = jobs.index(transfers[0])
    assert all(j.kind == "scratch" for j in jobs[:first_transfer])


def test_job_keys_depend_on_what_determines_the_result_only(tiny_raw):
    base = {j.describe(): j.key for j in plan(config_from_dict(tiny_raw))}
    tiny_raw["train"]["device"] = "cpu"
    tiny_raw["train"]["cache_prefix"] = False
    assert {j.describe(): j.key for j in plan(config_from_dict(tiny_raw))} == base
    tiny_raw["train"]["lr"] = 0.01
    changed = {j.describe(): j.key for j in plan(config_from_dict(tiny_raw))}
    assert not set(changed.values()) & set(base.values())


def test_a_finetuning_learning_rate_changes_the_keys_of_transfers_only(tiny_raw):
    base = {j.describe(): j.key for j in plan(config_from_dict(tiny_raw))}
    tiny_raw["train"]["finetune_lr"] = 1e-4
    tuned = plan(config_from_dict(tiny_raw))
    for job in tuned:
        assert (job.key == base[job.describe()]) == (job.kind == "scratch"), job.describe()


def test_a_finetuning_learning_rate_reaches_the_optimizer_of_transfers_and_not_of_scratch_jobs(tiny_raw, tmp_path, monkeypatch):
    import layerwise.train as train_module

    tiny_raw["train"].update(epochs=1, lr=0.003, finetune_lr=0.0002)
    lrs, real = [], train_module.make_optimizer

    def recording(params, cfg):
        optimizer = real(params, cfg)
        lrs.append(optimizer.param_groups[0]["lr"])
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", recording)
    sweep = Sweep(config_from_dict(tiny_raw), tmp_path / "run", progress=False)
    ran = sweep.run()
    assert len(lrs) == len(ran) == len(sweep.jobs)
    assert [(job.kind, lr) for job, lr in zip(ran, lrs)] == [
        (job.kind, 0.003 if job.kind == "scratch" else 0.0002) for job in ran]


def test_the_local_executor_trains_with_the_threads_it_is_given_and_gives_them_back(tiny_raw, tmp_path, monkeypatch):
    threads, real = [], runner_module.fit
    monkeypatch.setattr(runner_module, "fit", lambda *a, **k: threads.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    Sweep(config_from_dict({**tiny_raw, "threads": 3}), tmp_path / "run", progress=False).run()
    assert set(threads) == {3} and torch.get_num_threads() == before


@pytest.mark.parametrize("cores, load, own, free", [
    (4, 0.4, 0, 4), (4, 2.6, 0, 1), (4, 9.0, 0, 1), (2, 1.2, 0, 1), (16, 3.4, 0, 13),
    (2, 2.0, 2, 2),  # alone, its own two threads are the whole load
    (2, 3.1, 1, 1),  # beside a process busy on two threads, it keeps to one
])
def test_auto_threads_are_the_cores_that_others_leave_free(monkeypatch, cores, load, own, free):
    from layerwise import executors

    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert executors.free_cores(own) == free


def test_default_threads_are_every_usable_core_whatever_the_load_so_reruns_give_the_same_numbers(monkeypatch, tiny_raw):
    from layerwise import executors

    assert config_from_dict(tiny_raw).threads == "cores"
    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    for load in (0.0, 2.7, 9.0):
        monkeypatch.setattr(executors.os, "getloadavg", lambda: (load, 0.0, 0.0))
        assert executors.unit_threads("cores", own=0) == 3 and executors.unit_threads(5, own=0) == 5
    assert executors.unit_threads("auto", own=0) == 1  # the load of 9 leaves one


def test_pairs_with_incompatible_shapes_are_skipped_unless_asked_for(tiny_raw):
    tiny_raw["task_options"]["digits"] = {"size": 8}
    jobs = plan(config_from_dict(tiny_raw))
    assert [j.kind for j in jobs] == ["scratch", "scratch"]
    tiny_raw["pairs"] = [["digits", "printed-digits"]]
    with pytest.raises(UserError, match=r"incompatible input shapes.*\(1, 8, 8\).*\(1, 16, 16\)"):
        plan(config_from_dict(tiny_raw))


def test_the_prefix_cache_matches_the_plain_computation_layer_by_layer(tiny):
    runner = Runner(tiny, "/nonexistent")
    torch.manual_seed(0)
    net = build(tiny, "alexnet-small", tiny.task("digits")).eval()
    data = runner.data("printed-digits", 0)
    cache = PrefixCache(net, data, tiny.train)
    for level in (1, 2, 4, 6, 3):
        got = cache.at(level)
        with torch.no_grad():
            want = net.features(data.test.x, upto=level)
        torch.testing.assert_close(got.test.x, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.test.y, data.test.y)


def test_under_amp_the_prefix_cache_keeps_and_counts_the_autocast_dtype(tiny):
    tiny.train = dataclasses.replace(tiny.train, amp=True, device="cpu")
    runner = Runner(tiny, "/nonexistent")
    net = build(tiny, "alexnet-small", tiny.task("digits"))
    data = runner.data("printed-digits", 0)
    cache = PrefixCache(net, data, tiny.train)
    got = cache.at(2)
    assert got.train.x.dtype == torch.bfloat16  # what the suffix receives without the cache too
    examples = len(data.train) + len(data.val) + len(data.test)
    assert cache.bytes_at(2) == got.train.x[0].numel() * 2 * examples


def test_a_prefix_too_large_for_the_memory_limit_is_not_cached(tiny):
    tiny.train = dataclasses.replace(tiny.train, cache_limit_gb=1e-6)
    runner = Runner(tiny, "/nonexistent")
    net = build(tiny, "alexnet-small", tiny.task("digits"))
    assert PrefixCache(net, runner.data("digits", 0), tiny.train).at(1) is None


def run_all(cfg, out):
    sweep = Sweep(cfg, out, progress=False)
    sweep.run()
    return {j.describe(): sweep.store.record(j.key) for j in sweep.jobs}


SMALL_DENSENET = {"growth": 4, "convs": 2, "stem": 8}


@pytest.mark.parametrize("arch, amp", [("alexnet-small", False), ("densenet6", True)])
def test_cached_and_uncached_transfers_give_the_same_result(tiny_raw, tmp_path, arch, amp):
    # With amp the prefix runs in bfloat16 on the CPU; the cache must hand the suffix the same
    # bfloat16 outputs the uncached run computes, not an upcast copy.
    tiny_raw["archs"] = [arch]
    tiny_raw["arch_options"]["densenet6"] = SMALL_DENSENET
    tiny_raw["train"].update(amp=amp, device="cpu")
    tiny = config_from_dict(tiny_raw)
    cached = run_all(tiny, tmp_path / "cached")
    tiny.train = dataclasses.replace(tiny.train, cache_prefix=False)
    plain = run_all(tiny, tmp_path / "plain")
    assert any(r["cached_prefix"] for r in cached.values())
    assert not any(r["cached_prefix"] for r in plain.values())
    for name, record in cached.items():
        assert record["best_epoch"] == plain[name]["best_epoch"], name
        for split in ("val", "test"):
            assert record[split] == pytest.approx(plain[name][split], abs=1e-6), name
        losses = [h["train_loss"] for h in record["history"]]
        assert losses == pytest.approx([h["train_loss"] for h in plain[name]["history"]], rel=1e-4), name


def test_a_rerun_resumes_and_runs_only_what_is_missing(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = run_all(tiny, out)
    jobs = Sweep(tiny, out, progress=False).jobs
    removed = [jobs[1], jobs[-1]]
    for job in removed:
        (out / "jobs" / f"{job.key}.json").unlink()
    ran = []
    real = Runner.run_job
    monkeypatch.setattr(Runner, "run_job", lambda self, job, on_epoch=None: ran.append(job) or real(self, job, on_epoch))
    again = run_all(tiny, out)
    assert ran == removed
    # a job is pure: running it again gives the same record
    for job in removed:
        a, b = first[job.describe()], again[job.describe()]
        assert (a["val"], a["test"], a["history"]) == (b["val"], b["test"], b["history"])
    ran.clear()
    run_all(tiny, out)
    assert ran == []


def test_a_sweep_stopped_halfway_keeps_what_finished(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = interrupt_fit_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        Sweep(tiny, out, progress=False).run()
    records = list((out / "jobs").glob("*.json"))
    assert len(records) == 3 and all(json.loads(p.read_text())["test"] for p in records)
    assert not list(out.rglob("*.tmp*"))
    monkeypatch.setattr(runner_module, "fit", real)
    sweep = Sweep(tiny, out, progress=False)
    assert len(sweep.pending()) == len(sweep.jobs) - 3
    sweep.run()
    assert sweep.pending() == []


def test_a_second_process_on_a_running_sweep_refuses_at_once_and_the_first_loses_nothing(tmp_path, tiny_raw):
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env
    from test_cli import write_config

    tiny_raw["frozen"] = "all"
    config = write_config(tmp_path, tiny_raw)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        deadline = time.time() + 120
        while not list(out.glob("jobs/*.json")) and time.time() < deadline and first.poll() is None:
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # mid-sweep, holding the run directory
        second = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=120)
        records = {p.name: p.read_bytes() for p in out.glob("jobs/*.json")}
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert str(out) in line and "--executor ray" in line
    assert 0 < len(records) < 16
    assert first.returncode == 0 and "ran 16 jobs" in err, err
    assert len(list(out.glob("jobs/*.json"))) == 16
    assert all((out / "jobs" / name).read_bytes() == data for name, data in records.items())


def test_a_unit_resumed_at_a_deep_l_c_trains_the_same_bits_as_one_never_stopped(tiny_raw, tmp_path, monkeypatch):
    """With the prefix cache and channels-last on (the CPU's defaults): a resumed unit's cache
    jumps from the inputs straight to its first unfinished l_c (4 here), where the unit never
    stopped got there one level at a time; the transfers' weights must still be the same bits."""
    from safetensors.torch import load_file

    from conftest import assert_same_runs

    tiny_raw.update(frozen="all", checkpoints="all", threads=1)
    cfg = config_from_dict(tiny_raw)
    assert cfg.train.cache_prefix and cfg.train.channels_last is None  # on for the CPU
    Sweep(cfg, tmp_path / "whole", progress=False).run()
    real = interrupt_fit_at(monkeypatch, 2 + 4 + 1)  # two primaries, l_c = 0..3 of the first unit, then l_c = 4
    with pytest.raises(KeyboardInterrupt):
        Sweep(cfg, tmp_path / "resumed", progress=False).run()
    monkeypatch.setattr(runner_module, "fit", real)
    assert len(list((tmp_path / "resumed" / "jobs").glob("*.json"))) == 6
    ran = Sweep(cfg, tmp_path / "resumed", progress=False).run()
    assert ran[0].kind == "transfer" and ran[0].frozen == 4
    assert_same_runs(tmp_path / "whole", tmp_path / "resumed", 16)
    for path in (tmp_path / "whole" / "checkpoints").glob("*.safetensors"):
        want, got = load_file(path), load_file(tmp_path / "resumed" / "checkpoints" / path.name)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), path.name


def test_finetuning_epochs_change_the_keys_of_transfers_only_and_train_them_that_long(tiny_raw, tmp_path):
    base = {j.describe(): j.key for j in plan(config_from_dict(tiny_raw))}
    tiny_raw["train"].update(epochs=2, finetune_epochs=1)
    cfg = config_from_dict(tiny_raw)
    for job in plan(cfg):
        assert (job.key == base[job.describe()]) == (job.kind == "scratch"), job.describe()
    ran = Sweep(cfg, tmp_path / "run", progress=False)
    ran.run()
    lengths = {r["kind"]: len(r["history"]) for r in ran.store.records(j.key for j in ran.jobs)}
    assert lengths == {"scratch": 2, "transfer": 1}


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_finetuning_epochs_that_cannot_train_are_refused(tiny_raw, value):
    tiny_raw["train"]["finetune_epochs"] = value
    with pytest.raises(UserError, match=r"finetune_epochs must be (a whole number at least 1|an integer)"):
        config_from_dict(tiny_raw)
