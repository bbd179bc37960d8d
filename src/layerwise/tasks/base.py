"""What a task is: a dataset with its splits, input shape, label space, loss and metric.

A task is a dataclass whose fields are its options (set from a config's `[task_options.NAME]`
table); it knows its input shape without loading data, loads its splits on demand, and scores
a split from the logits a network gives for every example of it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..options import check_dataclass_options


@dataclass
class Split:
    """Examples of one split.

    `x` is anything with `len(x)`, `x[index_tensor] -> float tensor batch` and `x.to(device)`:
    a tensor, or a lazy view such as a window over a feature matrix. `y` holds one integer label
    per example. `groups`, when set, maps each example to the utterance (or other unit) it
    belongs to, for tasks scored per unit rather than per example.
    """

    x: Any
    y: torch.Tensor
    groups: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        groups = None if self.groups is None else self.groups.to(device)
        return Split(self.x.to(device), self.y.to(device), groups)


@dataclass
class TaskData:
    train: Split
    val: Split
    test: Split

    def to(self, device) -> "TaskData":
        return TaskData(self.train.to(device), self.val.to(device), self.test.to(device))


@dataclass
class Task:
    """Base class. Subclasses set the class attributes and implement `input_shape` and `load`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    metric: ClassVar[str] = "accuracy"  # the metric that selects the epoch and draws the curves
    lower_is_better: ClassVar[bool] = False
    num_classes: ClassVar[int] = 0
    # Options that say where and how to get the data, not what is learned from it.
    INCIDENTAL: ClassVar[Tuple[str, ...]] = ("root", "cache", "download", "verify")

    @property
    def input_shape(self) -> Tuple[int, ...]:
        raise NotImplementedError

    @property
    def deterministic(self) -> bool:
        """True when the training inputs are the same every epoch (no random augmentation), so a
        frozen prefix's outputs can be computed once."""
        return True

    def available(self) -> bool:
        """Whether the data is on this machine (or can be made here without a download)."""
        return True

    def load(self, seed: int = 0) -> TaskData:
        raise NotImplementedError

    def check(self) -> None:
        """Raise a UserError naming what is missing or damaged, before any job trains: a sweep asks
        every task it will train on first, so bad data never stops it after other jobs trained.
        Loading reports what is missing (or fetches it where allowed); a task whose files can only
        be checked by reading them all reads them here (SpeechTask)."""
        if not self.available():
            self.load(0)

    def folds(self) -> List["Task"]:
        """The single-fold tasks this one stands for, each trained and scored on its own (a sweep
        runs every job of the task once per fold). Most tasks are one fold: themselves."""
        return [self]

    @property
    def fold(self) -> Optional[int]:
        """Which fold this instance is (recorded with each job), or None for a task without folds."""
        return None

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random augmentation of one training batch (on whatever device it lives)."""
        return x

    @property
    def chance(self) -> Optional[float]:
        """The value of `metric` for a predictor that ignores its input (uniform guessing, or one
        class for every example): the floor from which normalised gains are measured. None when
        a task's own metric has no such level (the analysis then normalises by the baseline's error)."""
        if self.metric not in ("accuracy", "error"):
            return None
        guess = 100.0 / self.num_classes
        return guess if self.metric == "accuracy" else 100.0 - guess

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def score(self, logits: torch.Tensor, split: Split) -> Dict[str, float]:
        """Metrics of one split from the logits of all its examples; must include `self.metric`."""
        pred = logits.argmax(1)
        acc = (pred == split.y).float().mean().item() * 100
        return {"accuracy": acc, "error": 100 - acc}

    def options(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> Dict[str, Any]:
        """What determines the examples and labels: the name and every option but the incidental
        ones. Job keys are made from it, so moving the data elsewhere reruns nothing."""
        return {"name": self.name, **{k: v for k, v in self.options().items() if k not in self.INCIDENTAL}}


def make_task(cls, options: Dict[str, Any], where: str) -> Task:
    """Build a task from its options, naming the bad key and the valid ones on a mistake."""
    check_dataclass_options(cls, options, f"option for task {cls.name!r}:", where)
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None


def data_root(explicit: Optional[str], subdir: str) -> Path:
    """Where a task's files live: an explicit `root` option, else `$LAYERWISE_DATA/<subdir>`,
    else `~/.cache/layerwise/<subdir>`."""
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("LAYERWISE_DATA")
    if base:
        return Path(base).expanduser() / subdir
    return Path.home() / ".cache" / "layerwise" / subdir
