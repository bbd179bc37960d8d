"""The local executor's worker processes: the records of one process, each job once, a worker
that dies or a driver that is stopped or killed costs only what was running, and how many
workers and threads "auto" and "cores" give."""

import signal
from pathlib import Path
import subprocess
import sys
import time

import pytest
import torch

from conftest import assert_same_runs, cli_env, records
from layerwise import executors
from layerwise.cli import main
from layerwise.config import config_from_dict
from layerwise.executors import CRASH_ONCE
from layerwise.plan import units
from layerwise.sweep import Sweep
from test_cli import write_config

def stamps(out):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "jobs").glob("*.json")}


def test_two_workers_give_the_records_of_one_process_with_their_threads(tiny_raw, tmp_path):
    Sweep(config_from_dict({**tiny_raw, "threads": 1}), tmp_path / "one", progress=False).run()
    sweep = Sweep(config_from_dict({**tiny_raw, "workers": 2, "threads": 1}), tmp_path / "two", progress=False)
    assert sweep.run() == sweep.jobs
    assert_same_runs(tmp_path / "one", tmp_path / "two", len(sweep.jobs))
    assert {record["threads"] for record in records(tmp_path / "two").values()} == {1}


def test_a_worker_that_dies_stops_the_run_in_one_line_and_the_next_run_does_only_the_rest(tiny_raw, tmp_path, monkeypatch,
                                                                                         capsys):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE, str(marker))  # the first unit of several jobs kills its worker after one
    config, out = write_config(tmp_path, {**tiny_raw, "workers": 2}), tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("layerwise: error:")]
    assert len(lines) == 1 and "a worker process died running" in lines[0] and "run the same command again" in lines[0]
    assert "Traceback" not in err
    first = marker.read_text()  # the job recorded just before its worker died
    before = stamps(out)
    assert f"{first}.json" in before and len(before) < 8

    monkeypatch.delenv(CRASH_ONCE)
    sweep = Sweep(config_from_dict({**tiny_raw, "workers": 2}), out, progress=False)
    ran = sweep.run()
    after = stamps(out)
    assert len(after) == len(sweep.jobs) and all(after[name] == seen for name, seen in before.items())
    assert not {f"{job.key}.json" for job in ran} & set(before)
    unit = next(u for u in units(sweep.jobs) if u[0].key == first)
    assert {job.key for job in unit[1:]} <= {job.key for job in ran}  # the rest of the unit ran in the second run


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_driver_stopped_or_killed_takes_its_workers_with_it_and_a_rerun_repeats_nothing(tiny_raw, tmp_path, stop):
    tiny_raw.update(frozen="all", workers=2)
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    command = [sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.time() + 120
    while len(list(out.glob("jobs/*.json"))) < 3 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(stop)
    _, err = driver.communicate(timeout=60)
    if stop == signal.SIGTERM:
        assert driver.returncode == 130 and "Traceback" not in err, err
    time.sleep(1.5)  # a worker whose driver was killed notices within a second
    before = stamps(out)
    assert 3 <= len(before) < 16
    time.sleep(1.0)
    assert stamps(out) == before  # no worker is left writing

    sweep = Sweep(config_from_dict({**tiny_raw, "workers": 2}), out, progress=False)
    ran = sweep.run()
    after = stamps(out)
    assert len(after) == 16 and all(after[name] == seen for name, seen in before.items())
    assert 0 < len(ran) <= 16 - len(before) and not {f"{job.key}.json" for job in ran} & set(before)


@pytest.mark.parametrize("cores, device, custom, workers", [
    (2, "cpu", False, 2),
    (64, "cpu", False, executors.AUTO_WORKERS),  # each worker holds its own copy of the data
    (1, "cpu", False, 1),
    (4, "cuda", False, 1),  # a GPU is one worker's
    (4, "cpu", True, 1),  # Python objects from run_experiment stay in this process
])
def test_auto_workers_are_one_per_core_on_the_cpu(monkeypatch, tiny, cores, device, custom, workers):
    monkeypatch.setattr(executors, "usable_cores", lambda: cores)
    tiny.workers = "auto"
    if custom:
        tiny.custom_archs = {"mine": object()}
    assert executors.local_workers(tiny, torch.device(device)) == workers
    tiny.workers = 3
    assert executors.local_workers(tiny, torch.device(device)) == 3


def test_each_worker_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(executors, "usable_cores", lambda: 8)
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (4.0, 0.0, 0.0))
    assert [executors.unit_threads("cores", 0, w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert executors.unit_threads("auto", 0, 2) == 2  # 4 of 8 cores busy elsewhere
    assert executors.unit_threads(3, 0, 2) == 3


@pytest.mark.parametrize("value", ["many", 0, -1, 1.5, True])
def test_workers_must_be_auto_or_a_positive_integer(tiny_raw, value):
    with pytest.raises(Exception, match="workers must be \"auto\" or a positive integer"):
        config_from_dict({**tiny_raw, "workers": value}, "tiny.toml")


def test_a_given_primary_built_by_a_callable_trains_its_seeds_at_once_in_workers_as_in_one_process(tiny_raw, tmp_path):
    from torchvision_like import resnet18_like

    torch.save(resnet18_like().state_dict(), tmp_path / "resnet.pt")
    raw = {**tiny_raw, "tasks": ["printed-digits"], "frozen": [0, 3], "seeds": [0, 1], "threads": 1,
           "train": {"epochs": 1, "batch_size": 64},
           "primary": {"arch": "torchvision_like:resnet18_like", "checkpoint": str(tmp_path / "resnet.pt")}}
    del raw["arch_options"], raw["archs"]
    Sweep(config_from_dict(raw, "given.toml"), tmp_path / "one", progress=False).run()
    sweep = Sweep(config_from_dict({**raw, "workers": 2}, "given.toml"), tmp_path / "two", progress=False)
    assert executors.local_workers(sweep.cfg, sweep.device) == 2  # the builder travels to the workers
    assert [len(unit) for unit in units(sweep.jobs) if unit[0].kind == "transfer"] == [2, 2]  # a unit per seed
    sweep.run()
    assert_same_runs(tmp_path / "one", tmp_path / "two", 1 + 2 + 4)  # the primary, 2 baselines, 2 x 2 transfers


def test_a_warning_met_in_several_workers_is_printed_once(tiny_raw, tmp_path):
    tiny_raw["train"].update(batch_size=100_000, epochs=1)  # every task's train split is under one batch
    config, out = write_config(tmp_path, {**tiny_raw, "workers": 2, "seeds": [0, 1]}), tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet"],
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for task in ("digits", "printed-digits"):  # each met by both workers, and by each seed
        assert done.stderr.count(f"task {task!r}: the train split has") == 1, done.stderr


@pytest.mark.parametrize("command", ["run", "estimate"])
def test_a_job_whose_memory_allocation_fails_is_one_line_naming_it_and_a_rerun_finishes(tiny_raw, tmp_path, monkeypatch,
                                                                                       capsys, command):
    """A real allocation failure of torch's CPU allocator (asked for a petabyte) in the third job,
    or in the first curve's estimates: one line naming it, exit 2, the jobs before it kept."""
    import layerwise.estimate as estimate_module
    import layerwise.runner as runner_module

    where = runner_module if command == "run" else estimate_module
    name = "fit" if command == "run" else "curve_rows"
    real, calls = getattr(where, name), []

    def greedy(*args, **kwargs):
        calls.append(1)
        if len(calls) == (3 if command == "run" else 1):
            torch.empty(2**50, dtype=torch.uint8)
        return real(*args, **kwargs)

    monkeypatch.setattr(where, name, greedy)
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    assert main([command, str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("layerwise: error:")]
    assert len(lines) == 1 and "ran out of memory (can't allocate memory" in lines[0] and "Traceback" not in err, err
    if command == "run":
        job = next(j for j in Sweep(config_from_dict(tiny_raw), out, progress=False).jobs
                   if not (out / "jobs" / f"{j.key}.json").exists())
        assert f"{job.describe()} (job {job.key}) ran out of memory" in lines[0]
        assert len(stamps(out)) == 2  # the two jobs before it
    else:
        assert "the estimates of alexnet-small" in lines[0] and len(stamps(out)) == 2  # the primaries
    before = stamps(out)
    monkeypatch.setattr(where, name, real)
    assert main([command, str(config), "--out", str(out), "--quiet"]) == 0
    after = stamps(out)
    assert all(after[name] == seen for name, seen in before.items())
    if command == "run":
        assert len(after) == 8


def children(pid: int) -> list:
    """The processes whose parent is `pid` (from /proc: Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended, though nobody may ever reap it in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_whose_driver_is_killed_while_they_start_exit_quietly_without_training(tiny_raw, tmp_path):
    """kill -9 of the driver as soon as its workers exist, while they still import torch: they
    must not run the units it had already sent them, write no record and print no traceback."""
    config, out = write_config(tmp_path, {**tiny_raw, "workers": 2}), tmp_path / "run"
    command = [sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline, workers = time.time() + 120, []
    while len(workers) < 2 and time.time() < deadline and driver.poll() is None:
        workers = children(driver.pid)
        time.sleep(0.01)
    driver.kill()
    assert len(workers) == 2 and not list(out.glob("jobs/*.json"))
    err = driver.stderr.read()  # to its end: every worker holds this pipe until it exits
    driver.wait()
    deadline = time.time() + 10
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    assert "Traceback" not in err and "Error" not in err and "Warning" not in err, err
    time.sleep(1.0)
    assert not list(out.glob("jobs/*.json"))  # nothing trained after the driver died
