"""The method itself: copy, re-head, freeze."""

import pytest
import torch
from torch import nn

from layerwise import LayeredNet, UserError, transfer
from layerwise.nets import ARCHS
from layerwise.tasks.base import Split, Task, TaskData
from layerwise.train import TrainConfig, fit


class Random(Task):
    """Random inputs and labels, just enough to take optimizer steps."""

    name = "random"
    num_classes = 3

    @property
    def input_shape(self):
        return (1, 16, 16)


def random_data(n=96, classes=3):
    g = torch.Generator().manual_seed(1)
    split = lambda: Split(torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, classes, (n,), generator=g))  # noqa: E731
    return TaskData(split(), split(), split())


def primary(arch="alexnet-small"):
    torch.manual_seed(0)
    return ARCHS[arch]((1, 16, 16), 10, width=4, hidden=16)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", sorted(ARCHS.keys() & {"alexnet-small", "vgg-small"}))
@pytest.mark.parametrize("frozen", [0, 2, "all"])
def test_frozen_layers_do_not_change_while_the_rest_trains(arch, frozen):
    source = primary(arch)
    frozen = source.num_layers if frozen == "all" else frozen
    net = transfer(source, 3, frozen)
    before = [state(layer) for layer in net.layers]
    head_before = state(net.head)
    fit(net, Random(), random_data(), TrainConfig(epochs=2, batch_size=32, lr=0.01), seed=0)
    for i, layer in enumerate(net.layers):
        after = state(layer)
        same = all(torch.equal(before[i][k], after[k]) for k in after)
        # parameters and normalisation buffers (running mean/var, batch counts) alike
        assert same == (i < frozen), f"layer {i} with l_c={frozen}"
    assert any(not torch.equal(head_before[k], v) for k, v in state(net.head).items())


def test_frozen_layers_stay_in_eval_mode_after_train():
    net = transfer(primary(), 3, 3)
    net.train()
    for i, layer in enumerate(net.layers):
        assert all(m.training == (i >= 3) for m in layer.modules()), i
    assert net.head.training
    net.eval()
    assert not any(m.training for m in net.modules())


def test_frozen_parameters_need_no_grad_and_never_reach_the_optimizer(monkeypatch):
    net = transfer(primary(), 3, 4)
    frozen = {id(p) for layer in net.layers[:4] for p in layer.parameters()}
    assert all(not p.requires_grad for layer in net.layers[:4] for p in layer.parameters())
    seen = []
    import layerwise.train as train

    real = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda params, cfg: seen.append(list(params)) or real(seen[-1], cfg))
    fit(net, Random(), random_data(), TrainConfig(epochs=1), seed=0)
    ids = {id(p) for p in seen[0]}
    assert ids and not ids & frozen
    assert ids == {id(p) for p in net.parameters() if p.requires_grad}


def test_lc_zero_trains_every_layer_and_lc_max_only_the_head():
    net = transfer(primary(), 3, 0)
    assert all(p.requires_grad for p in net.parameters())
    top = transfer(primary(), 3, primary().num_layers)
    assert [p.requires_grad for p in top.parameters()] == [False] * sum(1 for _ in top.layers.parameters()) + [True] * 2


def test_transfer_copies_the_body_and_leaves_the_primary_untouched():
    source = primary()
    before = state(source)
    net = transfer(source, 3, 2)
    shared = {p.data_ptr() for p in source.parameters()} & {p.data_ptr() for p in net.parameters()}
    assert not shared
    assert net.head.out_features == 3 and source.head.out_features == 10
    fit(net, Random(), random_data(), TrainConfig(epochs=1, lr=0.05), seed=0)
    assert all(torch.equal(before[k], v) for k, v in state(source).items())
    # the copied body starts out identical to the primary's
    fresh = transfer(source, 3, 2)
    assert all(torch.equal(a, b) for a, b in zip(fresh.layers.state_dict().values(), source.layers.state_dict().values()))


@pytest.mark.parametrize("bad", [-1, 7, 2.5, True])
def test_frozen_out_of_range_says_the_valid_range(bad):
    with pytest.raises(UserError, match=r"0\.\.6"):
        transfer(primary(), 3, bad)


def test_features_runs_the_first_k_layers():
    net = primary().eval()
    x = torch.randn(2, 1, 16, 16)
    manual = net.layers[1](net.layers[0](x))
    assert torch.equal(net.features(x, upto=2), manual)
    assert torch.equal(net.features(manual, start=2), net.features(x))
    assert torch.equal(net(x), net.head(net.features(x)))


def test_a_net_without_a_head_builder_cannot_be_transferred():
    net = LayeredNet([nn.Linear(4, 4)], nn.Linear(4, 2))
    with pytest.raises(ValueError, match="head builder"):
        transfer(net, 3, 0)
