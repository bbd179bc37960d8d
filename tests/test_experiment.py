"""Running an experiment from Python with your own layers and tensors."""

import csv
import json

import pytest
import torch
from torch import nn

from layerwise import LayeredNet, TensorTask, TrainConfig, UserError, run_experiment


def mlp(input_shape, num_outputs, hidden=16):
    make_head = lambda n: nn.Linear(hidden, n)  # noqa: E731
    layers = [nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.ReLU()),
              nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())]
    return LayeredNet(layers, make_head(num_outputs), make_head)


def blobs(seed, classes, n=60, dim=5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def task(name, seed, classes):
    return TensorTask(name, blobs(seed, classes), blobs(seed + 100, classes), blobs(seed + 200, classes))


def test_run_experiment_with_own_layers_and_tensors(tmp_path):
    tasks = {"three": task("three", 1, 3), "four": task("four", 2, 4)}
    report = run_experiment(tasks, {"mlp": mlp}, tmp_path / "run", seeds=[0],
                            train=TrainConfig(epochs=2, batch_size=16), progress=False)
    assert report.exists()
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert {(r["source"], r["target"], r["frozen"]) for r in rows if r["source"]} == \
        {("three", "four", "0"), ("three", "four", "1"), ("three", "four", "2"),
         ("four", "three", "0"), ("four", "three", "1"), ("four", "three", "2")}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tasks"] == ["three", "four"]


def test_different_tensors_under_one_name_are_different_jobs(tmp_path):
    a, b = task("t", 1, 3), task("t", 5, 3)
    assert a.identity() != b.identity()
    assert task("t", 1, 3).identity() == a.identity()


def test_unknown_names_are_reported(tmp_path):
    with pytest.raises(UserError, match="unknown architecture 'nope'"):
        run_experiment({"a": task("a", 1, 2)}, ["nope"], tmp_path)


def test_inconsistent_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        TensorTask("x", blobs(1, 2), blobs(2, 2, dim=4), blobs(3, 2))
