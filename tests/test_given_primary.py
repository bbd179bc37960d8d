"""A given primary: loaded from a checkpoint (or built by a callable), never trained."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from layerwise.cli import main
from layerwise.config import config_from_dict
from layerwise.sweep import Sweep


def transfers(out, source, target):
    """{(seed, l_c): (val, test)} of the transfers from `source` to `target` recorded in `out`."""
    found = {}
    for path in (out / "jobs").glob("*.json"):
        r = json.loads(path.read_text())
        if r["kind"] == "transfer" and r["source"] == source and r["target"] == target:
            found[r["seed"], r["frozen"]] = (r["val"], r["test"])
    return found


def primary_checkpoint(out, task):
    """The checkpoint a sweep saved for its primary of `task`."""
    key = next(json.loads(p.read_text())["key"] for p in (out / "jobs").glob("*.json")
               if json.loads(p.read_text())["kind"] == "scratch" and json.loads(p.read_text())["target"] == task)
    return out / "checkpoints" / f"{key}.safetensors"


def given_config(tiny_raw, checkpoint, **primary):
    raw = {**tiny_raw, "tasks": ["printed-digits"],
           "primary": {"checkpoint": str(checkpoint), "arch": "alexnet-small", "name": "digits", **primary}}
    return raw


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny sweep that trained its own primaries (both directions)."""
    from conftest import TINY

    out = tmp_path_factory.mktemp("trained")
    Sweep(config_from_dict(TINY, "tiny.toml"), out, progress=False).run()
    return out


def test_a_checkpoint_saved_by_one_run_is_the_given_primary_of_another(trained, tiny_raw, tmp_path):
    cfg = config_from_dict(given_config(tiny_raw, primary_checkpoint(trained, "digits")), "given.toml")
    Sweep(cfg, tmp_path, progress=False).run()
    expected = transfers(trained, "digits", "printed-digits")
    assert len(expected) == 3
    assert transfers(tmp_path, "digits", "printed-digits") == expected
    records = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*.json")]
    assert sorted(r["kind"] for r in records) == ["given", "scratch", "transfer", "transfer", "transfer"]
    baseline = next(r for r in records if r["kind"] == "scratch")
    assert (trained / "jobs" / f"{baseline['key']}.json").exists()  # the same baseline job as the trained run's


def test_freeze_prints_the_advice_from_a_checkpoint(trained, tmp_path, capsys):
    ckpt = primary_checkpoint(trained, "digits")
    code = main(["freeze", "--model", str(ckpt), "--arch", "alexnet-small", "--data", "printed-digits",
                 "--out", str(tmp_path / "run"), "--quiet", "--set", "train.epochs=2",
                 "--set", "arch_options.alexnet-small.width=4", "--set", "arch_options.alexnet-small.hidden=16",
                 "--set", "task_options.printed-digits.per_class=20", "--set", "frozen=[0,2,6]"])
    printed = capsys.readouterr().out
    assert code == 0
    advice = json.loads((tmp_path / "run" / "observations.json").read_text())["what_to_freeze"]
    assert len(advice) == 1 and advice[0]["source"] == ckpt.stem and advice[0]["target"] == "printed-digits"
    assert f"l_c = {advice[0]['frozen']}" in printed
    assert (tmp_path / "run" / "curves.png").exists()


