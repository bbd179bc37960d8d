"""The DenseNets: published size, the paper's six-layer structure, and use with the method."""

import torch
from torch import nn

from layerwise import count_parameters, transfer
from layerwise.nets import ARCHS
from layerwise.nets.densenet import Grow

CIFAR = (3, 32, 32)


def test_densenet_bc_100_has_the_published_parameter_count():
    # Huang et al. (2017), Table 2: DenseNet-BC (L=100, k=12) has 0.8M parameters. The exact
    # count for 10 classes, as the reference implementations report it, is 769,162.
    net = ARCHS["densenet-bc-100"](CIFAR, 10)
    assert count_parameters(net) == 769_162
    assert round(count_parameters(net) / 1e6, 1) == 0.8


def test_densenet_bc_100_is_cut_at_its_natural_units_or_at_every_bottleneck_layer():
    torch.manual_seed(0)
    units = ARCHS["densenet-bc-100"](CIFAR, 10)
    torch.manual_seed(0)
    fine = ARCHS["densenet-bc-100"](CIFAR, 10, bottleneck_layers=True)
    assert units.num_layers == 6  # stem, block, transition, block, transition, block
    assert fine.num_layers == 1 + 16 + 1 + 16 + 1 + 16
    grows = [sum(isinstance(m, Grow) for m in layer.modules()) for layer in fine.layers]
    assert sum(grows) == 48 and max(grows) == 1  # one bottleneck layer per method layer
    # The same network, only cut finer: same parameters, in the same order, same function.
    for a, b in zip(units.parameters(), fine.parameters()):
        assert a.shape == b.shape and torch.equal(a, b)
    x = torch.randn(2, *CIFAR)
    units.eval(), fine.eval()
    assert torch.allclose(units(x), fine(x), atol=1e-5)
    assert torch.allclose(units.features(x, upto=2), fine.features(x, upto=17), atol=1e-5)


def test_densenet6_has_six_layers_dense_blocks_at_2_4_6():
    net = ARCHS["densenet6"](CIFAR, 10, growth=12, convs=4, stem=24)
    assert net.num_layers == 6
    x = torch.randn(2, *CIFAR)
    shapes = [net.features(x, upto=k).shape[1:] for k in range(1, 7)]
    # the last layer ends with the final batch norm, ReLU and global average pooling
    assert shapes == [(24, 32, 32), (72, 32, 32), (72, 16, 16), (120, 16, 16), (120, 8, 8), (168,)]
    for i in (1, 3):  # dense blocks: each convolution's output is appended to its input
        block = net.layers[i]
        assert [type(m) for m in block] == [Grow] * 4
        inp = net.features(x, upto=i)
        assert torch.equal(net.features(x, upto=i + 1)[:, : inp.shape[1]], inp)  # the input is kept
    assert [type(m) for m in net.layers[5]] == [Grow] * 4 + [nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten]
    for i in (0, 2, 4):  # plain convolution blocks (the stem; 1x1 conv and down-sampling)
        assert not any(isinstance(m, Grow) for m in net.layers[i].modules())
    assert net(x).shape == (2, 10)


def test_densenet6_widths_are_options():
    small = ARCHS["densenet6"](CIFAR, 10, growth=4, convs=2, stem=8)
    assert small.features(torch.randn(1, *CIFAR)).shape[1] == 8 + 3 * 2 * 4
    assert count_parameters(small) < count_parameters(ARCHS["densenet6"](CIFAR, 10)) / 10


def test_a_densenet_transfers_with_a_fresh_head_and_a_frozen_prefix():
    primary = ARCHS["densenet6"](CIFAR, 10, growth=4, convs=2, stem=8)
    secondary = transfer(primary, 100, frozen=3)
    assert secondary(torch.randn(2, *CIFAR)).shape == (2, 100)
    assert isinstance(secondary.head, nn.Linear) and secondary.head.in_features == 8 + 3 * 2 * 4
    assert all(not p.requires_grad for layer in secondary.layers[:3] for p in layer.parameters())
    assert all(p.requires_grad for layer in secondary.layers[3:] for p in layer.parameters())
    secondary.train()
    assert not secondary.layers[2][0].training and secondary.layers[3][0].make[0].training


def test_a_densenet_gives_the_same_outputs_in_channels_last():
    net = ARCHS["densenet6"](CIFAR, 10, growth=4, convs=2, stem=8).eval()
    x = torch.randn(2, *CIFAR)
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    assert torch.allclose(net(x.to(memory_format=torch.channels_last)), expected, atol=1e-5)
