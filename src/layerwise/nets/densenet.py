"""DenseNets (Huang et al., "Densely Connected Convolutional Networks", 2017) as layered nets.

A dense block is a chain of convolutions in which each one's output is concatenated with its
input and passed on, so the block's output holds every feature map made in it. Here that is a
module, `Grow`, that returns `cat([x, f(x)])`: a dense block is then a plain `nn.Sequential` of
them, and cutting a block into one method layer per convolution is only flattening the list.

All convolutions are pre-activation (batch norm, ReLU, convolution), as in DenseNet. The final
batch norm, ReLU and global average pooling finish the last body layer, and the head is one
linear layer told the number of features it receives, as in every family (the cut rule in
`net.py`).

- `densenet6`: the network of the paper's image experiment, six blocks, each one method layer
  (L_H = 6): 1 a stem convolution, 2 a dense block, 3 a transition (1x1 convolution and 2x2
  average pooling: the down-sampling), 4 a dense block, 5 a transition, 6 a dense block. The paper
  does not give its widths, so they are ours: DenseNet's CIFAR settings (growth rate 12, a stem of
  twice the growth rate, transitions that keep the channel count, as in the plain DenseNet) with 4
  convolutions per dense block, which keeps the network small (0.14 M parameters for 10 classes) so that the
  45 training runs of one seed are affordable, while each dense block still concatenates several
  convolutions. Every width is an option.
- `densenet-bc-100`: DenseNet-BC with depth 100 and growth rate 12 (16 bottleneck layers per dense
  block, transitions that halve the channels): about 0.8 M parameters, as published. Its natural
  units are the method layers: stem, dense block, transition, dense block, transition, dense
  block (L_H = 6). With `bottleneck_layers = true` every bottleneck layer counts as a layer
  instead (L_H = 51: stem, 16, transition, 16, transition, 16).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..net import LayeredNet


def bn_relu_conv(cin: int, cout: int, kernel: int) -> list:
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)]


class Grow(nn.Module):
    """One layer of a dense block: new feature maps made from the input, appended to it."""

    def __init__(self, cin: int, growth: int, bottleneck: bool):
        super().__init__()
        # The bottleneck (DenseNet-B) first narrows the input to 4 * growth maps with a 1x1 conv.
        parts = bn_relu_conv(cin, 4 * growth, 1) + bn_relu_conv(4 * growth, growth, 3) if bottleneck \
            else bn_relu_conv(cin, growth, 3)
        self.make = nn.Sequential(*parts)
        self.out_channels = cin + growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.make(x)], 1)


def dense_block(cin: int, convs: int, growth: int, bottleneck: bool) -> list:
    """The `convs` layers of a dense block, as a list; the last one's `out_channels` is the block's."""
    layers = []
    for _ in range(convs):
        layers.append(Grow(cin, growth, bottleneck))
        cin = layers[-1].out_channels
    return layers


def transition(cin: int, cout: int) -> nn.Sequential:
    """Down-sampling between dense blocks: 1x1 convolution to `cout` maps, 2x2 average pooling."""
    return nn.Sequential(*bn_relu_conv(cin, cout, 1), nn.AvgPool2d(2))


def bn_relu_pool(channels: int) -> list:
    """What ends a DenseNet's features: batch norm, ReLU, global average pooling, flattening."""
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def finish(layer: nn.Module, channels: int) -> nn.Sequential:
    """The last body layer with `bn_relu_pool` appended, so the head is a linear layer alone."""
    parts = list(layer) if isinstance(layer, nn.Sequential) else [layer]
    return nn.Sequential(*parts, *bn_relu_pool(channels))


def linear_head(features: int, num_outputs: int) -> nn.Linear:
    head = nn.Linear(features, num_outputs)
    nn.init.zeros_(head.bias)
    return head


def init_weights(net: nn.Module) -> nn.Module:
    """DenseNet's initialisation (He normal for convolutions, scaled by fan-out as in the
    original Lua code; batch norm as identity)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def densenet(input_shape, num_outputs: int, blocks, growth: int, stem: int, bottleneck: bool,
             compression: float, split_blocks: bool) -> LayeredNet:
    """Stem convolution, then dense blocks of `blocks[i]` layers with transitions between them.
    Each block is one method layer, or (`split_blocks`) each of its layers is."""
    c = stem
    layers = [nn.Conv2d(input_shape[0], stem, 3, padding=1, bias=False)]
    for i, convs in enumerate(blocks):
        if i:
            out = int(c * compression)
            layers.append(transition(c, out))
            c = out
        block = dense_block(c, convs, growth, bottleneck)
        layers += block if split_blocks else [nn.Sequential(*block)]
        c = block[-1].out_channels
    layers[-1] = finish(layers[-1], c)
    make_head = partial(linear_head, c)
    return LayeredNet([init_weights(layer) for layer in layers], make_head(num_outputs), make_head)


def densenet6(input_shape, num_outputs: int, growth: int = 12, convs: int = 4, stem: int = 24,
              compression: float = 1.0) -> LayeredNet:
    """The paper's six-layer DenseNet (widths our own; see the module docstring)."""
    return densenet(input_shape, num_outputs, [convs] * 3, growth, stem, bottleneck=False,
                    compression=compression, split_blocks=False)


def densenet_bc_100(input_shape, num_outputs: int, growth: int = 12, bottleneck_layers: bool = False) -> LayeredNet:
    """DenseNet-BC, depth 100: (100 - 4) / 6 = 16 bottleneck layers per dense block."""
    return densenet(input_shape, num_outputs, [16] * 3, growth, 2 * growth, bottleneck=True,
                    compression=0.5, split_blocks=bottleneck_layers)
