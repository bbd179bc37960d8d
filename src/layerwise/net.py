"""A network as an ordered list of body layers plus an output layer (the head).

The whole method is slicing that list: the first `frozen` layers are held constant, the rest
train. Keeping the body a plain `nn.ModuleList` means prefix and suffix are `layers[:k]` and
`layers[k:]`, with no hooks and no name matching.

Where a layer begins and ends (every family in `nets/` follows this rule): a cut at `l_c` must
mean one thing, so freezing layer k changes nothing about how the layers after it train.
- Regularisation that acts on a layer's input (dropout) starts the layer that consumes it, as in
  torchvision's AlexNet (dropout, linear, ReLU). A frozen layer runs in evaluation mode, so a
  dropout at the end of a frozen layer would silently switch off the regularisation of the next,
  trainable layer.
- Normalisation, activation and pooling finish the layer that produces them (a DenseNet's final
  batch norm, ReLU and global average pooling belong to its last body layer).
- The head is one linear layer with no dropout on its input, so `l_c = L_H` trains exactly the head
  the baseline trains.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .cut import HeadBuilder, cut_module
from .errors import UserError


class LayeredNet(nn.Module):
    """`layers` (the L_H body layers) followed by `head`.

    `make_head(num_outputs)` builds a fresh head the way the architecture builds heads; transfer
    uses it to re-head a copied body for the secondary task.
    """

    def __init__(self, layers, head: nn.Module, make_head: Optional[HeadBuilder] = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = head
        self.make_head = make_head
        self.frozen = 0

    @classmethod
    def from_module(cls, module: nn.Module, cuts, example: torch.Tensor,
                    make_head: Optional[HeadBuilder] = None) -> "LayeredNet":
        """`module` cut into body layers after each dotted submodule name in `cuts` (execution
        order), checked on `example` to compute the module's own output; see `cut.py`."""
        return cls(*cut_module(module, cuts, example, make_head))

    @property
    def num_layers(self) -> int:
        """L_H: the number of body layers (the output layer is not counted)."""
        return len(self.layers)

    def features(self, x: torch.Tensor, upto: Optional[int] = None, start: int = 0) -> torch.Tensor:
        """The output of body layers `start..upto-1` applied to `x` (all of them by default)."""
        for layer in self.layers[start:upto]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Body then head. `start > 0` means `x` is already the output of the first `start` layers."""
        return self.head(self.features(x, start=start))

    def freeze(self, frozen: int) -> "LayeredNet":
        """Hold the first `frozen` body layers constant and let every other parameter train."""
        if not isinstance(frozen, int) or isinstance(frozen, bool) or not 0 <= frozen <= self.num_layers:
            raise UserError(f"frozen (l_c) must be an integer in 0..{self.num_layers} for this network; got {frozen!r}")
        self.frozen = frozen
        for i, layer in enumerate(self.layers):
            for p in layer.parameters():
                p.requires_grad_(i >= frozen)
        for p in self.head.parameters():
            p.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "LayeredNet":
        # Frozen layers always behave as at evaluation time: batch-norm statistics stay fixed and
        # dropout stays off, even while the layers after them train.
        super().train(mode)
        for layer in self.layers[: self.frozen]:
            layer.eval()
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
