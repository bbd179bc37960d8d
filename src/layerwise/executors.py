"""Executors: how the units of a sweep get run.

A unit is a primary alone, or every `l_c` of one (primary, secondary), which share a prefix cache
(plan.units). "local" runs the units one after another in this process. "ray" makes each unit a
task on a Ray cluster with the CPUs and GPUs it declares; a transfer unit takes its primary's
task as an argument, so Ray starts it only once the primary is recorded, and a unit whose worker
died is started again by Ray.

Either way the run directory is the durable state: a unit writes each job's record itself as the
job finishes, so whatever stops the driver or a worker, the next run does only what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .errors import UserError
from .plan import Job

# Test hook: a file path. The first Ray unit with several jobs to run that finds no file there
# writes its first finished job's key into it and kills its own worker, as a crash would.
CRASH_ONCE = "LAYERWISE_TEST_CRASH_ONCE"


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity: what a batch system gave it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores(own: int = 0) -> int:
    """The cores this process may use that others leave free: `usable_cores` less the one-minute
    load average, less the `own` threads this process itself kept busy lately; at least 1.
    Threads beyond that wait on each other at every barrier, which makes small networks several
    times slower on a busy machine."""
    return max(1, usable_cores() - round(max(0.0, os.getloadavg()[0] - own)))


def unit_threads(setting, own: int) -> int:
    """The torch threads of the next unit for the config's `threads`. "cores" (the default) is
    the same count on every run of a machine: a thread count changes results by rounding (6 of
    16 demo jobs differed between 1 and 2 threads), and the load average "auto" follows lags a
    minute behind, so right after another job it halves the threads of an idle 2-core machine."""
    if setting == "cores":
        return usable_cores()
    return free_cores(own) if setting == "auto" else setting


@contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to `count` while the block runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_local(sweep, finished: Dict[str, dict], bar) -> None:
    """Every unit not recorded yet, one after another in this process, in plan order (which puts
    each primary before its transfers). With threads = "auto" each unit gets the cores free as
    it starts, so a long sweep follows other programs as they come and go."""
    show_epoch = lambda epoch, val: bar.set_postfix(epoch=f"{epoch}/{sweep.cfg.train.epochs}", refresh=False)  # noqa: E731

    starting = lambda job: bar.set_description(job.describe(), refresh=False)  # noqa: E731
    done = lambda job, record: sweep.finish(finished, job, record, bar)  # noqa: E731
    threads = 0  # none of the load is this process's yet
    with torch_threads(torch.get_num_threads()):  # given back as they were
        while todo := sweep.todo(finished):
            threads = unit_threads(sweep.cfg.threads, threads)
            torch.set_num_threads(threads)
            sweep.run_unit(todo[0], starting, done, show_epoch)
            sweep.sync(finished, bar)  # a primary whose checkpoint was damaged is not finished any more


# Ray ------------------------------------------------------------------------------------
def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("executor = \"ray\" needs Ray, which is not installed: pip install 'layerwise[ray]'") from None
    return ray


def run_ray(sweep, finished: Dict[str, dict], bar) -> None:
    """Every unit not recorded yet as a task on a Ray cluster. Rounds: all such units are
    submitted at once; when a primary's checkpoint turned out damaged, the next round trains it
    again, with the transfers that need it."""
    ray = import_ray()
    started = connect(ray, sweep.cfg.ray.address)
    try:
        while todo := sweep.todo(finished):
            wait(ray, sweep, submit(ray, sweep, todo, finished), finished, bar)
    finally:
        if started:
            ray.shutdown()


def connect(ray, address: Optional[str], **options) -> bool:
    """Join the cluster at `address` (None: Ray's default, which starts a local one when none
    runs here; `options` go to ray.init); return whether this call connected, and so should
    disconnect. The workers get this process's layerwise package, so they run the code that
    planned the jobs."""
    if ray.is_initialized():  # a cluster joined by the caller (a notebook, a test)
        return False
    env = {"LAYERWISE_DATA": os.environ["LAYERWISE_DATA"]} if "LAYERWISE_DATA" in os.environ else {}
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [str(Path(__file__).parent)], "env_vars": env}, **options)
    except ConnectionError as err:
        raise UserError(f"cannot reach the Ray cluster at ray.address = {address!r}: {err}; start it "
                        "(`ray start --head`), or leave the address out to start a local one") from None
    signal.signal(signal.SIGTERM, on_term)  # ray.init takes SIGTERM over; a batch system's stop stays Ctrl-C
    return True


def submit(ray, sweep, todo: List[List[Job]], finished: Dict[str, dict]) -> list:
    """One task per unit, with the resources the config declares. A transfer unit whose primary
    is not recorded gets the primary's task as an argument: Ray runs it after that task."""
    settings = sweep.cfg.ray
    task = ray.remote(num_cpus=settings.cpus, num_gpus=settings.gpus, max_retries=settings.max_retries)(run_unit)
    cfg = ray.put(worker_config(sweep.cfg))
    out, crash = str(sweep.store.root), os.environ.get(CRASH_ONCE)
    refs, primaries = [], {}
    for unit in todo:  # in plan order: a primary's task exists before its transfers'
        job = unit[0]
        after = [primaries[job.primary]] if job.kind == "transfer" and job.primary not in finished else []
        refs.append(task.options(name=job.describe()).remote(cfg, out, unit, crash, *after))
        if job.primary is None:  # a primary, trained or given
            primaries[job.key] = refs[-1]
    return refs


