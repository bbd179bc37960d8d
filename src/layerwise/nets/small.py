"""Two small architecture families for the embedded suite (1 x 16 x 16 images by default).

They differ in structure on purpose, so the suite can ask whether tasks or architectures shape
transferability more: an AlexNet-like net (large first kernel, few convolutions, pooling, then
fully connected layers) and a VGG-like net (stacks of 3x3 convolutions). Each body layer is one
unit for the method: a convolution with its normalisation, activation and pooling, or a fully
connected layer with the dropout on its input and its activation (the cut rule in `net.py`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..net import LayeredNet


def conv(cin: int, cout: int, kernel: int, pool: bool = False) -> nn.Sequential:
    """Convolution, batch norm, ReLU, and optionally 2x2 max pooling: one layer for the method."""
    parts = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        parts.append(nn.MaxPool2d(2))
    return nn.Sequential(*parts)


def dense(fin: int, fout: int, dropout: float = 0.0, flatten: bool = False) -> nn.Sequential:
    """(Dropout on the input,) fully connected layer, ReLU: one layer for the method. The dropout
    starts the layer, so it trains exactly when this layer does (see `net.py`)."""
    parts = [nn.Flatten()] if flatten else []
    if dropout:
        parts.append(nn.Dropout(dropout))
    parts += [nn.Linear(fin, fout), nn.ReLU(inplace=True)]
    return nn.Sequential(*parts)


def linear_head(features: int, num_outputs: int) -> nn.Module:
    return nn.Linear(features, num_outputs)


def check_sizes(width: int, hidden: int, dropout: float) -> None:
    """Refuse sizes no network is built with, before torch builds empty layers (and warns)."""
    if width < 1 or hidden < 1:
        raise ValueError(f"width and hidden must be at least 1; got width={width}, hidden={hidden}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be at least 0 and below 1; got {dropout}")


def flat_size(layers, input_shape) -> int:
    """The number of features the body's last layer gives for one input of `input_shape`."""
    with torch.no_grad():
        x = torch.zeros(1, *input_shape)
        for layer in layers:
            x = layer.eval()(x)
    return x[0].numel()


def alexnet_like(input_shape, num_outputs: int, width: int, hidden: int, dropout: float, kernels) -> LayeredNet:
    """L_H = 6: four convolutions of the given kernel sizes (pooling after the 1st, 2nd and 4th),
    then two fully connected layers."""
    check_sizes(width, hidden, dropout)
    c = input_shape[0]
    k1, k2, k3, k4 = kernels
    layers = [
        conv(c, width, k1, pool=True),
        conv(width, 2 * width, k2, pool=True),
        conv(2 * width, 3 * width, k3),
        conv(3 * width, 2 * width, k4, pool=True),
    ]
    layers.append(dense(flat_size(layers, input_shape), hidden, dropout, flatten=True))
    layers.append(dense(hidden, hidden, dropout))
    make_head = partial(linear_head, hidden)
    return LayeredNet(layers, make_head(num_outputs), make_head)


def alexnet_small(input_shape, num_outputs: int, width: int = 32, hidden: int = 128, dropout: float = 0.25) -> LayeredNet:
    """AlexNet-like, L_H = 6: conv5x5+pool, conv3x3+pool, conv3x3, conv3x3+pool, fc, fc."""
    return alexnet_like(input_shape, num_outputs, width, hidden, dropout, kernels=(5, 3, 3, 3))


def vgg_small(input_shape, num_outputs: int, width: int = 16, hidden: int = 128, dropout: float = 0.25) -> LayeredNet:
    """VGG-like, L_H = 6: two stacks of 3x3 convolutions (pooling after each stack), one more 3x3
    stack, then a fully connected layer."""
    check_sizes(width, hidden, dropout)
    c = input_shape[0]
    layers = [
        conv(c, width, 3),
        conv(width, width, 3, pool=True),
        conv(width, 2 * width, 3),
        conv(2 * width, 2 * width, 3, pool=True),
        conv(2 * width, 4 * width, 3, pool=True),
    ]
    layers.append(dense(flat_size(layers, input_shape), hidden, dropout, flatten=True))
    make_head = partial(linear_head, hidden)
    return LayeredNet(layers, make_head(num_outputs), make_head)
