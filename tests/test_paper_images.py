"""The paper's image experiment, end to end through the command line, on tiny official-format files."""

import csv
import json

import pytest

from layerwise.cli import main
from layerwise.config import load_config

from image_files import write_all

TINY = [
    # the data: tiny files, not the official ones, so no checksum; small validation splits
    *[f"task_options.{t}.{k}" for t in ("cifar10", "cifar100", "svhn") for k in ("verify=false", "val_size=20")],
    # a tiny DenseNet of the same six-layer structure, one epoch
    "arch_options.densenet6.growth=2", "arch_options.densenet6.convs=1", "arch_options.densenet6.stem=4",
    "train.epochs=1", "train.batch_size=32", "train.device=cpu", "seeds=[0]",
]


def test_paper_images_defaults_to_three_seeds_and_the_single_recipe():
    cfg = load_config("paper-images")
    assert cfg.seeds == [0, 1, 2] and cfg.train.finetune_lr is None


@pytest.mark.slow
def test_paper_images_runs_every_ordered_pair_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_DATA", str(write_all(tmp_path / "data")))
    out = tmp_path / "run"
    args = ["run", "paper-images", "--out", str(out), "--quiet"]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    transfers = {(r["source"], r["target"], r["frozen"]) for r in rows if r["source"] not in ("", r["target"])}
    tasks = ("cifar10", "cifar100", "svhn")
    assert transfers == {(a, b, k) for a in tasks for b in tasks if a != b for k in map(str, range(7))}
    assert {r["arch"] for r in rows} == {"densenet6"}
    assert (out / "report.html").is_file()
    # SVHN is not augmented, so transfers into it train on the cached outputs of the frozen layers;
    # CIFAR is, so its transfers run the frozen layers on every augmented batch.
    records = [json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")]
    cached = {(r["target"], r["cached_prefix"]) for r in records if r["kind"] == "transfer" and r["frozen"] > 0}
    assert cached == {("svhn", True), ("cifar10", False), ("cifar100", False)}


def test_paper_images_says_how_to_fetch_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path))
    assert main(["run", "paper-images", "--out", str(tmp_path / "run"), "--quiet", "--set", "train.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-python.tar.gz not found in " + str(tmp_path / "cifar10") in err
    assert "layerwise fetch cifar10" in err
