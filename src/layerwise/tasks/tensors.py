"""A task made from your own tensors, for experiments run from Python."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ..hashing import tensors_digest
from .base import Split, Task, TaskData

Pair = Tuple[torch.Tensor, torch.Tensor]


class TensorTask(Task):
    """Classification of `(x, y)` train, validation and test tensors (`y` holds class indices).

    Its identity includes a digest of the tensors, so a run directory never mixes results of
    different data under one name. Accuracy is the metric (higher is better).
    """

    def __init__(self, name: str, train: Pair, val: Pair, test: Pair, num_classes: Optional[int] = None,
                 description: str = ""):
        self.name, self.description = name, description or f"tensors ({len(train[1])} training examples)"
        self.data = TaskData(*(Split(x.float(), y.long()) for x, y in (train, val, test)))
        labels = torch.cat([s.y for s in (self.data.train, self.data.val, self.data.test)])
        self.num_classes = num_classes or int(labels.max()) + 1
        shapes = {tuple(s.x.shape[1:]) for s in (self.data.train, self.data.val, self.data.test)}
        if len(shapes) != 1:
            raise ValueError(f"task {name!r}: train, validation and test inputs differ in shape: {sorted(shapes)}")
        self._shape = shapes.pop()
        self._digest = tensors_digest((str((t.dtype, tuple(t.shape))), t) for s in (train, val, test) for t in s)

    @property
    def input_shape(self):
        return self._shape

    def load(self, seed: int = 0) -> TaskData:
        return self.data

    def options(self) -> Dict[str, Any]:
        return {}

    def identity(self) -> Dict[str, Any]:
        return {"name": self.name, "data": self._digest, "classes": self.num_classes}
