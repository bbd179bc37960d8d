"""Run units and jobs of a sweep in whatever process holds them: the driver itself, a local
worker process or a Ray worker.

A Runner keeps what the jobs of one process share: each task's data (loaded once per seed), the
primary of the unit at hand with its record, the prefix cache of its frozen layers and the sample
the transfers' layers are compared on. It trains one job at a time and writes its record: "status"
"ok", or "failed" with the reason when its training diverged or its primary failed. What runs, and
where, is decided by the driver (sweep.py) and the executors.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from . import given
from .config import Config
from .errors import memory_error, out_of_memory, warn
from .net import LayeredNet, count_parameters
from .plan import Job, build, unit_key
from .prefix import PrefixCache
from .search import SAFETY, should_stop
from .similarity import layer_similarity, primary_grams, probe_sample
from .store import DamagedCheckpoint, Store
from .tasks import Task, TaskData
from .train import FitResult, TrainingFailed, fit, resolve_device
from .transfer import transfer

SIMILARITY_EXAMPLES = 500  # validation examples on which a transfer's layers are compared with the primary's


def task_of(cfg: Config, name: str, fold: Optional[int] = None) -> Task:
    """The task instance of one fold (the task itself when it has no folds)."""
    return next(task for task in cfg.task(name).folds() if task.fold == fold)


def new_record(job: Job, net: LayeredNet, status: str, about: dict, **fields) -> dict:
    """A job's record: the job, its outcome and what it is `about` (a reason, a metric), its
    network's size, `fields`, and when it finished."""
    return {**dataclasses.asdict(job), "status": status, **about, "num_layers": net.num_layers,
            "parameters": count_parameters(net), **fields, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def task_fields(task: Task) -> dict:
    """What a record says of its task's metric."""
    return {"metric": task.metric, "lower_is_better": task.lower_is_better}


class Runner:
    """Runs units and jobs of the config's sweep into the run directory `out`."""

    def __init__(self, cfg: Config, out: Path):
        self.cfg = cfg
        self.store = Store(out)
        self.device = resolve_device(cfg.train.device)
        self._data: Dict[Tuple[str, Optional[int], int], TaskData] = {}
        self._primary: Optional[Tuple[str, Optional[LayeredNet], Optional[dict]]] = None  # key, net, record
        self._cache: Optional[Tuple[object, PrefixCache]] = None
        self._probe: Optional[tuple] = None  # (unit, probe, the primary's grams): see similarity_probe
        self._warned: set = set()

    def forget(self) -> None:
        """Drop the primary, its prefix cache and probe: its checkpoint or record changed."""
        self._primary = self._cache = self._probe = None

    def data(self, name: str, seed: int, fold: Optional[int] = None) -> TaskData:
        """A task's splits on the device. A task may hold out its validation split by seed, so
        data is kept per seed, and only for the seed at hand (jobs come seed by seed) and one fold
        of each task (the jobs of one fold come together)."""
        if (name, fold, seed) not in self._data:
            self._data = {k: v for k, v in self._data.items() if k[2] == seed and k[0] != name}
            self._data[name, fold, seed] = task_of(self.cfg, name, fold).load(seed).to(self.device)
            self._warn_small(name, len(self._data[name, fold, seed].train))
        return self._data[name, fold, seed]

    def _warn_small(self, name: str, examples: int) -> None:
        if examples < self.cfg.train.batch_size and name not in self._warned:
            self._warned.add(name)
            warn(f"task {name!r}: the train split has {examples} examples, fewer than one batch "
                 f"(train.batch_size = {self.cfg.train.batch_size}); each epoch is a single step")

    def primary(self, job: Job) -> Tuple[Optional[LayeredNet], Optional[dict]]:
        """A transfer's primary as (network in evaluation mode, record), read once for all the
        transfers of it this process runs; the network is None when the primary failed."""
        if self._primary is None or self._primary[0] != job.primary:
            record, net = self.store.record(job.primary), None
            if record is None or record.get("status") != "failed":
                if self.cfg.primary is not None:
                    net = given.primary_net(self.cfg, self.cfg.task(job.target).input_shape, weights=False)
                else:
                    net = build(self.cfg, job.arch, task_of(self.cfg, job.source, job.source_fold))
                self.store.load_checkpoint(job.primary, net)
                net = net.to(self.device).eval()
            self.forget()
            self._primary = (job.primary, net, record)
        return self._primary[1:]

    def run_unit(self, unit: List[Job], on_start=None, on_done=None, on_epoch=None) -> List[dict]:
        """Run the jobs of one unit that are not recorded, in order; return their records.
        `on_start(job)` and `on_done(job, record)` follow each job. When the unit's primary
        checkpoint cannot be read, the primary and its record are set aside (it is not finished
        any more, and trains again before its transfers) and the unit stops there. A job that runs
        out of memory stops the unit with a UserError naming it (the jobs recorded before it stay)."""
        records = []
        try:
            for job in unit:
                if self.store.has(job.key):
                    continue
                if on_start:
                    on_start(job)
                try:
                    records.append(self.run_job(job, on_epoch))
                except Exception as err:
                    if out_of_memory(err):
                        self.forget()  # what it held goes with it
                        raise memory_error(f"{job.describe()} (job {job.key})", err) from None
                    raise
                if on_done:
                    on_done(job, records[-1])
        except DamagedCheckpoint as err:
            self.store.set_job_aside(err.key, err.why)
            self.forget()
        return records

    def run_job(self, job: Job, on_epoch=None) -> dict:
        """Train one job and write its record."""
        if self._primary is not None and self._primary[0] == job.key:
            self.forget()  # this process trains that primary again (--retry-failed, a damaged checkpoint)
        if job.kind == "given":
            return self.load_given(job)
        task = task_of(self.cfg, job.target, job.fold)
        primary = None
        if job.kind == "transfer":
            primary, primary_record = self.primary(job)
            if primary is None:
                reason = (f"its primary ({job.arch} {job.source} seed {job.seed}, job {job.primary}) failed: "
                          f"{primary_record.get('reason')}")
                return self.write_failed(job, task, build(self.cfg, job.arch, task), reason, [])
        data = self.data(job.target, job.seed, job.fold)
        start, cached, train = 0, None, self.cfg.train
        if primary is None:
            torch.manual_seed(job.seed)  # the initial weights
            net = build(self.cfg, job.arch, task).to(self.device)
        else:
            torch.manual_seed(job.seed)  # the new head: the same for every l_c of a seed
            net = transfer(primary, task.num_classes, job.frozen)
            if train.finetune_lr is not None:
                train = dataclasses.replace(train, lr=train.finetune_lr)
            if train.finetune_epochs is not None:  # the schedule follows: a truncated run is a whole short run
                train = dataclasses.replace(train, epochs=train.finetune_epochs)
            if self.cfg.train.cache_prefix and task.deterministic and job.frozen > 0:
                cached = self.prefix(job, primary, data).at(job.frozen)
                start = job.frozen if cached is not None else 0
        watch = on_epoch if job.rung is None else EarlyStop(job, task, train.epochs, on_epoch)
        try:
            result = fit(net, task, data if cached is None else cached, train, job.seed, start=start, on_epoch=watch)
        except TrainingFailed as err:
            return self.write_failed(job, task, net, str(err), err.history)
        except Stopped as stop:
            return self.write_pruned(job, task, net, stop, len(data.train))
        if job.kind == "scratch" or self.cfg.checkpoints == "all":
            self.store.save_checkpoint(job.key, net, {"arch": job.arch, "task": job.target})
        record = self.ok_record(job, task, net, result, cached_prefix=cached is not None, examples=len(data.train))
        if primary is not None:
            probe, reference = self.similarity_probe(job, primary, data)
            record["similarity"] = layer_similarity(primary, net, probe, reference)
        self.store.write_record(record)
        return record

    def load_given(self, job: Job) -> dict:
        """Load the given primary, keep it as this job's checkpoint (what its transfers start
        from, as from a trained primary's) and record it, with no metrics of its own."""
        net = given.primary_net(self.cfg, self.cfg.task(self.cfg.tasks[0]).input_shape, weights=True)
        self.store.save_checkpoint(job.key, net, {"arch": job.arch, "task": job.target})
        record = new_record(job, net, "ok", {"checkpoint": self.cfg.primary.checkpoint}, val={}, test={}, history=[])
        self.store.write_record(record)
        return record

    def write_failed(self, job: Job, task: Task, net: LayeredNet, reason: str, history: List[dict]) -> dict:
        """Record a job that gave no model: finished (a resume does not retry it; --retry-failed
        does), with no metrics, so nothing downstream can take it for a result."""
        warn(f"{job.describe()} failed: {reason}")
        record = new_record(job, net, "failed", {"reason": reason, **task_fields(task)}, best_epoch=None, val={}, test={},
                            history=history, device=str(self.device))
        self.store.write_record(record)
        return record

    def ok_record(self, job: Job, task: Task, net: LayeredNet, result: FitResult, cached_prefix: bool,
                  examples: int) -> dict:
        return new_record(job, net, "ok", {**task_fields(task), "chance": task.chance}, best_epoch=result.best_epoch,
                          val=result.val, test=result.test, history=result.history, seconds=round(result.seconds, 3),
                          cached_prefix=cached_prefix, device=str(self.device), threads=torch.get_num_threads(),
                          examples=examples)

    def write_pruned(self, job: Job, task: Task, net: LayeredNet, stop: Stopped, examples: int) -> dict:
        """Record a transfer the adaptive search stopped early: finished, with its validation metrics
        at the epoch it stopped (not a point of any curve: results.csv marks them "pruned")."""
        record = new_record(job, net, "pruned", {**task_fields(task), "chance": task.chance, "reason": stop.reason},
                            best_epoch=stop.epoch, val=stop.val, test={}, history=stop.history, examples=examples,
                            seconds=round(stop.seconds, 3), device=str(self.device))
        self.store.write_record(record)
        return record

    def prefix(self, job: Job, primary: LayeredNet, data: TaskData) -> PrefixCache:
        ident = unit_key(job)  # a task may split its data by seed
        if self._cache is None or self._cache[0] != ident:
            self._cache = (ident, PrefixCache(primary, data, self.cfg.train))
        return self._cache[1]

    def similarity_probe(self, job: Job, primary: LayeredNet, data: TaskData):
        """The validation examples a transfer's layers are compared on, and the primary's side of
        the comparison: the same for every l_c of a unit, so made once (the sample is drawn with
        the unit's seed)."""
        ident = unit_key(job)
        if self._probe is None or self._probe[0] != ident:
            sample = probe_sample(len(data.val), SIMILARITY_EXAMPLES, job.seed, data.val.groups)
            probe = data.val.x[sample.to(self.device)]
            self._probe = (ident, probe, primary_grams(primary, probe))
        return self._probe[1:]


class Stopped(Exception):
    """A transfer stopped early by its rung (search.py)."""

    def __init__(self, epoch: int, val: dict, history: List[dict], reason: str, seconds: float):
        super().__init__(reason)
        self.epoch, self.val, self.history, self.reason, self.seconds = epoch, val, history, reason, seconds


class EarlyStop:
    """fit's on_epoch for a transfer with a rung: raises Stopped when search.should_stop says so."""

    def __init__(self, job: Job, task: Task, epochs: int, then=None):
        self.job, self.task, self.epochs, self.then, self.history = job, task, epochs, then, []
        self.began = time.perf_counter()  # made just before its training starts: the seconds it trained

    def __call__(self, epoch: int, val: dict) -> None:
        self.history.append({"epoch": epoch, **{f"val_{k}": v for k, v in val.items()}})
        if self.then:
            self.then(epoch, val)
        value = val[self.task.metric]
        error = value if self.task.lower_is_better else 100.0 - value
        if should_stop(self.job.rung, epoch, error, self.epochs):
            limit, margins = self.job.rung
            raise Stopped(epoch, dict(val), self.history,
                          f"stopped after epoch {epoch} of {self.epochs}: validation error {error:.2f}, less "
                          f"{SAFETY:g} x {margins[epoch - 1]:.2f} (the most a shallower l_c improved after that epoch), "
                          f"still above {limit:.2f} (the baseline's plus the tolerance)", time.perf_counter() - self.began)


_runner: Dict[tuple, Runner] = {}  # this worker process's Runner, kept between units: its data stays loaded


def worker_runner(cfg: Config, out: str) -> Runner:
    """The Runner of a worker process (local or Ray) for this config and run directory."""
    key = (out, repr(cfg.to_dict()))
    if key not in _runner:
        _runner.clear()
        _runner[key] = Runner(cfg, Path(out))
    return _runner[key]
