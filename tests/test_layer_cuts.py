"""The cut rule (net.py): every registered family cuts its layers the same way."""

import pytest
import torch
from torch import nn

from layerwise.nets import ARCHS

SHAPES = {"alexnet-small": (1, 16, 16), "vgg-small": (1, 16, 16), "model-a": (1, 40, 21),
          "model-b": (1, 40, 21), "densenet6": (3, 32, 32), "densenet-bc-100": (3, 32, 32)}


def leaves(module: nn.Module) -> list:
    """The modules of a layer that hold no others, in the order they were added (and run)."""
    return [m for m in module.modules() if not list(m.children())]


def test_every_registered_family_is_covered():
    assert set(SHAPES) == set(ARCHS)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_head_is_a_single_linear_layer_and_so_is_a_fresh_one(name):
    net = ARCHS[name](SHAPES[name], 10)
    assert type(net.head) is nn.Linear and net.head.out_features == 10
    fresh = net.make_head(7)
    assert type(fresh) is nn.Linear and fresh.in_features == net.head.in_features == net.features(
        torch.zeros(2, *SHAPES[name])).flatten(1).shape[1]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_dropout_starts_the_layer_that_consumes_it_and_never_ends_a_layer(name):
    net = ARCHS[name](SHAPES[name], 10)
    for i, layer in enumerate(net.layers):
        parts = leaves(layer)
        assert not isinstance(parts[-1], nn.Dropout), f"{name} layer {i} ends with dropout"
        for j, part in enumerate(parts):
            if isinstance(part, nn.Dropout):
                assert isinstance(parts[j + 1], nn.Linear), f"{name} layer {i}: dropout before {parts[j + 1]}"


def test_the_fully_connected_families_do_have_dropout_where_the_rule_puts_it():
    # Guards the test above against passing because no family has dropout at all.
    for name in ("alexnet-small", "vgg-small", "model-a", "model-b"):
        net = ARCHS[name](SHAPES[name], 10)
        for layer in net.layers:
            if any(isinstance(m, nn.Linear) for m in layer.modules()):
                assert [type(m) for m in leaves(layer) if not isinstance(m, nn.Flatten)][:2] == [nn.Dropout, nn.Linear]

