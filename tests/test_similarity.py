"""Linear CKA and the per-layer similarity of a transfer to its primary."""

import pytest
import torch

from layerwise import transfer
from layerwise.nets import ARCHS
from layerwise.similarity import layer_similarity, linear_cka, probe_sample
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


def test_the_probe_sample_is_seeded_distinct_and_sorted():
    a = probe_sample(1000, 50, seed=3)
    assert torch.equal(a, probe_sample(1000, 50, seed=3))
    assert not torch.equal(a, probe_sample(1000, 50, seed=4))
    assert len(set(a.tolist())) == 50 and torch.equal(a, a.sort().values)
    assert torch.equal(probe_sample(30, 50, seed=0), torch.arange(30))  # a small split: all of it


def test_the_probe_sample_spreads_evenly_over_groups_not_in_contiguous_runs():
    # 12 utterances of very different lengths, stored contiguously as windows are.
    sizes = [400, 3, 90, 250, 20, 7, 600, 45, 150, 10, 300, 125]
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    picked = probe_sample(len(groups), 60, seed=0, groups=groups)
    per_group = torch.bincount(groups[picked], minlength=len(sizes))
    # The 3-window utterance gives all it has; the other 57 spread over 11 groups: 5 or 6 each.
    assert per_group[1] == 3 and sorted(set(per_group.tolist()) - {3}) == [5, 6]
    assert (picked.diff() == 1).sum() < 10  # random windows of each utterance, not a run of them
    many = torch.arange(2000) // 2  # 1000 groups of 2, more groups than the sample
    assert torch.bincount(many[probe_sample(2000, 100, seed=1, groups=many)]).max() == 1
    assert torch.equal(picked, probe_sample(len(groups), 60, seed=0, groups=groups))


def test_the_frozen_prefix_run_once_gives_the_scores_of_running_each_network_whole():
    torch.manual_seed(0)
    primary = ARCHS["alexnet-small"]((1, 16, 16), 10, width=4, hidden=16)
    data = random_data()
    for frozen in (0, 2, 5):
        net = transfer(primary, 3, frozen)
        fit(net, Random(), data, TrainConfig(epochs=1, lr=0.05), seed=0)
        primary.eval(), net.eval()
        with torch.no_grad():
            whole = [linear_cka(primary.features(data.test.x, upto=i + 1), net.features(data.test.x, upto=i + 1))
                     for i in range(primary.num_layers)]
        expected = [1.0] * frozen + whole[frozen:]
        assert layer_similarity(primary, net, data.test.x) == pytest.approx(expected, abs=1e-6), frozen
