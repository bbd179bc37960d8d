"""Two architectures for spectrogram windows (1 x n_mels x context; 1 x 40 x 21 by default).

The paper compares an AlexNet-like and a VGG-like network on TIMIT and IEMOCAP, but its exact
layer tables are not available to us: the sizes below are our choice, scaled to a 40 x 21 input,
and each convolution (with its batch norm, ReLU and pooling) or fully connected layer (with the
dropout on its input, and its ReLU) is one body layer for the method (the cut rule in `net.py`).

- `model-a` (AlexNet-like, L_H = 6): few convolutions with large kernels and pooling, then two
  wide fully connected layers: conv 7x7 + pool, conv 5x5 + pool, conv 3x3, conv 3x3 + pool,
  fc, fc.
- `model-b` (VGG-like, L_H = 8): three stacks of two 3x3 convolutions, pooling after each stack,
  then two fully connected layers.

Pooling is 2 x 2 and floors odd sizes (40 x 21 -> 20 x 10 -> 10 x 5 -> 5 x 2). With the defaults
model-a has about 3.1M parameters and model-b about 4.9M (with a 61-way head).
"""

from __future__ import annotations

from functools import partial

from ..net import LayeredNet
from .small import alexnet_like, check_sizes, conv, dense, flat_size, linear_head


def model_a(input_shape, num_outputs: int, width: int = 64, hidden: int = 1024, dropout: float = 0.5) -> LayeredNet:
    """AlexNet-like, L_H = 6: conv7x7+pool, conv5x5+pool, conv3x3, conv3x3+pool, fc, fc."""
    return alexnet_like(input_shape, num_outputs, width, hidden, dropout, kernels=(7, 5, 3, 3))


def model_b(input_shape, num_outputs: int, width: int = 64, hidden: int = 1024, dropout: float = 0.5) -> LayeredNet:
    """VGG-like, L_H = 8: (conv3x3, conv3x3+pool) with width, 2*width and 4*width channels, fc, fc."""
    check_sizes(width, hidden, dropout)
    c = input_shape[0]
    layers = []
    for cout in (width, 2 * width, 4 * width):
        layers += [conv(c, cout, 3), conv(cout, cout, 3, pool=True)]
        c = cout
    layers.append(dense(flat_size(layers, input_shape), hidden, dropout, flatten=True))
    layers.append(dense(hidden, hidden, dropout))
    make_head = partial(linear_head, hidden)
    return LayeredNet(layers, make_head(num_outputs), make_head)
