"""Any module as a layered network: cut at named submodules, checked against its own output."""

import pytest
import torch
from torch import nn

from layerwise.errors import UserError
from layerwise.net import LayeredNet
from layerwise.nets.cuts import CUTS
from layerwise.transfer import transfer
from torchvision_like import VGG, AlexNet, ResNet, TimmResNet


def example(*shape):
    return torch.randn(4, *shape)


def trained_statistics(module, x):
    """Move batch-norm statistics off their defaults, so evaluation mode computes something real."""
    module.train()
    with torch.no_grad():
        module(x)
    return module.eval()


def test_resnet_split_at_its_stages_reproduces_its_own_output():
    x = example(1, 32, 32)
    resnet = trained_statistics(ResNet(in_channels=1), x)
    net = LayeredNet.from_module(resnet, CUTS["resnet"], x)
    assert net.num_layers == 5
    assert [list(dict(layer.named_children())) for layer in net.layers][1:4] == [["layer1"], ["layer2"], ["layer3"]]
    assert torch.equal(net.eval()(x), resnet(x))
    assert net.features(x).shape == (4, 16)  # torch.flatten in ResNet.forward became part of the last stage
    assert net.layers[0][0] is resnet.conv1  # the module's own submodules, not copies


def test_timm_resnet_splits_at_its_own_names():
    x = example(1, 32, 32)
    resnet = trained_statistics(TimmResNet(in_channels=1), x)
    net = LayeredNet.from_module(resnet, CUTS["timm-resnet"], x)
    assert net.num_layers == 5 and torch.equal(net.eval()(x), resnet(x))


@pytest.mark.parametrize("name, model", [("vgg11", lambda: VGG((1, 1, 2, 2, 2))),
                                         ("vgg16_bn", lambda: VGG((2, 2, 3, 3, 3), batch_norm=True)),
                                         ("alexnet", lambda: AlexNet())])
def test_shipped_cut_lists_reproduce_vgg_and_alexnet(name, model):
    x = example(3, 64, 64) if name == "alexnet" else example(3, 32, 32)
    module = trained_statistics(model(), x)
    net = LayeredNet.from_module(module, CUTS[name], x)
    assert net.num_layers == 7
    assert torch.allclose(net.eval()(x), module(x))
    assert isinstance(net.layers[-2][0], nn.Linear if name != "alexnet" else nn.Dropout)


def test_a_cut_module_transfers_with_a_fresh_linear_head():
    x = example(1, 32, 32)
    net = LayeredNet.from_module(ResNet(in_channels=1), CUTS["resnet"], x)
    moved = transfer(net, 3, frozen=2)
    assert isinstance(moved.head, nn.Linear) and moved.head.out_features == 3
    assert moved(x).shape == (4, 3)
    assert not any(p.requires_grad for p in moved.layers[1].parameters())


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.d(self.c(self.b(h) + h))


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_a_skip_connection_across_a_cut_is_refused_by_name():
    with pytest.raises(UserError, match=r"body layer 2 of 2 .*'c' does not receive the output of 'b'"):
        LayeredNet.from_module(Skip(), ["a", "c"], example(4))


def test_a_function_between_submodules_is_refused_by_name():
    with pytest.raises(UserError, match=r"the output layer .*'fc' does not receive the output of 'conv'"):
        LayeredNet.from_module(Pooled(), ["conv"], example(1, 6, 6))


def test_a_cut_inside_a_block_that_reuses_a_module_is_refused():
    x = example(1, 32, 32)
    with pytest.raises(UserError, match=r"'layer1.0.relu' runs more than once"):
        LayeredNet.from_module(ResNet(in_channels=1), ["maxpool", "layer1.0.bn1", "layer2"], x)


def test_unknown_and_unordered_cuts_are_named():
    x = example(1, 32, 32)
    with pytest.raises(UserError, match=r"at 'layer9': it has no submodule of that name; its top-level submodules: conv1"):
        LayeredNet.from_module(ResNet(in_channels=1), ["layer1", "layer9"], x)
    with pytest.raises(UserError, match=r"execution order, which is \['layer1', 'layer2'\]"):
        LayeredNet.from_module(ResNet(in_channels=1), ["layer2", "layer1"], x)


class TrainingOnly(nn.Module):
    """A chain in evaluation mode; in training mode something between `a` and `b` is not a submodule."""

    def __init__(self, between):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.between = between

    def forward(self, x):
        return self.c(self.b(self.between(self, self.a(x))))


def test_functional_dropout_between_submodules_is_refused_as_training_only():
    dropout = TrainingOnly(lambda m, h: nn.functional.dropout(h, 0.5, m.training))
    with pytest.raises(UserError, match=r"'b' does not receive the output of 'a'.*in training mode.*nn\.Dropout"):
        LayeredNet.from_module(dropout, ["a", "b"], example(4))


def test_a_detach_between_submodules_is_refused_as_cutting_the_gradient():
    detached = TrainingOnly(lambda m, h: h.detach())
    with pytest.raises(UserError, match=r"'b' receives the output of 'a' cut off from autograd"):
        LayeredNet.from_module(detached, ["a", "b"], example(4))


def test_a_dropout_submodule_is_a_chain_in_training_mode_too():
    net = LayeredNet.from_module(TrainingOnly(lambda m, h: h), ["a", "b"], example(4))
    assert net.num_layers == 2


def test_cuts_given_as_a_string_are_refused_and_cutting_leaves_the_module_as_it_was():
    x = example(1, 32, 32)
    resnet = trained_statistics(ResNet(in_channels=1), x)
    state = {k: v.clone() for k, v in resnet.state_dict().items()}
    net = LayeredNet.from_module(resnet, CUTS["resnet"], x)
    assert net.num_layers == 5 and torch.equal(net.eval()(x), resnet(x))
    assert all(torch.equal(v, state[k]) for k, v in resnet.state_dict().items())  # batch norm stats untouched
    with pytest.raises(UserError, match=r"at 'resnet': cuts must be a list of submodule names, not a string.*CUTS"):
        LayeredNet.from_module(resnet, "resnet", x)
