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

from .bundle import Bundle
from .net import LayeredNet


def gram(x: torch.Tensor) -> torch.Tensor:
    """The centred Gram matrix (n x n) of n examples' representations, scaled to unit Frobenius
    norm (all zeros when the representation is constant). A bundle's hidden states stand for it,
    their padded positions zeroed."""
    if isinstance(x, Bundle):
        x = x.representation()
    x = x.flatten(1).double()
    x = x - x.mean(0)  # centring the features centres the Gram matrix
    k = x @ x.T
    norm = torch.linalg.norm(k)
    return k / norm if norm > 0 else k


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (n, ...) representations of the same n examples, in its Gram-matrix form
    (n x n), which stays cheap however wide the layers are."""
    return float((gram(x) * gram(y)).sum())


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
def primary_grams(primary: LayeredNet, x: torch.Tensor) -> List[torch.Tensor]:
    """The primary's side of `layer_similarity` on `x`: each body layer's `gram`. It is the same
    for every l_c of a (primary, secondary), so a sweep computes it once for all of them."""
    mode = primary.training
    primary.eval()
    grams = []
    for layer in primary.layers:
        x = layer(x)
        grams.append(gram(x))
    primary.train(mode)
    return grams


@torch.no_grad()
def layer_similarity(primary: LayeredNet, transferred: LayeredNet, x: torch.Tensor,
                     reference: Optional[List[torch.Tensor]] = None) -> List[float]:
    """Linear CKA of every body layer's output on `x` between the primary and the transfer.
    `reference` is `primary_grams(primary, x)` when already at hand. The transfer's frozen layers
    are the primary's (CKA exactly 1), so its pass starts past them."""
    reference = primary_grams(primary, x) if reference is None else reference
    mode = transferred.training
    transferred.eval()
    scores = []
    for i, layer in enumerate(transferred.layers):
        x = layer(x)
        scores.append(1.0 if i < transferred.frozen else float((reference[i] * gram(x)).sum()))
    transferred.train(mode)
    return scores
