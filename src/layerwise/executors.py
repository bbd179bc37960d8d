"""Executors: how the units of a sweep get run.

A unit is a primary alone, or every `l_c` of one (primary, secondary), which share a prefix cache
(plan.units). "local" runs the units on this machine: in `workers` processes at once (worker.py),
each with its share of the cores as torch threads, or with one worker in this process. "ray"
makes each unit a task on a Ray cluster with the CPUs and GPUs it declares; a transfer unit takes
its primary's task as an argument, so Ray starts it only once the primary is recorded, and a unit
whose worker died is started again by Ray.

Either way the run directory is the durable state: a unit writes each job's record itself as the
job finishes, so whatever stops the driver or a worker, the next run does only what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .errors import UserError, warn
from .given import CallableBuilder
from .plan import Job
from .runner import worker_runner
from .tasks.files import FileTask

# Test hook: a file path. The first unit with several jobs to run (in a Ray worker or a local
# worker process) that finds no file there writes its first finished job's key into it and kills
# its own worker, as a crash would.
CRASH_ONCE = "LAYERWISE_TEST_CRASH_ONCE"
AUTO_WORKERS = 8  # the most processes workers = "auto" starts: each holds its own copy of the data
DRIVER = "LAYERWISE_WORKER_DRIVER"  # a local worker's environment: its driver's process id (worker.py)
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # read by numpy's BLAS as it loads


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity: what a batch system gave it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores(own: int = 0) -> int:
    """The cores this process may use that others leave free: `usable_cores` less the one-minute
    load average, less the `own` threads this process itself kept busy lately; at least 1.
    Threads beyond that wait on each other at every barrier, which makes small networks several
    times slower on a busy machine."""
    return max(1, usable_cores() - round(max(0.0, os.getloadavg()[0] - own)))


def unit_threads(setting, own: int, workers: int = 1) -> int:
    """The torch threads of the next unit for the config's `threads`, in each of `workers`
    processes. "cores" (the default) is the same count on every run of a machine: a thread count
    changes results by rounding (6 of 16 demo jobs differed between 1 and 2 threads), and the load
    average "auto" follows lags a minute behind, so right after another job it halves the threads
    of an idle 2-core machine."""
    if setting == "cores":
        return max(1, usable_cores() // workers)
    return max(1, free_cores(own) // workers) if setting == "auto" else setting


def local_workers(cfg, device: torch.device) -> int:
    """How many processes the local executor runs units in at once. "auto": on the CPU one per
    usable core (at most AUTO_WORKERS), as small networks use one thread each far better than a
    share of several (two 1-thread processes had 1.4x the throughput of one 2-thread process on
    the demo's convolutions, 2-core Xeon); on a GPU one, which has it to itself; and one for a
    config that cannot travel to another process."""
    if cfg.workers != "auto":
        return cfg.workers
    if device.type != "cpu" or not travels(cfg):
        return 1
    return min(usable_cores(), AUTO_WORKERS)


def travels(cfg) -> bool:
    """Whether worker processes can be sent the config: its tasks and architectures are registered
    names or made by the config itself (files, a given primary). Objects handed to
    run_experiment stay in its process: a lambda does not pickle, and tensors would be copied to
    every worker at every unit."""
    return (all(isinstance(task, FileTask) for task in cfg.custom_tasks.values())
            and all(isinstance(build, CallableBuilder) for build in cfg.custom_archs.values()))


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
    """Every unit not recorded yet, on this machine: in worker processes (run_workers), or with
    one worker one after another in this process, in plan order (which puts each primary before
    its transfers). There, with threads = "auto", each unit gets the cores free as it starts, so
    a long sweep follows other programs as they come and go."""
    workers = local_workers(sweep.cfg, sweep.device)
    if workers > 1:
        return run_workers(sweep, finished, bar, workers)
    show_epoch = lambda epoch, val: bar.set_postfix(epoch=f"{epoch}/{sweep.cfg.train.epochs}", refresh=False)  # noqa: E731

    starting = lambda job: bar.set_description(job.describe(), refresh=False)  # noqa: E731
    done = lambda job, record: sweep.finish(finished, job, record, bar)  # noqa: E731
    threads = 0  # none of the load is this process's yet
    with torch_threads(torch.get_num_threads()):  # given back as they were
        while todo := sweep.todo(finished):
            threads = unit_threads(sweep.cfg.threads, threads)
            torch.set_num_threads(threads)
            sweep.runner.run_unit(todo[0], starting, done, show_epoch)
            sweep.sync(finished, bar)  # a primary whose checkpoint was damaged is not finished any more


def run_workers(sweep, finished: Dict[str, dict], bar, workers: int) -> None:
    """Every unit not recorded yet, up to `workers` at once, each in a worker process with the
    same torch threads (so a job gives the same numbers whichever worker runs it), in plan order;
    a transfer unit starts once its primary is recorded. The bar moves as records appear."""
    def ready(unit: List[Job]) -> bool:
        return unit[0].kind != "transfer" or unit[0].primary in finished

    def follow(running: int) -> None:
        bar.set_description(f"{running} of {workers} workers busy", refresh=False)
        sweep.sync(finished, bar)  # a primary whose checkpoint was damaged is not finished any more

    map_units(sweep.cfg, sweep.store.root, run_unit, lambda: sweep.todo(finished), workers, ready=ready,
              follow=follow, extra=(os.environ.get(CRASH_ONCE),))


def map_units(cfg, out: Path, function, todo: Callable[[], List[List[Job]]], workers: int,
              ready: Callable[[List[Job]], bool] = lambda unit: True, done=None, follow=None, extra: tuple = ()):
    """The one loop that spreads units over worker processes: `function(cfg, out, unit, threads,
    *extra)` for every unit `todo()` lists, up to `workers` at once, each worker with the same
    torch threads (with workers = 1, one after another in this process, with those threads too).
    `todo()` is asked again whenever a unit ends, so units may come and go as records appear; a
    unit starts once `ready(unit)`. `done(unit, value)` gets what each returned; `follow(running)`
    is told how many run, at least once a second."""
    threads = unit_threads(cfg.threads, 0, workers)
    running: Dict[futures.Future, List[Job]] = {}
    with (WorkerPool(workers, threads) if workers > 1 else InProcess()) as pool:
        while True:
            waiting, busy = todo(), {unit[0].key for unit in running.values()}
            for unit in waiting:
                if len(running) < workers and ready(unit) and unit[0].key not in busy:
                    running[pool.submit(function, cfg, str(out), unit, threads, *extra)] = unit
            if not running:
                if waiting:  # a transfer without its primary in the plan: cannot happen, but must not spin
                    raise RuntimeError(f"no unit can start; the first waits for {waiting[0][0].primary}")
                return
            ended, _ = futures.wait(running, timeout=1.0, return_when=futures.FIRST_COMPLETED)
            for future in ended:
                unit = running.pop(future)
                value = future.result()  # a unit's error, raised here
                if done:
                    done(unit, value)
            if follow:
                follow(len(running))


class InProcess:
    """A WorkerPool of one that is this process: each call runs as it is submitted."""

    def __enter__(self):
        return self

    def __exit__(self, *error):
        return None

    def submit(self, function, *args) -> futures.Future:
        future: futures.Future = futures.Future()
        try:
            with torch_threads(torch.get_num_threads()):  # the function sets its own; this process's come back
                future.set_result(function(*args))
        except Exception as err:
            future.set_exception(err)
        return future


class WorkerPool:
    """Up to `size` worker processes (`python -m layerwise.worker`), each driven by one thread
    of a thread pool, which sends it a call (a module-level function of layerwise and its
    arguments, a unit of work among them) on its stdin and reads the outcome from its stdout.
    Leaving the block normally lets the workers end; leaving it by an error or an interruption
    kills them (a job's record and checkpoint are written whole or not at all)."""

    def __init__(self, size: int, threads: int):
        """`threads`: each worker's, for torch (set by the function it runs) and for the BLAS
        under numpy (set here, at its start): numpy's OpenBLAS threads spin while they wait, and
        two workers with a 2-thread BLAS each on 2 cores ran the estimates 15x slower."""
        self.drivers = futures.ThreadPoolExecutor(size, thread_name_prefix="layerwise-worker")
        self.local, self.processes = threading.local(), []
        self.env = {**os.environ, **{name: str(threads) for name in BLAS_THREADS}}

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        for process in self.processes:
            process.stdin.close() if kind is None else process.kill()
        for process in self.processes:
            process.wait()
        self.drivers.shutdown(cancel_futures=True)

    def submit(self, function, cfg, out: str, unit: List[Job], *args) -> futures.Future:
        """`function(cfg, out, unit, *args)` in a worker; its future has what it returns."""
        return self.drivers.submit(self._run, (function, (cfg, out, unit, *args)), unit[0].describe())

    def _process(self) -> subprocess.Popen:
        """This thread's worker, started on first use with this process's layerwise and path."""
        if getattr(self.local, "process", None) is None:
            path = os.pathsep.join([str(Path(__file__).resolve().parent.parent), *filter(None, sys.path)])
            self.local.process = subprocess.Popen([sys.executable, "-m", "layerwise.worker"], stdin=subprocess.PIPE,
                                                  stdout=subprocess.PIPE,
                                                  env={**self.env, "PYTHONPATH": path, DRIVER: str(os.getpid())})
            self.processes.append(self.local.process)
        return self.local.process

    def _run(self, request: tuple, name: str):
        process = self._process()
        try:
            pickle.dump(request, process.stdin)
            process.stdin.flush()
            status, value, said = pickle.load(process.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            code = process.wait()
            raise UserError(f"a worker process died running {name} (exit status {code}); finished jobs are kept: "
                            "run the same command again") from None
        for message in said:  # each once, however many workers met it
            warn(message)
        if status == "ok":
            return value
        raise value


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
    reaper = start_reaper(ray) if started else None
    try:
        while todo := sweep.todo(finished):
            wait(ray, sweep, submit(ray, sweep, todo, finished), finished, bar)
    finally:
        if started:
            ray.shutdown()
        if reaper is not None:
            reaper.kill()
            reaper.wait()


def start_reaper(ray) -> Optional[subprocess.Popen]:
    """When this process has just started a local Ray cluster (not joined one), a watchdog
    (reaper.py) that tears it down should this process be killed without shutting it down; None
    when it joined a cluster, which outlives it by design."""
    node = getattr(ray._private.worker, "_global_node", None)  # Ray's own record of the node it started
    if node is None or not node.is_head():
        return None
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("reaper.py")), str(os.getpid())],
                            stdin=subprocess.DEVNULL)