@pytest.fixture
def checkpoint(trained):
    return load_file(str(primary_checkpoint(trained, "digits")))


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("layers.0.0.weight"), r"missing keys layers\.0\.0\.weight$"),
    (lambda s: s.update(extra=torch.zeros(2)), r"unexpected keys extra$"),
    (lambda s: s.update({"head.bias": torch.zeros(3)}), r"shapes differ: head\.bias is \[3\] in the checkpoint, \[10\] in the model$"),
])
def test_a_checkpoint_that_does_not_fit_is_named_in_one_line(checkpoint, change, message, tiny_raw, tmp_path, capsys):
    change(checkpoint)
    save_file(checkpoint, str(tmp_path / "bad.safetensors"))
    (tmp_path / "given.toml").write_text(toml_of(given_config(tiny_raw, "bad.safetensors")))
    code = main(["run", str(tmp_path / "given.toml"), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"checkpoint {tmp_path / 'bad.safetensors'} does not fit arch 'alexnet-small' with 10 outputs" in err
    assert __import__("re").search(message, err)


def test_a_checkpoint_with_nan_weights_is_named_not_trained_as_a_divergence(checkpoint, tiny_raw, tmp_path, capsys):
    checkpoint["layers.0.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(checkpoint, str(tmp_path / "nan.safetensors"))
    (tmp_path / "given.toml").write_text(toml_of(given_config(tiny_raw, "nan.safetensors")))
    code = main(["run", str(tmp_path / "given.toml"), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "diverged" in err  # "a model saved after it diverged?"
    assert f"checkpoint {tmp_path / 'nan.safetensors'} holds NaN or inf in layers.0.0.weight" in err
    assert not (tmp_path / "run" / "jobs").exists() or not list((tmp_path / "run" / "jobs").iterdir())


class Payload:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_is_refused_not_run(tmp_path, tiny_raw, capsys):
    torch.save({"weights": Payload(tmp_path / "ran")}, tmp_path / "model.pt")
    (tmp_path / "given.toml").write_text(toml_of(given_config(tiny_raw, "model.pt")))
    code = main(["run", str(tmp_path / "given.toml"), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot read checkpoint {tmp_path / 'model.pt'} as weights only" in err
    assert not (tmp_path / "ran").exists()


def toml_of(raw):
    """Just enough TOML for these configs (strings, numbers, lists, one level of tables)."""
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()
    top = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    tables = []
    for k, v in raw.items():
        if isinstance(v, dict):
            tables.append(f"[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items() if not isinstance(vv, dict)))
            for kk, vv in v.items():
                if isinstance(vv, dict):
                    tables.append(f"[{k}.\"{kk}\"]\n" + "\n".join(f"{a} = {value(b)}" for a, b in vv.items()))
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


def test_a_module_built_by_a_callable_and_cut_by_its_family_is_a_given_primary(tiny_raw, tmp_path):
    from torchvision_like import resnet18_like

    weights = resnet18_like().state_dict()
    torch.save(weights, tmp_path / "resnet.pt")
    raw = {**tiny_raw, "tasks": ["printed-digits"], "frozen": [0, 5], "train": {"epochs": 1, "batch_size": 64},
           "primary": {"arch": "torchvision_like:resnet18_like", "checkpoint": str(tmp_path / "resnet.pt")}}
    del raw["arch_options"], raw["archs"]
    Sweep(config_from_dict(raw, "given.toml"), tmp_path / "run", progress=False).run()
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "jobs").glob("*.json")]
    assert {(r["kind"], r["source"], r["frozen"], r["status"], r["num_layers"]) for r in records} == {
        ("given", None, None, "ok", 5), ("scratch", None, None, "ok", 5),
        ("transfer", "resnet", 0, "ok", 5), ("transfer", "resnet", 5, "ok", 5)}
    given = next(r for r in records if r["kind"] == "given")
    kept = load_file(str(tmp_path / "run" / "checkpoints" / f"{given['key']}.safetensors"))
    assert torch.equal(kept["layers.0.conv1.weight"], weights["conv1.weight"])
    assert torch.equal(kept["head.fc.weight"], weights["fc.weight"])


class Gain(torch.nn.Module):
    """A layer of one's own, with a parameter and no reset_parameters()."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.gain


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 8), torch.nn.ReLU())
        self.scale = Gain()
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.scale(self.body(x)))


def test_an_architecture_that_cannot_be_reset_asks_for_no_baseline(tiny_raw, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    raw = {**tiny_raw, "tasks": ["printed-digits"], "frozen": [0, 2],
           "primary": {"arch": "test_given_primary:Scaled", "cuts": ["body", "scale"]}}
    del raw["arch_options"], raw["archs"]
    (tmp_path / "given.toml").write_text(toml_of(raw))
    code = main(["run", str(tmp_path / "given.toml"), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "submodule 'scale' (Gain) has parameters but no reset_parameters()" in err
    assert "set baseline = false in [primary]" in err
    raw["primary"]["baseline"] = False
    (tmp_path / "given.toml").write_text(toml_of(raw))
    assert main(["run", str(tmp_path / "given.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    kinds = sorted(json.loads(p.read_text())["kind"] for p in (tmp_path / "run" / "jobs").glob("*.json"))
    assert kinds == ["given", "transfer", "transfer"]
    assert "<b>No baseline:</b>" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--model", "nowhere.safetensors", "--arch", "alexnet-small"], "checkpoint {tmp}/nowhere.safetensors does not exist"),
    (["--arch", "torchvision_like:resnet18_like", "--cuts", "layer2", "layer1"],
     "cannot cut ResNet: the cuts must be in execution order, which is ['layer1', 'layer2']"),
    (["--arch", "torchvision_like:no_such_function"], "torchvision_like has no function 'no_such_function'"),
])
def test_freeze_names_what_is_wrong_in_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["freeze", *args, "--data", "printed-digits", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "runs").exists()


def test_freeze_takes_a_folder_of_arrays_as_its_data(trained, tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x=rng.random((120, 1, 16, 16), dtype=np.float32), y=rng.integers(0, 3, 120))
    code = main(["freeze", "--model", str(primary_checkpoint(trained, "digits")), "--arch", "alexnet-small",
                 "--name", "digits", "--data", str(tmp_path / "mine.npz"), "--out", str(tmp_path / "run"), "--quiet",
                 "--seeds", "1", "--set", "train.epochs=1", "--set", "frozen=[0,6]",
                 "--set", "arch_options.alexnet-small.width=4", "--set", "arch_options.alexnet-small.hidden=16"])
    printed = capsys.readouterr().out
    assert code == 0 and "digits → mine (alexnet-small, L_H = 6)" in printed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tasks"] == ["mine"] and config["data"]["mine"]["kind"] == "arrays"


def test_freeze_names_data_that_is_neither_a_task_nor_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["freeze", "--model", "m.safetensors", "--arch", "alexnet-small", "--data", "nowhere"]) == 2
    assert "--data 'nowhere' is neither a registered task (" in capsys.readouterr().err


def test_a_given_primary_on_ray_gives_the_transfers_of_the_local_executor(trained, tiny_raw, tmp_path, data_dir):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'layerwise[ray]')")
    from layerwise.executors import connect

    raw = {**given_config(tiny_raw, primary_checkpoint(trained, "digits")), "threads": 1}
    Sweep(config_from_dict(raw, "given.toml"), tmp_path / "local", progress=False).run()
    connect(ray, None, num_cpus=2, include_dashboard=False)
    try:
        Sweep(config_from_dict({**raw, "executor": "ray"}, "given.toml"), tmp_path / "ray", progress=False).run()
    finally:
        ray.shutdown()
    assert transfers(tmp_path / "ray", "digits", "printed-digits") == transfers(tmp_path / "local", "digits", "printed-digits")
    assert len(transfers(tmp_path / "ray", "digits", "printed-digits")) == 3
