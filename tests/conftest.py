import os
from pathlib import Path

import pytest
import torch

from layerwise.config import config_from_dict


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """Generated task data goes to one temporary folder for the whole test session."""
    path = tmp_path_factory.mktemp("data")
    os.environ["LAYERWISE_DATA"] = str(path)
    return path


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


TINY = {
    "name": "tiny",
    "tasks": ["digits", "printed-digits"],
    "archs": ["alexnet-small"],
    "seeds": [0],
    "frozen": [0, 2, 6],
    "train": {"epochs": 2, "batch_size": 64},
    "task_options": {"printed-digits": {"per_class": 20}},
    "arch_options": {"alexnet-small": {"width": 4, "hidden": 16}},
    "workers": 1,  # in this process, where a test can reach into the sweep; test_workers.py runs worker processes
}


@pytest.fixture
def tiny_raw():
    """A config dict small enough to run a whole sweep in a few seconds."""
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny(tiny_raw):
    return config_from_dict(tiny_raw, "tiny.toml")


def interrupt_fit_at(monkeypatch, call: int):
    """Make the runner's `fit` raise KeyboardInterrupt (as Ctrl-C would) at its `call`-th call;
    returns the real `fit`, to put back."""
    import layerwise.runner as runner_module

    real, calls = runner_module.fit, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "fit", interrupted)
    return real


SRC = str(Path(__file__).resolve().parent.parent / "src")


def cli_env():
    """The environment for running `python -m layerwise` on this checkout's code, whichever copy
    of the package is installed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1"}


def records(out):
    """The job records of a run directory, by file name."""
    import json

    return {p.name: json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")}


def assert_same_runs(want, got, jobs: int) -> None:
    """Two run directories hold the same `jobs` jobs with the same outcomes: equal records but for
    when each job ran and how long it took, and equal results.csv."""
    varying = ("seconds", "finished")
    expected, found = records(want), records(got)
    assert found.keys() == expected.keys() and len(found) == jobs
    for name, record in found.items():
        assert {k: v for k, v in record.items() if k not in varying} == \
            {k: v for k, v in expected[name].items() if k not in varying}, name
    assert (got / "results.csv").read_text() == (want / "results.csv").read_text()
