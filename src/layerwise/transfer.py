"""Gradual transfer learning: copy a primary model's body, give it a new head, freeze a prefix.

For every `l_c` in 0..L_H the secondary model starts as `transfer(primary, classes, l_c)`:
with `l_c = 0` the primary is only an initialisation, with `l_c = L_H` it is a fixed feature
extractor and only the head learns.
"""

from __future__ import annotations

import copy

from .net import LayeredNet


def transfer(primary: LayeredNet, num_outputs: int, frozen: int) -> LayeredNet:
    """A new net for the secondary task: a deep copy of `primary`'s body (no shared storage), a
    freshly initialised head of `num_outputs`, and its first `frozen` layers held constant."""
    if primary.make_head is None:
        raise ValueError("the primary network has no head builder (LayeredNet(make_head=...)), so it cannot be re-headed")
    body = copy.deepcopy(primary.layers)
    net = LayeredNet(body, primary.make_head(num_outputs), primary.make_head)
    net.to(next(primary.parameters()).device)
    return net.freeze(frozen)
