"""How much fine-tuning changed each layer: linear CKA between a primary's and a transfer's layers.

Centred kernel alignment (Kornblith et al., 2019) compares two representations of the same
examples; it is 1 when they are the same up to rotation and scale, and near 0 when unrelated. For a
transfer, the representation of body layer i on a sample of the secondary task's validation
examples is compared with the primary's, which started identical: layers that fine-tuning left
alone score near 1, so the profile over layers shows where the primary's features carried over
and where they were rewritten. Frozen layers score exactly 1.

The sample is drawn from the validation split (the test split is read only to report), at random
with the job's seed, and spread evenly over the split's groups when it has them: the windows of
one utterance are nearly the same example, so a sample of contiguous windows would describe one
or two speakers rather than the task.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from .net import LayeredNet


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (n, ...) representations of the same n examples, in its Gram-matrix form
    (n x n), which stays cheap however wide the layers are."""
    x = x.flatten(1).double()
    y = y.flatten(1).double()
    x, y = x - x.mean(0), y - y.mean(0)  # centring the features centres the Gram matrices
    k, l = x @ x.T, y @ y.T  # noqa: E741
    denominator = torch.linalg.norm(k) * torch.linalg.norm(l)
    return float((k * l).sum() / denominator) if denominator > 0 else 0.0


def probe_sample(count: int, size: int, seed: int, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Indices (ascending) of `size` of `count` examples drawn at random with `seed`.

    With `groups` (one group id per example) the draw goes round the groups in a random order,
    taking a random unused example of each in turn, so every group gives as many examples as the
    others (or all it has) and no group gives a contiguous run.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    if groups is not None:
        _, group = np.unique(groups.cpu().numpy()[order], return_inverse=True)
        sizes = np.bincount(group)
        by_group = np.argsort(group, kind="stable")
        turn = np.empty(count, dtype=np.int64)  # the round in which each example is taken
        turn[by_group] = np.arange(count) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        group_order = rng.permutation(len(sizes))[group]
        order = order[np.lexsort((group_order, turn))]
    return torch.from_numpy(np.sort(order[:size]))


@torch.no_grad()
def layer_similarity(primary: LayeredNet, transferred: LayeredNet, x: torch.Tensor) -> List[float]:
    """Linear CKA of every body layer's output on `x` between the primary and the transfer."""
    primary_mode, transferred_mode = primary.training, transferred.training
    primary.eval()
    transferred.eval()
    scores = []
    a, b = x, x
    for i, (pa, pb) in enumerate(zip(primary.layers, transferred.layers)):
        if i < transferred.frozen:  # the primary's layer, held constant: one pass serves both
            a = b = pa(a)
            scores.append(1.0)
        else:
            a, b = pa(a), pb(b)
            scores.append(linear_cka(a, b))
    primary.train(primary_mode)
    transferred.train(transferred_mode)
    return scores