def connect(ray, address: Optional[str], **options) -> bool:
    """Join the cluster at `address` (None: Ray's default, which starts a local one when none
    runs here; `options` go to ray.init); return whether this call connected, and so should
    disconnect. The workers get this process's layerwise package, so they run the code that
    planned the jobs."""
    if ray.is_initialized():  # a cluster joined by the caller (a notebook, a test)
        return False
    check_reachable(address)
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


def check_reachable(address: Optional[str], seconds: float = 5.0) -> None:
    """Refuse a HOST:PORT where nothing answers within `seconds`: Ray itself keeps retrying for
    minutes, printing its log lines. ("auto" and a ray:// client address are left to Ray.)"""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"ray.address = {address!r} is not HOST:PORT (or \"auto\"); the head node's address is "
                        "printed by `ray start --head`")
    try:
        with socket.create_connection((host, int(port)), timeout=seconds) as connection:
            answer = speaks_grpc(connection)
    except OSError as err:
        raise UserError(f"cannot reach the Ray cluster at ray.address = {address!r}: nothing answers there "
                        f"({err.strerror or err}); start it (`ray start --head`), or leave the address out to start "
                        "a local one") from None
    if not answer:
        raise UserError(f"ray.address = {address!r} answers, but not as a Ray head node does (its GCS port speaks "
                        "gRPC, this one does not); give the address `ray start --head` printed")


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # and an empty SETTINGS frame


