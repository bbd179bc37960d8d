"""What goes wrong besides an interruption, met from the command line: damaged run files, a disk
that cannot be written, an --out that holds something else, a run directory in use, training that
diverges. Each is named in one line, and no finished record is lost."""

import errno
import json
import os
import pathlib
import sys

import pytest

from conftest import interrupt_fit_at
from layerwise import UserError
from layerwise.cli import main
from layerwise.store import Store
from test_cli import mistake, write_config


def strict_json(path):
    """Parse as other tools would: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def run(capsys, config, out, *extra):
    code = main(["run", str(config), "--out", str(out), "--quiet", *extra])
    return code, capsys.readouterr().err


def snapshot(out):
    return {p.name: p.read_bytes() for p in (out / "jobs").glob("*.json")}


@pytest.fixture
def one_task(tmp_path, tiny_raw):
    """One job: digits alone."""
    tiny_raw["tasks"] = ["digits"]
    return write_config(tmp_path, tiny_raw)


@pytest.fixture
def two_tasks(tmp_path, tiny_raw):
    """Two primaries and their two transfers at l_c = 0, one epoch each."""
    tiny_raw["frozen"] = [0]
    tiny_raw["train"]["epochs"] = 1
    return write_config(tmp_path, tiny_raw)


def test_damaged_records_are_named_set_aside_and_run_again(capsys, tmp_path, two_tasks):
    out = tmp_path / "run"
    assert run(capsys, two_tasks, out)[0] == 0
    records = sorted((out / "jobs").glob("*.json"))
    assert all(strict_json(p)["status"] == "ok" for p in records)
    truncated, garbage, not_a_record = records[:3]
    truncated.write_text(truncated.read_text()[:40])
    cut = truncated.read_bytes()
    garbage.write_bytes(os.urandom(64))
    not_a_record.write_text("[1, 2, 3]\n")
    intact = {p.name: p.read_bytes() for p in records[3:]}
    store = Store(out)
    assert not store.has(truncated.stem) and truncated.stem not in store.finished_keys()

    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err  # the store above set the truncated record aside; report, the others
    for path in (truncated, garbage, not_a_record):
        assert f"{path} is damaged" in err and "Traceback" not in err
        assert (out / "damaged" / path.name).exists() and not path.exists()
    assert (out / "damaged" / truncated.name).read_bytes() == cut  # moved, not deleted

    code, err = run(capsys, two_tasks, out)
    assert code == 0 and "1 already finished" in err and "3 to run" in err
    assert {p.name for p in (out / "jobs").glob("*.json")} == {p.name for p in records}
    assert all(strict_json(p)["status"] == "ok" for p in (out / "jobs").glob("*.json"))
    assert all((out / "jobs" / name).read_bytes() == data for name, data in intact.items())


@pytest.mark.parametrize("damage, problem", [
    (lambda r: r["val"].update(accuracy=float("nan")), "val.accuracy is nan, expected a finite number"),
    (lambda r: r["test"].update(accuracy=float("inf")), "test.accuracy is inf"),
    (lambda r: r.update(val=[1.0]), "val is list"),
    (lambda r: r.pop("arch"), "arch"),
    (lambda r: r.pop("num_layers"), "num_layers"),
    (lambda r: r.pop("metric"), "lacks metric"),
    (lambda r: r.update(history="1, 2"), "history is str, expected a list of objects"),
    (lambda r: r.update(frozen="x"), "frozen is 'x', expected an integer"),
    (lambda r: r.update(seed=1.5), "seed is 1.5, expected an integer"),
    (lambda r: r.update(arch=3), "arch is 3, expected text"),
    (lambda r: r["history"].append(None), "] is None, expected an object (one epoch"),
])
def test_a_record_with_bare_nan_or_missing_fields_is_damaged_and_run_again(capsys, tmp_path, one_task, damage, problem):
    """Python's json reads a bare NaN; a record lacking what the report needs made run and report fail
    with a KeyError even with nothing to run."""
    out = tmp_path / "run"
    assert run(capsys, one_task, out)[0] == 0
    (path,) = (out / "jobs").glob("*.json")
    record = strict_json(path)
    damage(record)
    path.write_text(json.dumps(record))  # json writes NaN bare
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{path} is damaged" in err and problem in err and "Traceback" not in err
    assert (out / "damaged" / path.name).exists() and not path.exists()
    code, err = run(capsys, one_task, out)
    assert code == 0 and "ran 1 jobs" in err
    assert strict_json(path)["status"] == "ok"


def test_a_damaged_checkpoint_is_named_and_its_primary_trained_again_before_its_transfer(capsys, tmp_path, two_tasks):
    out = tmp_path / "run"
    assert run(capsys, two_tasks, out)[0] == 0
    records = [strict_json(p) for p in (out / "jobs").glob("*.json")]
    transfer = next(r for r in records if r["kind"] == "transfer")
    checkpoint = out / "checkpoints" / f"{transfer['primary']}.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated
    (out / "jobs" / f"{transfer['key']}.json").unlink()  # so the checkpoint is needed

    code, err = run(capsys, two_tasks, out)
    assert code == 0, err
    assert str(checkpoint) in err and "cannot be read" in err and "Traceback" not in err
    assert (out / "damaged" / checkpoint.name).exists() and (out / "damaged" / f"{transfer['primary']}.json").exists()
    assert "ran 2 jobs" in err  # the primary, then its transfer
    again = strict_json(out / "jobs" / f"{transfer['key']}.json")
    assert again["test"] == transfer["test"]  # the retrained primary is the same model: jobs are pure
    assert checkpoint.exists()


@pytest.fixture
def stopped_after_one_job(capsys, tmp_path, two_tasks, monkeypatch):
    """A run directory with one finished job of four (as after Ctrl-C)."""
    import layerwise.runner as runner_module

    out, real = tmp_path / "run", interrupt_fit_at(monkeypatch, 2)
    assert run(capsys, two_tasks, out)[0] == 130
    monkeypatch.setattr(runner_module, "fit", real)
    assert len(snapshot(out)) == 1
    return out


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_every_finished_record(capsys, two_tasks, stopped_after_one_job, monkeypatch):
    import layerwise.store as store_module

    out, before = stopped_after_one_job, snapshot(stopped_after_one_job)
    real_save = store_module.save_file

    def half_then_full(state, filename, metadata=None):  # what a full disk does mid-write
        pathlib.Path(filename).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(store_module, "save_file", half_then_full)
    code, err = run(capsys, two_tasks, out)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("layerwise: error: cannot write ") and str(out / "checkpoints") in line
    assert "No space left on device" in line and "run the same command again" in line
    assert snapshot(out) == before and not list(out.rglob("*.tmp*"))

    monkeypatch.setattr(store_module, "save_file", real_save)
    code, err = run(capsys, two_tasks, out)
    assert code == 0 and "1 already finished" in err


@pytest.mark.parametrize("fails, name", [("savefig", "curves.png"), ("csv", "curves.csv")])
def test_a_report_file_that_cannot_be_written_whole_is_named_and_the_old_one_kept(capsys, tmp_path, two_tasks,
                                                                                 monkeypatch, fails, name):
    """EFBIG mid-figure or a full disk mid-table: one line naming the file, no truncated file left."""
    import csv as csv_module

    from matplotlib.figure import Figure

    out = tmp_path / "run"
    assert run(capsys, two_tasks, out)[0] == 0
    old = (out / name).read_bytes()
    real_savefig, real_writer = Figure.savefig, csv_module.writer

    def too_big(fig, path, *args, **kwargs):
        real_savefig(fig, path, *args, **kwargs)
        if name in os.fspath(path):
            with open(path, "r+b") as f:
                f.truncate(100)
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), os.fspath(path))

    def full(f, *args, **kwargs):
        writer = real_writer(f, *args, **kwargs)
        if name in getattr(f, "name", ""):
            f.write("arch,")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return writer

    if fails == "savefig":
        monkeypatch.setattr(Figure, "savefig", too_big)
    else:
        monkeypatch.setattr(csv_module, "writer", full)
    assert main(["report", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"layerwise: error: cannot write {out / name}: ") and "Traceback" not in line
    assert (out / name).read_bytes() == old and not list(out.rglob(".*tmp*"))


def test_a_read_only_run_directory_is_one_line_naming_the_path(capsys, two_tasks, stopped_after_one_job, monkeypatch):
    out, before = stopped_after_one_job, snapshot(stopped_after_one_job)
    real_open, real_replace = os.open, os.replace

    def under(path):
        return str(out) in os.fspath(path)

    def read_only_open(path, flags, *args, **kwargs):  # as a read-only mount answers, even to root
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def read_only_replace(src, dst, *args, **kwargs):
        if under(dst):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(os, "replace", read_only_replace)
    code, err = run(capsys, two_tasks, out)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("layerwise: error: cannot write ") and str(out) in line and "Read-only file system" in line
    monkeypatch.undo()
    assert snapshot(out) == before and not list(out.rglob("*.tmp*"))


def test_report_leaves_a_finished_run_alone_and_reports_a_read_only_one_elsewhere(capsys, tmp_path, one_task, monkeypatch):
    out = tmp_path / "run"
    assert run(capsys, one_task, out)[0] == 0
    results = (out / "results.csv").stat().st_mtime_ns
    assert main(["report", str(out)]) == 0
    assert (out / "results.csv").stat().st_mtime_ns == results  # unchanged: not rewritten
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    real_open, real_replace = os.open, os.replace

    def read_only_open(path, flags, *args, **kwargs):  # as a read-only mount answers, even to root
        if str(out) + os.sep in os.fspath(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def read_only_replace(src, dst, *args, **kwargs):
        if str(out) + os.sep in os.fspath(dst):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(os, "replace", read_only_replace)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{out} cannot be written" in line and "--out" in line and ".tmp" not in line
    elsewhere = tmp_path / "report"
    assert main(["report", str(out), "--out", str(elsewhere)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {elsewhere / 'report.html'}"
    assert (elsewhere / "report.html").exists() and (elsewhere / "results.csv").read_bytes() == before[out / "results.csv"]
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_out_folder_that_is_not_a_run_is_refused_and_left_alone(capsys, tmp_path, one_task):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("my,own,results\n")
    err = mistake(capsys, "run", str(one_task), "--out", str(out))
    assert str(out) in err and "not a layerwise run directory" in err and "results.csv" in err and "--out" in err
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]
    assert (out / "results.csv").read_text() == "my,own,results\n"


@pytest.mark.parametrize("flag", [[], ["--extend"], ["--replace"]])
def test_an_out_folder_with_someone_elses_config_json_is_never_written_into(capsys, tmp_path, one_task, flag):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "config.json").write_text('{"learning_rate": 0.1}\n')
    (out / "results.csv").write_text("their,own,results\n")
    err = mistake(capsys, "run", str(one_task), "--out", str(out), *flag)
    assert str(out) in err and "not a layerwise run directory" in err and "config.json" in err
    assert "different experiment" not in err and "--extend" not in err.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "results.csv"]
    assert (out / "config.json").read_text() == '{"learning_rate": 0.1}\n'
    assert (out / "results.csv").read_text() == "their,own,results\n"


def test_a_second_lock_on_a_run_directory_is_refused_at_once_and_a_half_written_start_is_not_foreign(tmp_path):
    """A second process must not take the first's half-written start (its lock, the temporary
    file of its config) for somebody else's files, nor wait for it: it is told to use Ray."""
    out = tmp_path / "run"
    first, second = Store(out), Store(out)
    with first.locked():
        (out / ".config.json.tmp4242").write_text("{")  # the first process is writing its config
        second.check_empty()  # not refused: those files are a run's own
        with pytest.raises(UserError, match="--executor ray") as refused:
            with second.locked():
                pass
        assert str(out) in str(refused.value)
    with second.locked():  # free once the first is done
        pass


