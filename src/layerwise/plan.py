"""The plan of an experiment: its jobs, their keys, and the units they run in.

A sweep trains each (task, architecture, seed) from scratch once. That model is the primary of
every transfer out of the task and the baseline of every transfer into it. Then, for every
ordered pair of distinct tasks with compatible input shapes and every `l_c`, it fine-tunes a
transfer of the primary on the secondary task.

Every job has a key derived from everything that determines its result, so a finished job is
never run again and the same key always means the same computation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from . import given
from .config import Config
from .errors import UserError
from .hashing import spec_digest, text_digest
from .net import LayeredNet
from .nets import ARCHS
from .tasks import Task

# Raised when registered architectures compute something else under the same name and options:
# 2 moved dropout to the start of the layer that consumes it and DenseNets' final BN-ReLU-pool
# into the body, so records and checkpoints made before are not reused (nor loaded into the new nets).
KEY_VERSION = 2


@dataclass(frozen=True)
class Job:
    kind: str  # "scratch", "transfer" or "given" (a primary loaded, not trained: given.py)
    arch: str
    target: str
    seed: int
    key: str
    source: Optional[str] = None
    frozen: Optional[int] = None
    primary: Optional[str] = None  # key of the primary's scratch job, for transfers
    fold: Optional[int] = None  # the target task's fold (Task.fold), None for a task without folds
    source_fold: Optional[int] = None  # the fold of the source task's primary, for transfers
    # The adaptive search's early stop, for a transfer (search.py): (the validation error it must come
    # within, the margin per epoch). How a job may end, not what it computes: not in its key.
    rung: Optional[tuple] = None

    def describe(self) -> str:
        target = named_fold(self.target, self.fold)
        if self.kind == "given":
            return f"{self.arch} {self.target} (given primary)"
        if self.kind == "scratch":
            return f"{self.arch} {target} seed {self.seed}"
        return f"{self.arch} {named_fold(self.source, self.source_fold)}->{target} l_c={self.frozen} seed {self.seed}"


def named_fold(task: str, fold: Optional[int]) -> str:
    return task if fold is None else f"{task}[fold {fold}]"


def build(cfg: Config, arch: str, task: Task) -> LayeredNet:
    options = cfg.arch_options.get(arch, {})
    builder = cfg.custom_archs.get(arch) or ARCHS[arch]
    try:
        return builder(task.input_shape, task.num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as err:  # options it cannot take, or a shape it cannot build on
        given = f" with options {options}" if options else ""
        if not isinstance(err, TypeError) and isinstance(getattr(task, "path", None), str):  # torch's shape errors
            raise UserError(f"{cfg.source}: {task.path} holds examples of shape {tuple(task.input_shape)}, which "
                            f"{arch}{given} cannot take ({str(err).splitlines()[0]})") from None
        raise UserError(f"{cfg.source} [arch_options.{arch}]: {arch} does not build for task {task.name!r} "
                        f"(input shape {task.input_shape}){given}: {err}") from None


def expected_input(net: torch.nn.Module) -> str:
    """The example shape a network's first convolution or linear layer takes, in words."""
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear)):
            if isinstance(module, torch.nn.Linear):
                return f"vectors ({module.in_features},)"
            kind = "images (C, H, W)" if isinstance(module, torch.nn.Conv2d) else "sequences (C, T)"
            return f"{kind}; built for this shape, its first layer takes C = {module.in_channels}"
    return "another shape"


def check_fits(cfg: Config, arch: str, task: Task) -> None:
    """Pass one example of the task's shape through the architecture before anything trains, so
    examples of a shape it cannot take are named in one line, not met as a traceback mid-sweep."""
    net = build(cfg, arch, task)
    net.eval()
    try:
        with torch.no_grad():
            # a task whose inputs are not one tensor (token ids with their mask) gives its own example
            net(task.example() if hasattr(task, "example") else torch.zeros(1, *task.input_shape))
    except (RuntimeError, ValueError) as err:  # torch's shape errors
        data = f"{task.path} holds" if isinstance(getattr(task, "path", None), str) else f"task {task.name!r} gives"
        raise UserError(f"{cfg.source}: {data} examples of shape {tuple(task.input_shape)}, which {arch} cannot take "
                        f"(it expects {expected_input(net)}: {str(err).splitlines()[0]})") from None


