"""kill -9 at random points of `layerwise estimate` and `layerwise report`, then the same command
again: the run directory ends as an uninterrupted run's, nothing lost (`layerwise run` has its
own in test_workers.py and test_cli.py)."""

import json
import random
import signal
import subprocess
import sys
import time

from conftest import assert_same_runs, cli_env
from test_cli import write_config


SMALL = {"tasks": ["printed-letters", "printed-digits"],
         "task_options": {"printed-digits": {"per_class": 20}, "printed-letters": {"per_class": 8}}}


def files(out):
    """Every file of a run directory but its lock with what it holds: its bytes, where its
    folder's own path is taken out (report.html names it); a checkpoint's tensors and metadata
    (safetensors writes the metadata in no fixed order); a job record is left to
    assert_same_runs (it says when the job ran)."""
    from safetensors import safe_open

    found = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if not path.is_file() or path.name == ".layerwise.lock":
            continue
        if path.suffix == ".safetensors":
            with safe_open(path, "pt") as f:
                found[name] = (f.metadata(), {key: f.get_tensor(key).numpy().tobytes() for key in f.keys()})
        else:
            found[name] = None if name.startswith("jobs/") else path.read_bytes().replace(str(out).encode(), b"OUT")
    return found


def command(*args):
    return [sys.executable, "-m", "layerwise", *args]


def killed_at_random(args, seed: int, kills: int, whole: float) -> int:
    """Start `layerwise ARGS` `kills` times, each killed with SIGKILL after a random delay (a
    `seed`ed draw between 5% and 60% of `whole`, the seconds the uninterrupted command took, so
    that the kills land while it runs however fast the machine is) unless it ended before;
    returns how many were killed while running."""
    rng, killed = random.Random(seed), 0
    for _ in range(kills):
        process = subprocess.Popen(command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env())
        try:
            process.wait(timeout=rng.uniform(0.05, 0.6) * whole)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed += 1
    return killed


def finish(args) -> float:
    """Run `layerwise ARGS` to its end; return its wall seconds."""
    began = time.time()
    done = subprocess.run(command(*args), capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    return time.time() - began


def test_estimate_killed_at_random_points_and_run_again_ends_as_an_uninterrupted_estimate(tmp_path, tiny_raw):
    tiny_raw.update(SMALL)
    tiny_raw["train"]["epochs"] = 1
    config = write_config(tmp_path, {**tiny_raw, "workers": 2})
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    seconds = finish(["estimate", str(config), "--out", str(whole), "--quiet"])
    assert killed_at_random(["estimate", str(config), "--out", str(broken), "--quiet"], 19, 4, seconds) >= 2
    finish(["estimate", str(config), "--out", str(broken), "--quiet"])
    assert_same_runs(whole, broken, 2)  # the primaries' records and results.csv
    timed = ("estimate_costs.json", "report.html")  # the estimates' wall seconds and load, and the report saying them
    want, got = files(whole), files(broken)
    assert {k: v for k, v in got.items() if k not in timed} == {k: v for k, v in want.items() if k not in timed}
    assert got.keys() == want.keys()  # estimates.csv, the report, its figures and tables; nothing left over
    assert json.loads(got["estimate_costs.json"]).keys() == json.loads(want["estimate_costs.json"]).keys()
    assert got["report.html"].endswith(b"</html>\n")


def test_report_killed_at_random_points_and_run_again_ends_as_an_uninterrupted_report(tmp_path, tiny_raw):
    tiny_raw.update(SMALL)
    tiny_raw["train"]["epochs"] = 1
    config = write_config(tmp_path, tiny_raw)
    whole = tmp_path / "whole"
    finish(["estimate", str(config), "--out", str(whole), "--quiet"])
    seconds = finish(["report", str(whole)])
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-a", str(whole), str(broken)], check=True)
    for name in ("report.html", "results.csv", "estimates.png"):  # a report to write again, not to keep
        (broken / name).unlink()
    assert killed_at_random(["report", str(broken)], 20, 4, seconds) >= 2
    (broken / ".curves.png.tmp999999999").write_bytes(b"half a figure")  # of a process killed as it wrote
    finish(["report", str(broken)])
    assert files(broken) == files(whole)