def test_another_experiment_in_a_run_directory_is_refused_unless_extended_or_replaced(capsys, tmp_path, one_task):
    out = tmp_path / "run"
    assert run(capsys, one_task, out)[0] == 0
    config = (out / "config.json").read_text()
    # how a job runs is not a different experiment: resuming with other devices or caching works
    code, err = run(capsys, one_task, out, "--set", "train.device=cpu", "--set", "train.cache_prefix=false")
    assert code == 0 and "1 already finished" in err

    err = mistake(capsys, "run", str(one_task), "--out", str(out), "--set", "seeds=[1]")
    assert str(out) in err and "different experiment" in err and "--extend" in err and "--replace" in err
    assert json.loads((out / "config.json").read_text())["seeds"] == [0] and len(json.loads((out / "plan.json").read_text())) == 1

    code, err = run(capsys, one_task, out, "--set", "seeds=[1]", "--extend")
    assert code == 0 and "ran 1 jobs" in err
    assert json.loads((out / "config.json").read_text())["seeds"] == [0, 1]
    assert len(json.loads((out / "plan.json").read_text())) == 2 and len(snapshot(out)) == 2
    assert run(capsys, one_task, out, "--set", "seeds=[1]", "--extend")[0] == 0  # extending again resumes

    code, err = run(capsys, one_task, out, "--set", "seeds=[1]", "--replace")
    assert code == 0 and "ran 0 jobs" in err  # its job was already recorded: kept and reused
    (aside,) = (out / "replaced").iterdir()
    assert json.loads((aside / "config.json").read_text())["seeds"] == [0, 1] and (aside / "report.html").exists()
    assert json.loads((out / "config.json").read_text())["seeds"] == [1]
    assert len(json.loads((out / "plan.json").read_text())) == 1 and len(snapshot(out)) == 2
    assert config != (out / "config.json").read_text()


