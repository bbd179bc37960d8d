"""Linear CKA and the per-layer similarity of a transfer to its primary."""

import pytest
import torch

from layerwise import transfer
from layerwise.nets import ARCHS
from layerwise.similarity import layer_similarity, linear_cka
from layerwise.train import TrainConfig, fit

from test_transfer import Random, random_data


def test_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    x = torch.randn(100, 20)
    q, _ = torch.linalg.qr(torch.randn(20, 20))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0)  # centred: offsets do not count


def test_cka_of_unrelated_representations_is_small():
    g = torch.Generator().manual_seed(0)
    assert linear_cka(torch.randn(500, 10, generator=g), torch.randn(500, 10, generator=g)) < 0.1


def test_cka_handles_feature_maps_and_a_constant_representation():
    x = torch.randn(30, 4, 3, 3)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, torch.ones(30, 5)) == 0.0


def test_frozen_layers_score_one_and_fine_tuned_layers_move_away():
    torch.manual_seed(0)
    primary = ARCHS["vgg-small"]((1, 16, 16), 10, width=4, hidden=16)
    net = transfer(primary, 3, 2)
    data = random_data()
    assert layer_similarity(primary, net, data.test.x) == pytest.approx([1.0] * 6)
    fit(net, Random(), data, TrainConfig(epochs=3, lr=0.05), seed=0)
    after = layer_similarity(primary, net, data.test.x)
    assert after[:2] == [1.0, 1.0]
    assert all(s < 1 - 1e-6 for s in after[2:])
    net.train()
    layer_similarity(primary, net, data.test.x)
    assert net.head.training and net.layers[2].training and not net.layers[0].training  # modes restored
