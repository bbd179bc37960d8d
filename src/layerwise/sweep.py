"""Plan the jobs of an experiment and run them.

A sweep trains each (task, architecture, seed) from scratch once. That model is the primary of
every transfer out of the task and the baseline of every transfer into it. Then, for every
ordered pair of distinct tasks with compatible input shapes and every `l_c`, it fine-tunes a
transfer of the primary on the secondary task.

Every job has a key derived from everything that determines its result; a finished job is never
run again. A job whose training fails (a diverged loss) is finished too: its record says
"status": "failed" and why, and so do the records of the transfers of a failed primary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from .config import Config
from .errors import UserError, warn
from .net import LayeredNet, count_parameters
from .similarity import layer_similarity, probe_sample
from .nets import ARCHS
from .store import DamagedCheckpoint, Store
from .tasks import Task, TaskData
from .train import FitResult, TrainConfig, TrainingFailed, fit, memory_layout, resolve_device, to_layout
from .transfer import transfer

# Raised when registered architectures compute something else under the same name and options:
# 2 moved dropout to the start of the layer that consumes it and DenseNets' final BN-ReLU-pool
# into the body, so records and checkpoints made before are not reused (nor loaded into the new nets).
KEY_VERSION = 2
SIMILARITY_EXAMPLES = 500  # validation examples on which a transfer's layers are compared with the primary's


@dataclass(frozen=True)
class Job:
    kind: str  # "scratch" or "transfer"
    arch: str
    target: str
    seed: int
    key: str
    source: Optional[str] = None
    frozen: Optional[int] = None
    primary: Optional[str] = None  # key of the primary's scratch job, for transfers
    fold: Optional[int] = None  # the target task's fold (Task.fold), None for a task without folds
    source_fold: Optional[int] = None  # the fold of the source task's primary, for transfers

    def describe(self) -> str:
        target = named_fold(self.target, self.fold)
        if self.kind == "scratch":
            return f"{self.arch} {target} seed {self.seed}"
        return f"{self.arch} {named_fold(self.source, self.source_fold)}->{target} l_c={self.frozen} seed {self.seed}"


def named_fold(task: str, fold: Optional[int]) -> str:
    return task if fold is None else f"{task}[fold {fold}]"


def digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build(cfg: Config, arch: str, task: Task) -> LayeredNet:
    options = cfg.arch_options.get(arch, {})
    builder = cfg.custom_archs.get(arch) or ARCHS[arch]
    try:
        return builder(task.input_shape, task.num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as err:  # options it cannot take, or a shape it cannot build on
        given = f" with options {options}" if options else ""
        raise UserError(f"{cfg.source} [arch_options.{arch}]: {arch} does not build for task {task.name!r} "
                        f"(input shape {task.input_shape}){given}: {err}") from None


def arch_identity(cfg: Config, arch: str, task: Task) -> dict:
    """A registered architecture is its name and options; one of your own is also what it
    builds, so editing its code gives new jobs instead of stale results."""
    ident = {"name": arch, "options": cfg.arch_options.get(arch, {})}
    if arch in cfg.custom_archs:
        ident["built"] = hashlib.sha256(repr(build(cfg, arch, task)).encode()).hexdigest()[:16]
    return ident


def ordered_pairs(cfg: Config, tasks: Dict[str, Task]) -> List[Tuple[str, str]]:
    if cfg.pairs != "all":
        for a, b in cfg.pairs:
            if tasks[a].input_shape != tasks[b].input_shape:
                raise UserError(f"{cfg.source}: pair [{a!r}, {b!r}] has incompatible input shapes: "
                                f"{a} gives {tasks[a].input_shape}, {b} gives {tasks[b].input_shape}; "
                                "a transfer needs the same input shape")
        return [tuple(p) for p in cfg.pairs]
    return [(a, b) for a in cfg.tasks for b in cfg.tasks
            if a != b and tasks[a].input_shape == tasks[b].input_shape]


def fold_pairs(sources: List[Task], targets: List[Task], where: str) -> List[Tuple[Task, Task]]:
    """(primary's fold, secondary's fold) of the transfers between two tasks: each fold of one with
    the other's single instance, or, when both have folds, fold k with fold k (the same held-out
    part on both sides, as two tasks on one corpus need)."""
    pairs = [(a, b) for a in sources for b in targets if a.fold is None or b.fold is None or a.fold == b.fold]
    if not pairs:
        raise UserError(f"{where}: the folds {[a.fold for a in sources]} and {[b.fold for b in targets]} "
                        "have none in common; give both tasks the same folds")
    return pairs


def plan(cfg: Config) -> List[Job]:
    """Primaries first, then transfers grouped by (arch, seed, primary, secondary) with `l_c`
    ascending, so a frozen-prefix cache can advance one layer at a time. A task with several
    folds counts as one task per fold wherever it appears (primary, baseline, transfers)."""
    tasks = {name: cfg.task(name) for name in cfg.tasks}
    folds = {name: task.folds() for name, task in tasks.items()}
    train = dataclasses.asdict(cfg.train)
    for k in ("device", "channels_last", "cache_prefix", "cache_limit_gb", "eval_batch_size"):
        train.pop(k)  # how a job runs, not what it computes (mixed precision does change it)
    finetune_lr = train.pop("finetune_lr")  # transfers only, and in their keys only when set
    tuning = train if finetune_lr is None else {**train, "finetune_lr": finetune_lr}
    jobs, scratch = [], {}
    for arch in cfg.archs:
        for seed in cfg.seeds:
            for name in tasks:
                for task in folds[name]:
                    spec = {"v": KEY_VERSION, "kind": "scratch", "arch": arch_identity(cfg, arch, task),
                            "task": task.identity(), "seed": seed, "train": train}
                    job = Job("scratch", arch, name, seed, digest(spec), fold=task.fold)
                    scratch[arch, seed, name, task.fold] = job
                    jobs.append(job)
    pairs = ordered_pairs(cfg, tasks)
    for arch in cfg.archs:
        for task in {t.input_shape: t for t in tasks.values()}.values():
            build(cfg, arch, task)  # every architecture builds on every task before the first job trains
        depth = build(cfg, arch, tasks[cfg.tasks[0]]).num_layers
        values = range(depth + 1) if cfg.frozen == "all" else cfg.frozen
        bad = [k for k in values if not 0 <= k <= depth]
        if bad:
            raise UserError(f"{cfg.source}: frozen value {bad[0]} is out of range for {arch}, "
                            f"which has L_H = {depth}; valid l_c values: 0..{depth}")
        for seed in cfg.seeds:
            for source, target in pairs:
                for origin, task in fold_pairs(folds[source], folds[target], f"{cfg.source}: pair [{source!r}, {target!r}]"):
                    primary = scratch[arch, seed, source, origin.fold]
                    for frozen in values:
                        spec = {"v": KEY_VERSION, "kind": "transfer", "primary": primary.key,
                                "task": task.identity(), "frozen": frozen, "seed": seed, "train": tuning}
                        jobs.append(Job("transfer", arch, target, seed, digest(spec), source, frozen, primary.key,
                                        task.fold, origin.fold))
    return jobs


def units(jobs: List[Job]) -> List[List[Job]]:
    """Units of work, in plan order: each primary alone, then every `l_c` of one (primary,
    secondary) together."""
    out: Dict[object, List[Job]] = {}
    for job in jobs:
        out.setdefault(job.key if job.kind == "scratch" else (job.primary, job.target, job.fold), []).append(job)
    return list(out.values())


class PrefixCache:
    """Outputs of a primary's first `l_c` layers on a secondary task's splits.

    Computed once per (primary, secondary, l_c) and advanced to l_c + 1 by one more layer. The
    prefix runs in evaluation mode, exactly as the frozen layers of a transfer do while it trains,
    and under the same autocast; its outputs keep the dtype autocast gives them (bfloat16 or
    float16 with `amp`), so the suffix receives exactly what it would receive without the cache.
    """

    def __init__(self, primary: LayeredNet, data: TaskData, cfg: TrainConfig):
        self.primary, self.raw, self.cfg = primary.eval(), data, cfg
        self.level, self.data = 0, data

    def bytes_at(self, level: int) -> int:
        """The memory the outputs of `level` layers take, in the dtype they are kept in."""
        one = self._advance(self.raw.train.x, 0, level, 1)
        total = len(self.raw.train) + len(self.raw.val) + len(self.raw.test)
        return one[0].numel() * one.element_size() * total

    @torch.no_grad()
    def _advance(self, x, start: int, stop: int, n: int) -> torch.Tensor:
        step = self.cfg.eval_batch_size
        device = self.raw.train.y.device
        layout = memory_layout(self.cfg, device)  # the layout fit gives the suffix's inputs: no copy per step
        with torch.autocast(device.type, enabled=self.cfg.amp):  # as the prefix runs in training
            parts = [self.primary.features(to_layout(x[torch.arange(i, min(i + step, n), device=device)], layout),
                                           upto=stop, start=start)
                     for i in range(0, n, step)]
        return torch.cat(parts)

    def at(self, level: int) -> Optional[TaskData]:
        """The splits as seen after `level` layers, or None when that would not fit in memory."""
        if level < self.level:
            self.level, self.data = 0, self.raw
        if level == self.level:
            return self.data
        if self.bytes_at(level) > self.cfg.cache_limit_gb * 2**30:
            return None
        splits = []
        for split in (self.data.train, self.data.val, self.data.test):
            x = self._advance(split.x, self.level, level, len(split))
            splits.append(dataclasses.replace(split, x=x))
        self.level, self.data = level, TaskData(*splits)
        return self.data


class Sweep:
    """Runs a plan into a store, loading each task's data once and reusing primaries."""

    def __init__(self, cfg: Config, out: Path, progress: bool = True, mode: str = "resume", retry_failed: bool = False):
        """`mode` says what to do when `out` holds another experiment: "resume" refuses, "extend"
        adds this one's jobs to it, "replace" sets its config, plan and report aside.
        `retry_failed` runs the failed jobs of this plan again."""
        self.cfg, self.progress, self.mode, self.retry_failed = cfg, progress, mode, retry_failed
        self.store = Store(out)
        self.jobs = plan(cfg)
        self.device = resolve_device(cfg.train.device)
        self._data: Dict[Tuple[str, Optional[int], int], TaskData] = {}
        self._primary: Optional[Tuple[str, LayeredNet]] = None
        self._cache: Optional[Tuple[tuple, PrefixCache]] = None
        self._warned: set = set()

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
            net = build(self.cfg, job.arch, self.task(job.source, job.source_fold))
            self.store.load_checkpoint(job.primary, net)
            self._primary = (job.primary, net.to(self.device).eval())
        return self._primary[1]

    def check_data(self, jobs: List[Job]) -> None:
        """Fail before any training when a task's data is missing: loading it raises the task's
        own message (what is expected, where, how to get it), or fetches it where allowed."""
        for name, fold in dict.fromkeys((job.target, job.fold) for job in jobs):
            task = self.task(name, fold)
            if not task.available():
                task.load(0)

    def run(self, poll: float = 5.0) -> List[Job]:
        """Run every unfinished job; return those this process ran.

        Work comes in units: a primary alone, or all `l_c` of one (primary, secondary), which
        share a prefix cache. Each unit is claimed before it runs, so several processes pointed
        at one run directory share the sweep instead of repeating it; a transfer unit waits until
        its primary is recorded. The call returns when the whole sweep is recorded.
        """
        self.check_directory()
        self.check_data(self.pending())
        self.warn_without_transfers()
        with self.store.locked():  # another worker may be starting the same sweep this moment
            self.check_directory()
            self.store.start(self.cfg.to_dict(), [job.key for job in self.jobs], self.mode)
        if self.retry_failed:
            for job in self.failed():
                self.store.remove_record(job.key)
        finished: Dict[str, dict] = {}
        self._collect(finished)
        bar = tqdm(total=len(self.jobs), initial=len(finished), unit="job", disable=not self.progress,
                   dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line a while
        ran: List[Job] = []
        show_epoch = lambda epoch, val: bar.set_postfix(epoch=f"{epoch}/{self.cfg.train.epochs}", refresh=False)  # noqa: E731
        try:
            while True:
                self._collect(finished, bar)
                todo = [u for u in units(self.jobs) if any(job.key not in finished for job in u)]
                if not todo:
                    break
                ready = [u for u in todo if u[0].kind == "scratch" or u[0].primary in finished]
                unit = next((u for u in ready if self.store.claim(u[0].key)), None)
                if unit is None:  # what is left is running elsewhere, or waits for a primary that is
                    bar.set_description(f"waiting for {len(todo)} units claimed in {self.store.claims}", refresh=False)
                    time.sleep(poll)
                    continue
                try:
                    for job in unit:
                        if self.store.has(job.key):
                            continue
                        bar.set_description(job.describe(), refresh=False)
                        finished[job.key] = self.run_job(job, show_epoch)
                        ran.append(job)
                        bar.update()
                        self.store.write_results([finished[j.key] for j in self.jobs if j.key in finished])
                except DamagedCheckpoint as err:  # its primary: train it again, then the rest of the unit
                    self.store.set_job_aside(err.key, err.why)
                    if finished.pop(err.key, None) is not None:
                        bar.update(-1)
                    self._primary = self._cache = None
                finally:
                    self.store.release(unit[0].key)
        finally:
            bar.close()
        return ran

    def _collect(self, finished: Dict[str, dict], bar=None) -> None:
        """Add the records finished since the last look, by this process or another."""
        on_disk = self.store.finished_keys()
        new = [job.key for job in self.jobs if job.key not in finished and job.key in on_disk]
        for key in new:
            record = self.store.record(key)
            if record is not None:  # else it was damaged, and is now set aside
                finished[key] = record
                if bar is not None:
                    bar.update()

    def run_job(self, job: Job, on_epoch=None) -> dict:
        """Train one job and write its record: "status" "ok", or "failed" with the reason when its
        training diverged or its primary failed."""
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
            sample = probe_sample(len(data.val), SIMILARITY_EXAMPLES, job.seed, data.val.groups)
            probe = data.val.x[sample.to(self.device)]
            record["similarity"] = layer_similarity(primary, net, probe)
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
        ident = (job.primary, job.target, job.fold)
        if self._cache is None or self._cache[0] != ident:
            self._cache = (ident, PrefixCache(primary, data, self.cfg.train))
        return self._cache[1]

    def record(self, job: Job, task: Task, net: LayeredNet, result: FitResult, cached_prefix: bool) -> dict:
        return {
            **dataclasses.asdict(job), "status": "ok",
            "metric": task.metric, "lower_is_better": task.lower_is_better, "chance": task.chance,
            "num_layers": net.num_layers, "parameters": count_parameters(net),
            "best_epoch": result.best_epoch, "val": result.val, "test": result.test,
            "history": result.history, "seconds": round(result.seconds, 3),
            "cached_prefix": cached_prefix, "device": str(self.device),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }


def run(cfg: Config, out: Path, progress: bool = True) -> Path:
    """Run every job of `cfg` not yet recorded in `out`, then write the report; return its path."""
    from .report import report

    Sweep(cfg, out, progress).run()
    return report(out)