def test_replacing_an_experiment_sets_its_estimates_aside_too(capsys, tmp_path, one_task):
    """The new experiment's report must not show the old one's estimates."""
    out = tmp_path / "run"
    assert run(capsys, one_task, out)[0] == 0
    old = {"estimates.csv": "arch,old\n", "estimate_freeze.csv": "old\n", "estimates.png": "old png",
           "estimate_costs.json": "{}", "truncated-1/config.json": "{}"}  # the last: its truncated sweep's run
    for name, text in old.items():
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text(text)
    code, err = run(capsys, one_task, out, "--set", "seeds=[1]", "--replace")
    assert code == 0 and "estimates" in err
    (aside,) = (out / "replaced").iterdir()
    for name, text in old.items():
        assert not (out / name).exists() and (aside / name).read_text() == text, name
    assert not (out / "truncated-1").exists()
    assert "estimates.png" not in (out / "report.html").read_text()


def test_extending_an_experiment_keeps_the_description_of_its_data_tasks(tmp_path):
    """The report describes each data task from config.json's data table: an experiment extended
    with another data task must keep the first one's description, not only its jobs."""
    store = Store(tmp_path / "run")
    first = {"tasks": ["mine"], "archs": ["a"], "seeds": [0], "data": {"mine": {"kind": "arrays", "path": "/x.npz"}}}
    store.start(first, ["k1"])
    second = {"tasks": ["theirs"], "archs": ["a"], "seeds": [0], "data": {"theirs": {"kind": "arrays", "path": "/y.npz"}}}
    store.start(second, ["k2"], "extend")
    config = store.read_config()
    assert config["tasks"] == ["mine", "theirs"] and sorted(config["data"]) == ["mine", "theirs"]
    assert store.read_plan() == ["k1", "k2"]


