"""The frozen prefix of a transfer, computed once: a primary's first `l_c` layers applied to a
secondary task's splits, advanced one layer at a time as `l_c` grows."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .bundle import bytes_per_example, cat
from .net import LayeredNet
from .tasks import TaskData
from .train import TrainConfig, memory_layout, to_layout


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
        return bytes_per_example(one) * total

    @torch.no_grad()
    def _advance(self, x, start: int, stop: int, n: int):
        step = self.cfg.eval_batch_size
        device = self.raw.train.y.device
        layout = memory_layout(self.cfg, device)  # the layout fit gives the suffix's inputs: no copy per step
        with torch.autocast(device.type, enabled=self.cfg.amp):  # as the prefix runs in training
            parts = [self.primary.features(to_layout(x[torch.arange(i, min(i + step, n), device=device)], layout),
                                           upto=stop, start=start)
                     for i in range(0, n, step)]
        return cat(parts)  # tensors, or bundles (hidden states with their mask)

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