def arch_identity(cfg: Config, arch: str, task: Task) -> dict:
    """A registered architecture is its name and options; one of your own is also what it
    builds, so editing its code gives new jobs instead of stale results."""
    ident = {"name": arch, "options": cfg.arch_options.get(arch, {})}
    if arch in cfg.custom_archs:
        ident["built"] = text_digest(repr(build(cfg, arch, task)))
    return ident


def ordered_pairs(cfg: Config, tasks: Dict[str, Task]) -> List[Tuple[str, str]]:
    if cfg.primary is not None:
        return [(cfg.primary.name, name) for name in cfg.tasks]
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
    tuning = dict(train)
    for key in ("finetune_lr", "finetune_epochs"):  # transfers only, and in their keys only when set
        value = train.pop(key)
        tuning.pop(key)
        if value is not None:
            tuning[key] = value
    jobs, scratch = [], {}
    if cfg.primary is not None:
        jobs.append(given_job(cfg, tasks, scratch, folds))
    for arch in cfg.archs:
        for seed in cfg.seeds:
            for name in tasks if cfg.primary is None or cfg.primary.baseline else []:
                for task in folds[name]:
                    spec = {"v": KEY_VERSION, "kind": "scratch", "arch": arch_identity(cfg, arch, task),
                            "task": task.identity(), "seed": seed, "train": train}
                    job = Job("scratch", arch, name, seed, spec_digest(spec), fold=task.fold)
                    scratch[arch, seed, name, task.fold] = job
                    jobs.append(job)
    pairs = ordered_pairs(cfg, tasks)
    for arch in cfg.archs:
        for task in {t.input_shape: t for t in tasks.values()}.values():
            check_fits(cfg, arch, task)  # every architecture builds and runs on every task before the first job trains
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
                        jobs.append(Job("transfer", arch, target, seed, spec_digest(spec), source, frozen, primary.key,
                                        task.fold, origin.fold))
    return jobs


def given_job(cfg: Config, tasks: Dict[str, Task], scratch: dict, folds: dict) -> Job:
    """The job that loads a given primary, standing in for the trained primary of every seed;
    every task must take its input shape."""
    shape = tasks[cfg.tasks[0]].input_shape
    for name, task in tasks.items():
        if task.input_shape != shape:
            raise UserError(f"{cfg.source}: tasks {cfg.tasks[0]!r} and {name!r} have different input shapes "
                            f"({shape} and {task.input_shape}); a given primary takes one")
    spec = {"v": KEY_VERSION, "kind": "given", "primary": given.identity(cfg, shape)}
    job = Job("given", cfg.primary.arch, cfg.primary.name, cfg.seeds[0], spec_digest(spec))
    for seed in cfg.seeds:
        scratch[job.arch, seed, job.target, None] = job
    folds[job.target] = [job]  # fold_pairs reads only `.fold`: None, the one instance of the primary
    return job


def unit_key(job: Job) -> object:
    """What the jobs of one unit share: a primary's own key; for a transfer, its (primary,
    secondary, fold, seed), which fix the data and the prefix outputs every `l_c` trains on. A
    trained primary is one seed's; a given one serves every seed, whose units can then run at once."""
    return job.key if job.primary is None else (job.primary, job.target, job.fold, job.seed)


def units(jobs: List[Job]) -> List[List[Job]]:
    """Units of work, in plan order: each primary alone, then every `l_c` of one unit_key together."""
    out: Dict[object, List[Job]] = {}
    for job in jobs:
        out.setdefault(unit_key(job), []).append(job)
    return list(out.values())