def test_a_diverged_training_is_recorded_as_failed_and_not_retried_unless_asked(capsys, tmp_path, one_task):
    out = tmp_path / "run"
    diverge = ["--set", "train.lr=1e30", "--set", "train.optimizer=sgd"]
    code, err = run(capsys, one_task, out, *diverge)
    assert code == 0 and "Traceback" not in err
    assert "alexnet-small digits seed 0 failed" in err and "diverged" in err
    assert "1 of the sweep's jobs failed" in err and "--retry-failed" in err
    for path in out.rglob("*.json"):
        strict_json(path)  # no bare NaN anywhere
    (record,) = [strict_json(p) for p in (out / "jobs").glob("*.json")]
    assert record["status"] == "failed" and "diverged" in record["reason"] and "train.lr" in record["reason"]
    assert record["val"] == {} and record["test"] == {} and record["history"][0]["train_loss"] is None
    assert (out / "results.csv").read_text().strip().count("\n") == 0  # the header only: no result to mistake

    code, err = run(capsys, one_task, out, *diverge)
    assert code == 0 and "1 already finished" in err and "ran 0 jobs" in err
    code, err = run(capsys, one_task, out, *diverge, "--retry-failed")
    assert code == 0 and "1 to run" in err and "ran 1 jobs" in err


