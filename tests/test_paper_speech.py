"""`layerwise run paper-speech` end to end on tiny fake corpora, on the CPU, in seconds."""

import csv

from layerwise.cli import main
from layerwise.config import load_config
from speech_corpora import write_iemocap, write_timit

TINY = ["--set", "train.epochs=1", "--set", "train.device=cpu", "--set", "train.amp=false",
        "--set", "train.batch_size=64", "--quiet"]
for arch in ("model-a", "model-b"):
    TINY += ["--set", f"arch_options.{arch}.width=4", "--set", f"arch_options.{arch}.hidden=16"]


def test_paper_speech_config_is_both_directions_both_models_every_lc():
    cfg = load_config("paper-speech")
    assert cfg.tasks == ["timit", "iemocap"] and cfg.archs == ["model-a", "model-b"]
    assert sorted(map(tuple, cfg.pairs)) == [("iemocap", "timit"), ("timit", "iemocap")]
    assert cfg.frozen == "all" and cfg.report.panels == "pair-arch"
    assert cfg.task("timit").input_shape == cfg.task("iemocap").input_shape


def test_paper_speech_runs_through_the_command_line(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_timit(data / "timit")  # found through $LAYERWISE_DATA
    write_iemocap(tmp_path / "elsewhere")  # found through its root option
    monkeypatch.setenv("LAYERWISE_DATA", str(data))
    out = tmp_path / "run"
    code = main(["run", "paper-speech", "--out", str(out),
                 "--set", f"task_options.iemocap.root={tmp_path / 'elsewhere'}"] + TINY)
    assert code == 0, capsys.readouterr().err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    test = [r for r in rows if r["split"] == "test"]
    for arch, depth in (("model-a", 6), ("model-b", 8)):
        for source, target, metric in (("timit", "iemocap", "ue"), ("iemocap", "timit", "per")):
            frozen = {int(r["frozen"]) for r in test if r["arch"] == arch and r["source"] == source
                      and r["target"] == target and r["metric"] == metric}
            assert frozen == set(range(depth + 1))
    assert {r["metric"] for r in test} >= {"per", "fer", "ue", "wa"}
    assert (out / "report.html").exists() and any(out.glob("*.png"))
    assert (data / "cache").is_dir() and sorted(p.name for p in (data / "timit").iterdir()) == ["TEST", "TRAIN"]


def test_a_missing_corpus_is_one_line_naming_path_and_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path))
    code = main(["run", "paper-speech", "--out", str(tmp_path / "run")] + TINY)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert str(tmp_path / "timit") in err and "TRAIN/ and TEST/" in err and "task_options.timit" in err