def wait(ray, sweep, refs: list, finished: Dict[str, dict], bar) -> None:
    """Follow the tasks until all have ended, moving the progress bar as records appear in the
    run directory. A unit's UserError is raised as is (one line); an interruption or an error
    cancels the tasks still running (their finished jobs are kept)."""
    pending = refs
    try:
        while pending:
            bar.set_description(f"{len(pending)} units on Ray", refresh=False)
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                outcome(ray, sweep, ref)
            sweep.sync(finished, bar)
        bar.set_description("on Ray", refresh=False)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def outcome(ray, sweep, ref) -> None:
    """Raise what went wrong in a unit's task: the unit's own UserError, or a UserError saying
    that its worker kept dying."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):
            raise err.cause from None
        raise
    except ray.exceptions.RayError as err:  # the worker or its node died more than ray.max_retries times
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"a Ray worker died running a unit of {sweep.store.root}, {sweep.cfg.ray.max_retries + 1} "
                        f"times ({first}); finished jobs are kept: run the same command again, or raise "
                        "ray.max_retries") from None


def worker_config(cfg):
    """The config as a worker runs it: train.device "auto" is a GPU only for units that asked
    Ray for one (Ray shows each unit its own), so units without one leave the GPUs alone."""
    if cfg.train.device != "auto":
        return cfg
    device = "cuda" if cfg.ray.gpus > 0 else "cpu"
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))


def run_unit(cfg, out: str, unit: List[Job], crash: Optional[str], *after) -> List[str]:
    """A unit in a Ray worker, with as many torch threads as the CPUs it asked for; returns the
    keys of the jobs it ran. `after` is its primary's outcome, there only so that Ray runs this
    task once the primary's has ended."""
    torch.set_num_threads(max(1, int(cfg.ray.cpus)))
    done = crash_once(crash) if crash and len(unit) > 1 else None
    return [record["key"] for record in worker_sweep(cfg, out).run_unit(unit, on_done=done)]


_worker: Dict[tuple, object] = {}  # this worker's Sweep, kept between units: the data it loaded stays loaded


def worker_sweep(cfg, out: str):
    from .sweep import Sweep

    key = (out, repr(cfg.to_dict()))
    if key not in _worker:
        _worker.clear()
        _worker[key] = Sweep(cfg, Path(out), progress=False, jobs=[])
    return _worker[key]


def crash_once(marker: str):
    """The test hook of CRASH_ONCE: after a unit's first job, die unless `marker` says a unit did."""
    def done(job: Job, record: dict) -> None:
        if not os.path.exists(marker):
            Path(marker).write_text(job.key)
            os._exit(1)
    return done



def executor(name: str):
    """The function that runs a sweep's units for the config's `executor`. Asking for Ray where
    it is not installed fails here, before the first job."""
    if name == "ray":
        import_ray()
        return run_ray
    return run_local
