"""Training: reproducible, epoch chosen by validation, the schedule does what it says."""

import pytest
import torch

from layerwise.nets import ARCHS
from layerwise.train import TrainConfig, fit, lr_factor
from layerwise.tasks import TASKS

from test_transfer import Random, random_data


def small_net():
    return ARCHS["vgg-small"]((1, 16, 16), 3, width=4, hidden=16)


def test_the_same_seed_gives_the_same_numbers():
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        net = small_net()
        results.append((fit(net, Random(), random_data(), TrainConfig(epochs=2, lr=0.01), seed=3), net.state_dict()))
    (a, sa), (b, sb) = results
    assert a.history == b.history and a.test == b.test and a.best_epoch == b.best_epoch
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_different_seed_gives_different_numbers():
    runs = []
    for seed in (1, 2):
        torch.manual_seed(0)
        runs.append(fit(small_net(), Random(), random_data(), TrainConfig(epochs=1, lr=0.01), seed=seed).history)
    assert runs[0] != runs[1]


def test_the_epoch_is_chosen_by_the_validation_metric_and_its_weights_are_kept():
    torch.manual_seed(0)
    net = small_net()
    data = random_data()
    result = fit(net, Random(), data, TrainConfig(epochs=4, lr=0.05), seed=0)
    accs = [h["val_accuracy"] for h in result.history]
    assert result.best_epoch == accs.index(max(accs)) + 1
    assert result.val["accuracy"] == max(accs)
    from layerwise.train import evaluate

    # the net holds the chosen epoch's weights: re-evaluating validation gives the recorded value
    assert evaluate(net, Random(), data.val, TrainConfig()) == result.val


def test_lower_is_better_metrics_select_the_minimum():
    class RandomError(Random):
        metric = "error"
        lower_is_better = True

    torch.manual_seed(0)
    result = fit(small_net(), RandomError(), random_data(), TrainConfig(epochs=4, lr=0.05), seed=0)
    errors = [h["val_error"] for h in result.history]
    assert result.best_epoch == errors.index(min(errors)) + 1


def test_step_schedule_divides_at_the_milestones():
    cfg = TrainConfig(schedule="step", milestones=[0.5, 0.75], gamma=0.1)
    assert [lr_factor(cfg, p) for p in (0.0, 0.49, 0.5, 0.74, 0.75, 0.99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = TrainConfig(schedule="cosine")
    assert lr_factor(cos, 0) == 1 and lr_factor(cos, 0.5) == pytest.approx(0.5) and lr_factor(cos, 1) == pytest.approx(0)


def test_a_real_task_learns():
    task = TASKS["digits"]()
    torch.manual_seed(0)
    net = ARCHS["alexnet-small"](task.input_shape, task.num_classes)
    result = fit(net, task, task.load(), TrainConfig(epochs=2), seed=0)
    assert result.test["accuracy"] > 80  # chance is 10


def test_a_diverged_loss_stops_training_with_the_reason_and_the_epochs_it_ran():
    from layerwise.train import TrainingFailed

    torch.manual_seed(0)
    with pytest.raises(TrainingFailed, match=r"diverged \(nan\) in epoch 1.*train\.lr") as failed:
        fit(small_net(), Random(), random_data(), TrainConfig(epochs=3, lr=1e30, optimizer="sgd"), seed=0)
    assert [h["epoch"] for h in failed.value.history] == [1]  # stopped at the first epoch's check


def test_a_divergence_on_the_last_step_fails_the_training_instead_of_scoring_chance(monkeypatch):
    """The losses of the steps taken were finite; the state the job ends with is not."""
    from layerwise import train
    from layerwise.train import TrainingFailed

    real = train.make_optimizer

    def diverging_on_the_last_step(params, cfg):
        optimizer = real(params, cfg)

        def then_nan(optimizer, args, kwargs):
            with torch.no_grad():
                optimizer.param_groups[0]["params"][0].fill_(float("nan"))
        optimizer.register_step_post_hook(then_nan)
        return optimizer

    monkeypatch.setattr(train, "make_optimizer", diverging_on_the_last_step)
    data = random_data()
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=len(data.train))  # one step: the last one
    with pytest.raises(TrainingFailed, match=r"diverged in epoch 1: .* NaN or inf.*train\.lr") as failed:
        fit(small_net(), Random(), data, cfg, seed=0)
    assert [h["epoch"] for h in failed.value.history] == [1]


def test_a_batch_of_one_is_refused_by_name():
    from layerwise import UserError

    with pytest.raises(UserError, match=r"train\.batch_size must be at least 2.*got 1"):
        TrainConfig(batch_size=1)


@pytest.mark.parametrize("options, expected", [({}, torch.channels_last), ({"channels_last": True}, torch.channels_last),
                                               ({"channels_last": False}, torch.contiguous_format)])
def test_on_the_cpu_an_unset_channels_last_trains_channels_last_and_false_keeps_the_default_layout(options, expected):
    torch.manual_seed(0)
    net = small_net()
    fit(net, Random(), random_data(), TrainConfig(epochs=1, device="cpu", **options), seed=0)
    convs = [p for p in net.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=expected) for p in convs)


def test_a_job_in_channels_last_gives_the_same_bits_after_other_work():
    def trained(before: int):
        for _ in range(before):  # other training first, as a worker that ran other units would
            fit(small_net(), Random(), random_data(), TrainConfig(epochs=1, lr=0.02, batch_size=16), seed=1)
        torch.manual_seed(0)
        net = small_net()
        fit(net, Random(), random_data(), TrainConfig(epochs=2, lr=0.01, channels_last=True), seed=0)
        return net.state_dict()

    first, later = trained(0), trained(2)
    assert all(torch.equal(first[key], later[key]) for key in first)


def test_the_layout_changes_only_rounding():
    outcomes = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = small_net()
        fit(net, Random(), random_data(), TrainConfig(epochs=1, lr=0.01, channels_last=channels_last), seed=0)
        outcomes.append(net.state_dict())
    for key, value in outcomes[0].items():
        torch.testing.assert_close(outcomes[1][key], value, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("settings", [dict(optimizer="adam", weight_decay=0.01),
                                      dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-3)])
def test_the_fused_optimizer_takes_the_steps_of_torchs_default_one(settings):
    from layerwise.train import make_optimizer

    cfg = TrainConfig(lr=0.01, **settings)
    torch.manual_seed(0)
    nets = [small_net().eval(), small_net().eval()]  # no dropout: both see the same function
    nets[1].load_state_dict(nets[0].state_dict())
    reference = (torch.optim.SGD(nets[1].parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                 weight_decay=cfg.weight_decay)
                 if cfg.optimizer == "sgd" else torch.optim.Adam(nets[1].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay))
    optimizers = [make_optimizer(list(nets[0].parameters()), cfg), reference]
    x, y = random_data().train.x, random_data().train.y
    before = nets[0].layers[0][0].weight.detach().clone()
    for _ in range(5):
        for net, optimizer in zip(nets, optimizers):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    for (key, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[0].layers[0][0].weight, before)  # the steps did move the weights
