"""The report of a run directory: observations.json is the table API's answer, and a partial run or
a failed job is said, not hidden."""

import json

import pytest

from layerwise import observations
from layerwise.cli import main
from layerwise.config import config_from_dict
from layerwise.sweep import Sweep


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A two-seed tiny sweep, run once for this module."""
    from conftest import TINY

    raw = json.loads(json.dumps(TINY))
    raw["seeds"] = [0, 1]
    raw["train"].update(epochs=3, lr=0.01)  # enough for every baseline to beat chance
    out = tmp_path_factory.mktemp("run")
    Sweep(config_from_dict(raw, "tiny.toml"), out, progress=False).run()
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_observations_json_is_what_the_table_api_says_of_results_csv(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    written = json.loads((run / "observations.json").read_text())
    again = json.loads(json.dumps(observations(run / "results.csv")))
    assert written["asymmetry"] == again["asymmetry"] and written["curves"] == again["curves"]
    assert written["factors"] == again["factors"] and written["seeds"] == 2
    html = (run / "report.html").read_text()
    assert "Asymmetry" in html and "p_adjusted (Holm)" in html and "What to freeze" in html
    assert "Partial report" not in html
    header = (run / "curves.csv").read_text().splitlines()[0].split(",")
    assert {"seeds", "ci_low", "ci_high", "p_adjusted", "fraction"} <= set(header)


def test_a_partial_run_says_how_many_planned_jobs_are_missing_and_counts_seeds_per_point(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    records = [json.loads(p.read_text()) for p in (run / "jobs").glob("*.json")]
    gone = [r for r in records if r["kind"] == "transfer" and r["seed"] == 1 and r["frozen"] == 2]
    for r in gone:
        (run / "jobs" / f"{r['key']}.json").unlink()
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert f"{len(gone)} of {len(records)} planned jobs have not finished" in html
    rows = [line.split(",") for line in (run / "curves.csv").read_text().splitlines()]
    seeds = {r[4]: r[6] for r in rows[1:]}  # frozen -> seeds, for every curve the report could compare
    assert rows[1:] and seeds["2"] == "1" and seeds["0"] == "2" and seeds["6"] == "2"


def test_failed_jobs_are_listed_and_left_out_of_every_statistic(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    path = next(p for p in (run / "jobs").glob("*.json") if json.loads(p.read_text())["kind"] == "transfer")
    record = json.loads(path.read_text())
    record.update(status="failed", reason="non-finite training loss (nan) in epoch 1", val={}, test={})
    path.write_text(json.dumps(record))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "1 jobs failed" in html and "non-finite training loss" in html
    assert record["key"] not in (run / "results.csv").read_text()
