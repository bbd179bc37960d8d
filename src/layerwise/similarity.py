"""How much fine-tuning changed each layer: linear CKA between a primary's and a transfer's layers.

Centred kernel alignment (Kornblith et al., 2019) compares two representations of the same
examples; it is 1 when they are the same up to rotation and scale, and near 0 when unrelated. For a
transfer, the representation of body layer i on the secondary task's test examples is compared
with the primary's, which started identical: layers that fine-tuning left alone score near 1, so
the profile over layers shows where the primary's features carried over and where they were
rewritten. Frozen layers score exactly 1.
"""

from __future__ import annotations

from typing import List

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


@torch.no_grad()
def layer_similarity(primary: LayeredNet, transferred: LayeredNet, x: torch.Tensor) -> List[float]:
    """Linear CKA of every body layer's output on `x` between the primary and the transfer."""
    primary_mode, transferred_mode = primary.training, transferred.training
    primary.eval()
    transferred.eval()
    scores = []
    a, b = x, x
    for i, (pa, pb) in enumerate(zip(primary.layers, transferred.layers)):
        a, b = pa(a), pb(b)
        scores.append(1.0 if i < transferred.frozen else linear_cka(a, b))
    primary.train(primary_mode)
    transferred.train(transferred_mode)
    return scores