def speaks_grpc(connection: socket.socket) -> bool:
    """Whether the service on `connection` answers as a gRPC server (Ray's GCS is one): an HTTP/2
    server's first frame is SETTINGS (type 4). Another service answers otherwise, closes or says
    nothing within the connection's timeout; Ray itself would wait on it for minutes."""
    try:
        connection.sendall(HTTP2_PREFACE)
        head = b""
        while len(head) < 9:
            part = connection.recv(9 - len(head))
            if not part:
                return False
            head += part
    except OSError:  # a timeout, or a reset
        return False
    return head[3] == 4


def submit(ray, sweep, todo: List[List[Job]], finished: Dict[str, dict]) -> list:
    """One task per unit, with the resources the config declares. A transfer unit whose primary
    is not recorded gets the primary's task as an argument: Ray runs it after that task."""
    settings = sweep.cfg.ray
    task = ray.remote(num_cpus=settings.cpus, num_gpus=settings.gpus, max_retries=settings.max_retries)(ray_unit)
    cfg = ray.put(worker_config(sweep.cfg))
    out, crash, driver = str(sweep.store.root), os.environ.get(CRASH_ONCE), (socket.gethostname(), os.getpid())
    refs, primaries = [], {}
    for unit in todo:  # in plan order: a primary's task exists before its transfers'
        job = unit[0]
        after = [primaries[job.primary]] if job.kind == "transfer" and job.primary not in finished else []
        refs.append(task.options(name=job.describe()).remote(cfg, out, unit, crash, driver, *after))
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


def ray_unit(cfg, out: str, unit: List[Job], crash: Optional[str], driver: Tuple[str, int], *after) -> List[str]:
    """A unit in a Ray worker, with as many torch threads as the CPUs it asked for; returns the
    keys of the jobs it ran. It ends with its driver (`ends_with`). `after` is its primary's
    outcome, there only so that Ray runs this task once the primary's has ended."""
    with ends_with(driver):
        return run_unit(cfg, out, unit, max(1, int(cfg.ray.cpus)), crash)


@contextmanager
def ends_with(driver: Tuple[str, int]):
    """End this process within a fifth of a second of the driver (host, process id) while the
    block runs, when the driver runs on this machine: killed (kill -9), it cannot cancel its
    tasks, and Ray stops them only some seconds later, while they go on writing records. (A
    driver on another machine is left to Ray.)"""
    host, pid = driver
    if host != socket.gethostname():
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if not running(pid):
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def run_unit(cfg, out: str, unit: List[Job], threads: int, crash: Optional[str] = None) -> List[str]:
    """A unit in a worker process (Ray's or the local executor's) with `threads` torch threads;
    returns the keys of the jobs it ran. `crash`: see CRASH_ONCE."""
    torch.set_num_threads(threads)
    done = crash_once(crash) if crash and len(unit) > 1 else None
    return [record["key"] for record in worker_runner(cfg, out).run_unit(unit, on_done=done)]


def crash_once(marker: str):
    """The test hook of CRASH_ONCE: after a unit's first job, die unless `marker` says a unit did
    (the local executor's workers take it too)."""
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
