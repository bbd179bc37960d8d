"""Run an experiment's plan into its run directory: load each task's data once, train each job,
write its record.

What runs is planned in plan.py and handed out by an executor (executors.py); this module does
one job at a time. A finished job is never run again. A job whose training fails (a diverged
loss) is finished too: its record says "status": "failed" and why, and so do the records of the
transfers of a failed primary.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from . import given
from .config import Config
from .errors import warn
from .net import LayeredNet, count_parameters
from .plan import Job, build, ordered_pairs, plan, unit_key, units
from .prefix import PrefixCache
from .similarity import layer_similarity, primary_grams, probe_sample
from .store import DamagedCheckpoint, Store
from .tasks import Task, TaskData
from .train import FitResult, TrainingFailed, fit, resolve_device
from .transfer import transfer

SIMILARITY_EXAMPLES = 500  # validation examples on which a transfer's layers are compared with the primary's


class Sweep:
    """Runs a plan into a store, loading each task's data once and reusing primaries."""

    def __init__(self, cfg: Config, out: Path, progress: bool = True, mode: str = "resume", retry_failed: bool = False,
                 jobs: Optional[List[Job]] = None):
        """`mode` says what to do when `out` holds another experiment: "resume" refuses, "extend"
        adds this one's jobs to it, "replace" sets its config, plan and report aside.
        `retry_failed` runs the failed jobs of this plan again. `jobs`, when given, are what
        this Sweep runs instead of planning `cfg` (a worker given units planned elsewhere)."""
        self.cfg, self.progress, self.mode, self.retry_failed = cfg, progress, mode, retry_failed
        self.store = Store(out)
        self.jobs = plan(cfg) if jobs is None else jobs
        self.device = resolve_device(cfg.train.device)
        self._data: Dict[Tuple[str, Optional[int], int], TaskData] = {}
        self._primary: Optional[Tuple[str, LayeredNet]] = None
        self._cache: Optional[Tuple[tuple, PrefixCache]] = None
        self._probe: Optional[tuple] = None  # (ident, probe, the primary's grams): see similarity_probe
        self._warned: set = set()
        self._ran: set = set()

    def pending(self) -> List[Job]:
        failed = {job.key for job in self.failed()} if self.retry_failed else set()
        return [job for job in self.jobs if not self.store.has(job.key) or job.key in failed]

    def failed(self) -> List[Job]:
        """The jobs of the plan whose record says they failed."""
        return [job for job in self.jobs if self.store.has(job.key) and self.store.record(job.key).get("status") == "failed"]

    def check_directory(self) -> None:
        """Refuse an --out that is not empty and not a run, or that holds another experiment."""
        self.store.check_experiment([job.key for job in self.jobs], self.mode)

    def warn_without_transfers(self) -> None:
        if ordered_pairs(self.cfg, {name: self.cfg.task(name) for name in self.cfg.tasks}):
            return  # (asked of the config, not of self.jobs, which `layerwise estimate` narrows to primaries)
        if len(self.cfg.tasks) == 1:
            why = "it has one task"
        elif self.cfg.pairs != "all":
            why = "its list of pairs is empty"
        else:
            shapes = ", ".join(f"{name} {self.cfg.task(name).input_shape}" for name in self.cfg.tasks)
            why = f"no two of its tasks have the same input shape ({shapes})"
        warn(f"{self.cfg.source} plans no transfer: {why}; only the baselines train")

    def task(self, name: str, fold: Optional[int] = None) -> Task:
        """The task instance of one fold (the task itself when it has no folds)."""
        return next(task for task in self.cfg.task(name).folds() if task.fold == fold)

    def data(self, name: str, seed: int, fold: Optional[int] = None) -> TaskData:
        """A task's splits on the device. A task may hold out its validation split by seed, so
        data is kept per seed, and only for the seed at hand (jobs come seed by seed) and one fold
        of each task (the jobs of one fold come together)."""
        if (name, fold, seed) not in self._data:
            self._data = {k: v for k, v in self._data.items() if k[2] == seed and k[0] != name}
            self._data[name, fold, seed] = self.task(name, fold).load(seed).to(self.device)
            self._warn_small(name, len(self._data[name, fold, seed].train))
        return self._data[name, fold, seed]

    def _warn_small(self, name: str, examples: int) -> None:
        if examples < self.cfg.train.batch_size and name not in self._warned:
            self._warned.add(name)
            warn(f"task {name!r}: the train split has {examples} examples, fewer than one batch "
                 f"(train.batch_size = {self.cfg.train.batch_size}); each epoch is a single step")

    def primary(self, job: Job) -> LayeredNet:
        if self._primary is None or self._primary[0] != job.primary:
            if self.cfg.primary is not None:
                net = given.primary_net(self.cfg, self.cfg.task(job.target).input_shape, weights=False)
            else:
                net = build(self.cfg, job.arch, self.task(job.source, job.source_fold))
            self.store.load_checkpoint(job.primary, net)
            self._primary = (job.primary, net.to(self.device).eval())
        return self._primary[1]

    def check_data(self, jobs: List[Job]) -> None:
        """Fail before any training when a task's data is missing: loading it raises the task's
        own message (what is expected, where, how to get it), or fetches it where allowed."""
        for name, fold in dict.fromkeys((job.target, job.fold) for job in jobs if job.kind != "given"):
            task = self.task(name, fold)
            if not task.available():
                task.load(0)

    def run(self, announce: Optional[Callable[[int], None]] = None) -> List[Job]:
        """Run every unfinished job through the config's executor (executors.py); return the jobs
        that were recorded during this call. `announce(n)` is told how many jobs are to
        run once the run directory is this process's.

        The run directory's lock is held throughout: a second process started on it would repeat
        jobs, so it is refused (a sweep is shared between workers by the Ray executor). The call
        returns when the whole sweep is recorded.
        """
        from .executors import executor

        execute = executor(self.cfg.executor)
        self.check_directory()
        self.check_data(self.pending())
        self.warn_without_transfers()
        with self.store.locked():
            self.check_directory()
            self.store.start(self.cfg.to_dict(), [job.key for job in self.jobs], self.mode)
            if self.retry_failed:
                for job in self.failed():
                    self.store.remove_record(job.key)
            finished: Dict[str, dict] = {}
            self.sync(finished)
            self._ran = set()  # keys recorded from now on (a primary set aside and trained again counts)
            if announce:
                announce(len(self.jobs) - len(finished))
            bar = tqdm(total=len(self.jobs), initial=len(finished), unit="job", disable=not self.progress,
                       dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line a while
            try:
                execute(self, finished, bar)
            finally:  # once, however the run ends: rewriting it after every job grows with the sweep
                bar.close()
                self.write_results(finished)
        return [job for job in self.jobs if job.key in self._ran]

    def todo(self, finished: Dict[str, dict]) -> List[List[Job]]:
        """The units with a job not recorded yet, in plan order."""
        return [unit for unit in units(self.jobs) if any(job.key not in finished for job in unit)]

    def sync(self, finished: Dict[str, dict], bar=None) -> None:
        """Bring `finished` up to the run directory: add the records written since the last look
        (by this process or a worker), drop those set aside since."""
        on_disk = self.store.finished_keys()
        gone = [key for key in finished if key not in on_disk]
        for key in gone:
            del finished[key]
        added = 0
        for job in self.jobs:
            if job.key not in finished and job.key in on_disk:
                record = self.store.record(job.key)
                if record is not None:  # else it was damaged, and is now set aside
                    finished[job.key] = record
                    self._ran.add(job.key)
                    added += 1
        if bar is not None and (added or gone):
            bar.update(added - len(gone))

    def finish(self, finished: Dict[str, dict], job: Job, record: dict, bar) -> None:
        """Count a job this process has just recorded."""
        finished[job.key] = record
        self._ran.add(job.key)
        bar.update()

    def write_results(self, finished: Dict[str, dict]) -> None:
        self.store.write_results([finished[job.key] for job in self.jobs if job.key in finished])

    def run_unit(self, unit: List[Job], on_start=None, on_done=None, on_epoch=None) -> List[dict]:
        """Run the jobs of one unit that are not recorded, in order; return their records.
        `on_start(job)` and `on_done(job, record)` follow each job. When the unit's primary
        checkpoint cannot be read, the primary and its record are set aside (it is not finished
        any more, and trains again before its transfers) and the unit stops there."""
        records = []
        try:
            for job in unit:
                if self.store.has(job.key):
                    continue
                if on_start:
                    on_start(job)
                records.append(self.run_job(job, on_epoch))
                if on_done:
                    on_done(job, records[-1])
        except DamagedCheckpoint as err:
            self.store.set_job_aside(err.key, err.why)
            self._primary = self._cache = self._probe = None
        return records

    def run_job(self, job: Job, on_epoch=None) -> dict:
        """Train one job and write its record: "status" "ok", or "failed" with the reason when its
        training diverged or its primary failed."""
        if job.kind == "given":
            return self.load_given(job)
        task = self.task(job.target, job.fold)
        if job.kind == "transfer":
            primary = self.store.record(job.primary)
            if primary is not None and primary.get("status") == "failed":
                reason = f"its primary ({job.arch} {job.source} seed {job.seed}, job {job.primary}) failed: {primary.get('reason')}"
                return self.write_failed(job, task, build(self.cfg, job.arch, task), reason, [])
        data = self.data(job.target, job.seed, job.fold)
        start, cached, train = 0, None, self.cfg.train
        if job.kind == "scratch":
            torch.manual_seed(job.seed)  # the initial weights
            net = build(self.cfg, job.arch, task).to(self.device)
        else:
            primary = self.primary(job)
            torch.manual_seed(job.seed)  # the new head: the same for every l_c of a seed
            net = transfer(primary, task.num_classes, job.frozen)
            if train.finetune_lr is not None:
                train = dataclasses.replace(train, lr=train.finetune_lr)
            if self.cfg.train.cache_prefix and task.deterministic and job.frozen > 0:
                cached = self.prefix(job, primary, data).at(job.frozen)
                start = job.frozen if cached is not None else 0
        try:
            result = fit(net, task, data if cached is None else cached, train, job.seed, start=start, on_epoch=on_epoch)
        except TrainingFailed as err:
            return self.write_failed(job, task, net, str(err), err.history)
        if job.kind == "scratch" or self.cfg.checkpoints == "all":
            self.store.save_checkpoint(job.key, net, {"arch": job.arch, "task": job.target})
        record = self.record(job, task, net, result, cached_prefix=cached is not None)
        if job.kind == "transfer":
            probe, reference = self.similarity_probe(job, primary, data)
            record["similarity"] = layer_similarity(primary, net, probe, reference)
        self.store.write_record(record)
        return record

    def load_given(self, job: Job) -> dict:
        """Load the given primary, keep it as this job's checkpoint (what its transfers start
        from, as from a trained primary's) and record it, with no metrics of its own."""
        net = given.primary_net(self.cfg, self.cfg.task(self.cfg.tasks[0]).input_shape, weights=True)
        self.store.save_checkpoint(job.key, net, {"arch": job.arch, "task": job.target})
        record = {**dataclasses.asdict(job), "status": "ok", "checkpoint": self.cfg.primary.checkpoint,
                  "num_layers": net.num_layers, "parameters": count_parameters(net), "val": {}, "test": {},
                  "history": [], "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.store.write_record(record)
        return record

    def write_failed(self, job: Job, task: Task, net: LayeredNet, reason: str, history: List[dict]) -> dict:
        """Record a job that gave no model: finished (a resume does not retry it; --retry-failed
        does), with no metrics, so nothing downstream can take it for a result."""
        warn(f"{job.describe()} failed: {reason}")
        record = {
            **dataclasses.asdict(job), "status": "failed", "reason": reason,
            "metric": task.metric, "lower_is_better": task.lower_is_better,
            "num_layers": net.num_layers, "parameters": count_parameters(net),
            "best_epoch": None, "val": {}, "test": {}, "history": history, "device": str(self.device),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
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

    def record(self, job: Job, task: Task, net: LayeredNet, result: FitResult, cached_prefix: bool) -> dict:
        return {
            **dataclasses.asdict(job), "status": "ok",
            "metric": task.metric, "lower_is_better": task.lower_is_better, "chance": task.chance,
            "num_layers": net.num_layers, "parameters": count_parameters(net),
            "best_epoch": result.best_epoch, "val": result.val, "test": result.test,
            "history": result.history, "seconds": round(result.seconds, 3),
            "cached_prefix": cached_prefix, "device": str(self.device), "threads": torch.get_num_threads(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }


def run(cfg: Config, out: Path, progress: bool = True) -> Path:
    """Run every job of `cfg` not yet recorded in `out`, then write the report; return its path."""
    from .report import report

    Sweep(cfg, out, progress).run()
    return report(out)
