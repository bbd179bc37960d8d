"""The command line end to end, and every user mistake it must explain."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import cli_env
from layerwise.cli import main


def write_config(tmp_path, raw):
    lines = [f'name = "{raw["name"]}"', f"tasks = {json.dumps(raw['tasks'])}", f"archs = {json.dumps(raw['archs'])}",
             f"seeds = {raw['seeds']}", f"frozen = {json.dumps(raw['frozen'])}"]
    lines += [f"workers = {json.dumps(raw['workers'])}"] if "workers" in raw else []
    lines += ["[train]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in raw["train"].items()]
    for table in ("task_options", "arch_options"):
        for name, options in raw[table].items():
            lines.append(f'[{table}."{name}"]')
            lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def layerwise(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True, cwd=cwd,
                          env=cli_env())


def test_run_writes_results_and_report_and_a_rerun_resumes(tmp_path, tiny_raw):
    # three epochs at a higher rate: every baseline beats chance, so every figure has something to show
    config = write_config(tmp_path, tiny_raw)
    out = tmp_path / "run"
    done = layerwise("run", str(config), "--out", str(out), "--set", "train.epochs=3", "--set", "train.lr=0.01")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {"arch", "source", "target", "seed", "frozen", "split", "metric", "value"} <= set(rows[0])
    transfers = {(r["source"], r["target"], r["frozen"]) for r in rows if r["source"]}
    assert transfers == {(a, b, k) for a, b in [("digits", "printed-digits"), ("printed-digits", "digits")] for k in "026"}
    assert {(r["target"], r["frozen"]) for r in rows if not r["source"]} == {("digits", ""), ("printed-digits", "")}
    assert {r["split"] for r in rows} == {"val", "test"}
    for name in ("report.html", "curves.png", "transferability.png", "similarity.png", "asymmetry.csv", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 3
    assert len(list((out / "checkpoints").glob("*.safetensors"))) == 8

    only = tmp_path / "primaries"
    done = layerwise("run", str(config), "--out", str(only), "--set", "train.epochs=3", "--set", "train.lr=0.01", "--set", "checkpoints=primaries")
    assert done.returncode == 0, done.stderr
    assert len(list((only / "checkpoints").glob("*.safetensors"))) == 2 and len(list((only / "jobs").glob("*.json"))) == 8
    records = [json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")]
    for r in records:
        if r["kind"] == "transfer":  # each layer's CKA with the primary; frozen layers exactly 1
            assert len(r["similarity"]) == 6 and r["similarity"][:r["frozen"]] == [1.0] * r["frozen"]
            assert all(0 <= v <= 1 + 1e-9 for v in r["similarity"])
    html = (out / "report.html").read_text()
    assert "<h2>Asymmetry</h2>" in html and "curves.png" in html

    again = layerwise("run", str(config), "--out", str(out), "--set", "train.epochs=3", "--set", "train.lr=0.01")
    assert again.returncode == 0 and "8 already finished" in again.stderr and "0 to run" in again.stderr

    (out / "report.html").unlink()
    rebuilt = layerwise("report", str(out))
    assert rebuilt.returncode == 0 and (out / "report.html").exists()


def test_list_shows_tasks_and_architectures(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "digits" in text and "printed-letters" in text and "26" in text
    assert "alexnet-small" in text and "L_H=6" in text and "available" in text


def mistake(capsys, *argv):
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("layerwise: error: ") and "Traceback" not in err
    return err


def test_unknown_task_names_the_valid_ones(capsys, tmp_path, tiny_raw):
    config = write_config(tmp_path, tiny_raw)
    err = mistake(capsys, "run", str(config), "--set", 'tasks=["digits","mnist"]')
    assert "'mnist'" in err and "printed-letters" in err and str(config) in err


def test_unknown_architecture(capsys, tmp_path, tiny_raw):
    config = write_config(tmp_path, tiny_raw)
    err = mistake(capsys, "run", str(config), "--set", 'archs=["resnet"]')
    assert "'resnet'" in err and "vgg-small" in err


@pytest.mark.parametrize("override, words", [
    ("epochs=3", ["config key 'epochs'", "train"]),
    ("train.epoch=3", ["'epoch'", "[train]", "epochs"]),
    ("train.epochs=many", ["epochs must be an integer", "'many'"]),
    ("train.optimizer=rmsprop", ["optimizer must be one of adam, sgd", "rmsprop"]),
    ("task_options.digits.colour=1", ["'colour'", "size", "split_seed"]),
    ("frozen=[0,9]", ["frozen value 9", "alexnet-small", "0..6"]),
    ("seeds=[]", ["seeds must be a non-empty list"]),
    ("train.finetune_lr=-0.1", ["[train]", "finetune_lr must be a positive number", "-0.1"]),
    ("train.finetune_lr=fast", ["[train]", "finetune_lr must be a number", "'fast'"]),
    ("checkpoints=some", ["checkpoints must be one of all, primaries", "'some'"]),
    ('pairs=[["digits","digits"]]', ["transfers a task to itself"]),
])
def test_config_mistakes_name_the_key_and_what_is_valid(capsys, tmp_path, tiny_raw, override, words):
    config = write_config(tmp_path, tiny_raw)
    err = mistake(capsys, "run", str(config), "--set", override, "--out", str(tmp_path / "run"))
    for word in words:
        assert word in err


@pytest.mark.parametrize("override, words", [
    ("train.lr=-0.01", ["train.lr must be positive", "-0.01"]),
    ("train.lr=0", ["train.lr must be positive", "no weight ever changes"]),
    ("train.lr=nan", ["train.lr must be a finite number"]),
    ("train.epochs=0", ["train.epochs must be at least 1"]),
    ("train.momentum=-0.9", ["train.momentum must be at least 0", "-0.9"]),
    ("train.weight_decay=-1e-4", ["train.weight_decay must be at least 0", "-0.0001"]),
    ("train.nesterov=true", ["train.nesterov", "sgd", "momentum"]),
    ("train.schedule=step", ["schedule", "gamma > 0"]),  # with gamma=0 set below
    ("seeds=[0,-1]", ["seeds must be a non-empty list of integers from 0 to 2**63 - 1", "-1"]),
    ("task_options.digits.split_seed=-1", ["[task_options.digits]", "split_seed", "-1"]),
])
def test_settings_that_cannot_train_are_refused_before_anything_trains(capsys, tmp_path, tiny_raw, override, words):
    config = write_config(tmp_path, tiny_raw)
    extra = ["--set", "train.gamma=0"] if "schedule" in override else []
    if "nesterov" in override:
        extra = ["--set", "train.optimizer=sgd", "--set", "train.momentum=0"]
    err = mistake(capsys, "run", str(config), "--set", override, *extra, "--out", str(tmp_path / "run"))
    assert str(config) in err.splitlines()[-1] or "train." in err
    for word in words:
        assert word in err
    assert not (tmp_path / "run").exists()


def test_incompatible_shapes_between_primary_and_secondary(capsys, tmp_path, tiny_raw):
    config = write_config(tmp_path, tiny_raw)
    err = mistake(capsys, "run", str(config), "--set", "task_options.digits.size=8", "--set",
                  'pairs=[["digits","printed-digits"]]')
    assert "incompatible input shapes" in err and "(1, 8, 8)" in err


def test_unreadable_and_malformed_configs(capsys, tmp_path):
    err = mistake(capsys, "run", str(tmp_path / "missing.toml"))
    assert "missing.toml does not exist" in err and "demo" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ntasks = ["digits",, ]\n')
    err = mistake(capsys, "run", str(bad))
    assert "bad.toml is not valid TOML" in err and "line" in err


def test_report_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    err = mistake(capsys, "report", str(tmp_path))
    assert "not a layerwise run directory" in err and "config.json" in err


def test_a_user_mistake_exits_2_without_a_traceback_from_the_shell(tmp_path):
    done = layerwise("run", str(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "nope.toml" in done.stderr


def test_missing_data_stops_the_run_before_any_training(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERWISE_DATA", str(tmp_path / "empty"))
    err = mistake(capsys, "run", "paper-images", "--out", str(tmp_path / "run"))
    assert "cifar-10-python.tar.gz not found" in err and "layerwise fetch cifar10" in err
    assert not (tmp_path / "run").exists()


def test_a_stopped_run_says_how_to_resume_and_keeps_finished_jobs(tmp_path, tiny_raw):
    import signal
    import time

    tiny_raw["train"]["epochs"] = 6
    config = write_config(tmp_path, tiny_raw)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.time() + 60
    while not list(out.glob("jobs/*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    kept = len(list(out.glob("jobs/*.json")))
    assert 1 <= kept < 8
    again = layerwise("run", str(config), "--out", str(out), "--quiet")
    assert again.returncode == 0 and f"{kept} already finished" in again.stderr


def test_a_runs_resolved_config_reads_back_as_the_same_experiment(tiny_raw):
    """config.json (unset options written as null) is a config: tools that reread a run rely on it."""
    from layerwise.config import config_from_dict
    from layerwise.sweep import plan

    cfg = config_from_dict(tiny_raw, "tiny.toml")
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())), "config.json")
    assert again.train.finetune_lr is None and again.to_dict() == cfg.to_dict()
    assert [j.key for j in plan(again)] == [j.key for j in plan(cfg)]
