"""The frozen prefix of a transfer, computed once: a primary's first `l_c` layers applied to a
secondary task's splits, advanced one layer at a time as `l_c` grows; or, where a whole split's
outputs would not fit in memory, streamed a chunk of examples at a time (`stream`)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional

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
        """Layers `start..stop-1` on the first `n` examples of `x`, `eval_batch_size` at a time
        and one layer at a time, each given its input in the layout fit gives the suffix's inputs
        (no copy per step). One layer at a time, so that a level's outputs are the same bits
        however the cache reached it: a resumed unit jumps straight to its first unfinished l_c,
        and a layer whose output leaves channels-last (a 1-channel input does) would otherwise
        hand the next convolution another layout than the step-by-step run did, and it rounds
        differently."""
        step = self.cfg.eval_batch_size
        device = self.raw.train.y.device
        layout = memory_layout(self.cfg, device)
        parts = []
        with torch.autocast(device.type, enabled=self.cfg.amp):  # as the prefix runs in training
            for i in range(0, n, step):
                part = x[torch.arange(i, min(i + step, n), device=device)]
                for layer in range(start, stop):
                    part = self.primary.features(to_layout(part, layout), upto=layer + 1, start=layer)
                parts.append(part)
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

    def stream(self, x, levels: List[int]) -> Iterator[Dict[int, torch.Tensor]]:
        """The outputs after each of `levels` (ascending) layers on the examples `x`, one chunk of
        `eval_batch_size` examples at a time: for outputs that do not fit in memory whole
        (`cache_limit_gb`). Each chunk goes from level to level exactly as `at` takes a whole
        split (the same examples per batch, the same layout at each level's start), so the
        outputs are the same bits, and only one chunk's are held at once."""
        step, device = self.cfg.eval_batch_size, self.raw.train.y.device
        for i in range(0, len(x), step):
            part, level, outputs = x[torch.arange(i, min(i + step, len(x)), device=device)], 0, {}
            for stop in levels:
                if stop > level:
                    part, level = self._advance(part, level, stop, len(part)), stop
                outputs[stop] = part
            yield outputs