def test_the_transfers_of_a_failed_primary_are_recorded_as_failed_naming_it(tiny, tmp_path):
    import dataclasses

    from layerwise.sweep import Sweep

    tiny.train = dataclasses.replace(tiny.train, lr=1e30, optimizer="sgd", epochs=1)
    sweep = Sweep(tiny, tmp_path / "run", progress=False)
    sweep.run()
    records = sweep.store.records(sweep.store.read_plan())
    assert len(records) == len(sweep.jobs) == 8 and all(r["status"] == "failed" for r in records)
    for r in records:
        if r["kind"] == "transfer":
            assert r["primary"] in r["reason"] and "its primary" in r["reason"] and r["history"] == []
    assert sweep.pending() == [] and len(sweep.failed()) == 8


def test_a_training_split_smaller_than_a_batch_is_named(capsys, tmp_path, one_task):
    code, err = run(capsys, one_task, tmp_path / "run", "--set", "train.batch_size=5000")
    assert code == 0 and "task 'digits': the train split has" in err and "train.batch_size = 5000" in err


def test_a_config_that_plans_no_transfer_says_so_before_training(capsys, tmp_path, one_task, tiny_raw):
    code, err = run(capsys, one_task, tmp_path / "one")
    assert code == 0 and "plans no transfer: it has one task" in err
    tiny_raw["tasks"] = ["digits", "printed-digits"]  # the fixture made it one
    tiny_raw["task_options"]["digits"] = {"size": 8}
    shapes = write_config(tmp_path, tiny_raw)
    code, err = run(capsys, shapes, tmp_path / "shapes", "--set", "train.epochs=1")
    assert code == 0 and "plans no transfer" in err and "digits (1, 8, 8)" in err and "printed-digits (1, 16, 16)" in err
    assert err.index("plans no transfer") < err.index("ran 2 jobs")


