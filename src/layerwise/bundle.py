"""Several tensors that travel together between body layers: a transformer's hidden states with
their attention mask, or a text example's token ids with theirs.

A chain of convolutions passes one tensor from layer to layer; a transformer's blocks also need
to know which positions are padding. A `Bundle` holds named tensors that share their first
(batch) dimension and behaves, for everything a layer's output or a split's inputs must do
(`len`, indexing by a tensor of example indices, `.to(device)`, `.clone()`, concatenation), like
one tensor. So the prefix cache, training and evaluation treat it like any tensor, and a chain
network never meets one.
"""

from __future__ import annotations

from typing import Dict, List, Union

import torch


class Bundle:
    """Named tensors with a common batch dimension (the first)."""

    def __init__(self, **parts: torch.Tensor):
        if not parts:
            raise ValueError("a Bundle needs at least one tensor")
        self.parts: Dict[str, torch.Tensor] = parts

    def __getitem__(self, index) -> Union["Bundle", torch.Tensor]:
        """A part by name, or every part at `index` (examples, a slice)."""
        if isinstance(index, str):
            return self.parts[index]
        return Bundle(**{k: v[index.to(v.device) if isinstance(index, torch.Tensor) else index]
                         for k, v in self.parts.items()})

    def get(self, name: str, default=None):
        return self.parts.get(name, default)

    def replace(self, **parts: torch.Tensor) -> "Bundle":
        return Bundle(**{**self.parts, **parts})

    def __len__(self) -> int:
        return len(next(iter(self.parts.values())))

    def __contains__(self, name: str) -> bool:
        return name in self.parts

    def to(self, *args, **kwargs) -> "Bundle":
        return Bundle(**{k: v.to(*args, **kwargs) for k, v in self.parts.items()})

    def clone(self) -> "Bundle":
        return Bundle(**{k: v.clone() for k, v in self.parts.items()})

    @property
    def device(self) -> torch.device:
        return next(iter(self.parts.values())).device

    @property
    def shape(self):
        """The first part's shape (what a split's `x.shape` tells: the examples' size)."""
        return next(iter(self.parts.values())).shape

    def bytes_per_example(self) -> int:
        return sum(v[0].numel() * v.element_size() for v in self.parts.values())

    def representation(self) -> torch.Tensor:
        """What a layer similarity compares: the hidden states, padded positions zeroed."""
        hidden = self.parts.get("hidden", next(iter(self.parts.values())))
        mask = self.parts.get("mask")
        if mask is not None and hidden.dim() == 3:
            hidden = hidden * mask[..., None].to(hidden.dtype)
        return hidden

    def __repr__(self) -> str:
        return "Bundle(" + ", ".join(f"{k}={tuple(v.shape)} {v.dtype}" for k, v in self.parts.items()) + ")"


def cat(parts: List[Union[Bundle, torch.Tensor]]) -> Union[Bundle, torch.Tensor]:
    """Concatenate batches along the examples, tensors or bundles alike."""
    if isinstance(parts[0], Bundle):
        return Bundle(**{k: torch.cat([p[k] for p in parts]) for k in parts[0].parts})
    return torch.cat(parts)


def bytes_per_example(x: Union[Bundle, torch.Tensor]) -> int:
    return x.bytes_per_example() if isinstance(x, Bundle) else x[0].numel() * x.element_size()
