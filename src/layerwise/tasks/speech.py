"""What the two speech tasks share: a licensed corpus read from `root` (never downloaded),
log-mel features computed once and cached outside the corpus, and windows of `context` frames
shaped `(1, n_mels, context)`, so one architecture serves both tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..audio import FeatureMatrix, LogMel, cached_features
from ..errors import UserError
from .base import Task, data_root


@dataclass
class SpeechTask(Task):
    lower_is_better = True
    root: Optional[str] = None  # the corpus; default $LAYERWISE_DATA/<name> or ~/.cache/layerwise/<name>
    cache: Optional[str] = None  # feature cache folder; default $LAYERWISE_DATA/cache or ~/.cache/layerwise/cache
    context: int = 21  # frames per window (odd), centred on the frame being classified
    n_mels: int = 40

    def __post_init__(self):
        if self.context < 1 or self.context % 2 == 0:
            raise ValueError(f"context must be an odd number of frames; got {self.context}")

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

    def features(self, files: List[Path]) -> Tuple[FeatureMatrix, np.ndarray, np.ndarray]:
        """The log-mel features of `files` back to back, each file's first frame offset (and one
        past the last), and each file's number of audio samples."""
        found = cached_features(files, LogMel(n_mels=self.n_mels), data_root(self.cache, "cache"),
                                self.name, f"[task_options.{self.name}] cache")
        return FeatureMatrix(torch.from_numpy(found.feats)), found.offsets, found.samples
