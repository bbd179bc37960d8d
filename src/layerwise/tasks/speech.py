"""What the speech tasks share: a licensed corpus read from `root` (never downloaded),
log-mel features computed once and cached outside the corpus, and windows of `context` frames
shaped `(1, n_mels, context)`, so one architecture serves every speech task; splits of windows
grouped by utterance, and the posteriors of an utterance from its windows' (audio folders share
these two)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..audio import FeatureMatrix, FrameWindows, LogMel, cached_features
from ..errors import UserError
from .base import Split, Task, data_root


def check_windows(context: int, **counts: int) -> None:
    """The options of log-mel windows, for every task made of them: `context` frames, an odd
    number (a window is centred on its frame), and each of `counts` at least 1."""
    if context < 1 or context % 2 == 0:
        raise ValueError(f"context must be an odd number of frames; got {context}")
    for key, value in counts.items():
        if value < 1:
            raise ValueError(f"{key} must be at least 1; got {value}")


@dataclass
class SpeechTask(Task):
    lower_is_better = True
    root: Optional[str] = None  # the corpus; default $LAYERWISE_DATA/<name> or ~/.cache/layerwise/<name>
    cache: Optional[str] = None  # feature cache folder; default $LAYERWISE_DATA/cache or ~/.cache/layerwise/cache
    context: int = 21  # frames per window (odd), centred on the frame being classified
    n_mels: int = 40

    def __post_init__(self):
        check_windows(self.context, n_mels=self.n_mels)

    @property
    def input_shape(self):
        return (1, self.n_mels, self.context)

    def corpus_root(self) -> Path:
        return data_root(self.root, self.name)

    def check_corpus(self) -> None:
        """Raise a UserError naming the path and the layout expected when the corpus is not there."""
        raise NotImplementedError

    def available(self) -> bool:
        try:
            self.check_corpus()
            return True
        except UserError:
            return False

    def check(self) -> None:
        """Read the whole corpus: a damaged audio or label file is met only by reading it, and
        met in a worker it would stop the sweep after other jobs trained. Its features are cached
        as they are computed, so the jobs read them back instead of the audio."""
        self.load(0)

    def features(self, files: List[Path]) -> Tuple[FeatureMatrix, np.ndarray, np.ndarray]:
        """The log-mel features of `files` back to back, each file's first frame offset (and one
        past the last), and each file's number of audio samples."""
        found = cached_features(files, LogMel(n_mels=self.n_mels), data_root(self.cache, "cache"),
                                self.name, f"[task_options.{self.name}] cache")
        return FeatureMatrix(torch.from_numpy(found.feats)), found.offsets, found.samples


def window_split(matrix: FeatureMatrix, offsets: np.ndarray, examples, half: int):
    """A `Split` of windows from `examples`: (utterance index, its frame indices, their labels)
    triples, kept in that order, so the examples of one utterance are contiguous and in time
    order. `groups` holds each example's utterance index."""
    offsets_t = torch.as_tensor(offsets, dtype=torch.long)
    bounds = torch.stack([offsets_t[:-1], offsets_t[1:]], dim=1)
    utts, centres, labels = [], [], []
    for u, frames, y in examples:
        utts.append(np.full(len(frames), u, dtype=np.int64))
        centres.append(offsets[u] + np.asarray(frames, dtype=np.int64))
        labels.append(np.asarray(y, dtype=np.int64))
    cat = lambda parts: torch.as_tensor(np.concatenate(parts) if parts else np.zeros(0, np.int64))  # noqa: E731
    groups = cat(utts)
    x = FrameWindows(matrix, bounds, cat(centres), groups, half)
    return Split(x, cat(labels), groups)


def utterance_posteriors(logits: torch.Tensor, groups: torch.Tensor):
    """(utterance ids in first-seen order, their mean softmax posteriors)."""
    ids, inverse = torch.unique(groups, return_inverse=True)
    probs = torch.softmax(logits.float(), dim=1)
    sums = torch.zeros(len(ids), probs.shape[1], device=probs.device).index_add_(0, inverse, probs)
    counts = torch.bincount(inverse, minlength=len(ids)).clamp_min(1)
    return ids, inverse, sums / counts[:, None]