@pytest.mark.parametrize("override, words", [
    ('task_options.printed-digits.per_class="many"', ["[task_options.printed-digits]", "per_class must be an integer", "'many'"]),
    ("task_options.printed-digits.size=15", ["[task_options.printed-digits]", "size must divide 64", "got 15"]),
    ("task_options.digits.size=1.5", ["[task_options.digits]", "size must be an integer", "1.5"]),
    ("task_options.cifar10.verify=1", ["[task_options.cifar10]", "verify must be true or false"]),
    ("arch_options.alexnet-small.width=1.5", ["[arch_options.alexnet-small]", "width must be an integer", "1.5"]),
    ('arch_options.alexnet-small.dropout="half"', ["[arch_options.alexnet-small]", "dropout must be a number"]),
    ("arch_options.alexnet-small.depth=3", ["[arch_options.alexnet-small]", "'depth'", "hidden, width"]),
    ("arch_options.alexnet-small.width=0", ["[arch_options.alexnet-small]", "does not build for task", "width and hidden must be at least 1"]),
    ("arch_options.alexnet-small.dropout=1.0", ["[arch_options.alexnet-small]", "dropout must be at least 0 and below 1"]),
    ("train.batch_size=1", ["train.batch_size must be at least 2", "got 1"]),
    ('executor="slurm"', ["executor must be one of local, ray", "'slurm'"]),
    ("threads=0", ["threads must be \"cores\", \"auto\" or a positive integer", "got 0"]),
    ("ray.gpus=-1", ["[ray]", "gpus >= 0", "gpus = -1"]),
    ("ray.nodes=2", ["[ray]", "'nodes'", "address, cpus, gpus, max_retries"]),
])
def test_bad_options_are_named_before_the_first_job(capsys, tmp_path, tiny_raw, override, words):
    config = write_config(tmp_path, tiny_raw)
    err = mistake(capsys, "run", str(config), "--set", override, "--out", str(tmp_path / "run"))
    for word in words:
        assert word in err, err
    assert not (tmp_path / "run").exists()


def test_ray_asked_for_where_it_is_not_installed_is_one_line_saying_how_to_install_it(capsys, tmp_path, one_task,
                                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it fails
    err = mistake(capsys, "run", str(one_task), "--out", str(tmp_path / "run"), "--executor", "ray")
    assert "pip install 'layerwise[ray]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    err = mistake(capsys, "run", str(one_task), "--executor", "local", "--address", "auto")
    assert "--address auto" in err and "--executor ray" in err


def test_version_and_the_help_of_run(capsys):
    from layerwise import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"layerwise {__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "a TOML file, or the name of a bundled experiment" in text
    for flag in ("--extend", "--replace", "--retry-failed"):
        assert flag in text


def test_diverged_transfers_are_listed_in_the_report_and_left_out_of_its_statistics(capsys, tmp_path, two_tasks):
    out = tmp_path / "run"
    code, err = run(capsys, two_tasks, out, "--set", "train.optimizer=sgd", "--set", "train.finetune_lr=1e30")
    assert code == 0 and "Traceback" not in err and "2 of the sweep's jobs failed" in err
    records = [strict_json(p) for p in (out / "jobs").glob("*.json")]
    failed = {r["key"] for r in records if r["status"] == "failed"}
    assert len(failed) == 2 and all(r["kind"] == "transfer" for r in records if r["key"] in failed)
    html = (out / "report.html").read_text()
    assert "2 jobs failed" in html and "diverged" in html
    results = (out / "results.csv").read_text()
    assert not any(key in results for key in failed)
    obs = strict_json(out / "observations.json")
    assert obs["curves"] == [] and "nothing to compare" in " ".join(obs["notes"])


def test_a_checkpoint_that_cannot_be_written_whole_is_one_line_and_keeps_every_record(tmp_path, tiny_raw):
    """A file-size limit (EFBIG inside safetensors, which raises its own error type) while a
    checkpoint is saved: one line naming the checkpoint, exit 2, no partial file, records kept."""
    import resource
    import subprocess

    from conftest import cli_env

    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    limit = 8_000  # above a record and the config, below a checkpoint of the tiny network

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet",
                           "--set", "workers=1"], env=cli_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=small_files)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "SafetensorError" not in done.stderr
    assert "cannot write" in done.stderr and ".safetensors" in done.stderr and "run the same command again" in done.stderr
    assert not list(out.rglob("*.tmp*")) and not list((out / "checkpoints").glob("*.safetensors"))
