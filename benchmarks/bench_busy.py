"""A sweep on a busy machine: the same small sweep alone, then beside one CPU-bound torch process
(matrix products on torch's default threads), with the ratio of the two wall times. A fair share
of the cores is 2x; the target is at most 2.5x (it was 5.0x when every run used all the cores'
threads whatever else ran).

    python benchmarks/bench_busy.py [--seconds-to-settle 60] [--set KEY=VALUE ...]

The sweep is the demo's first two tasks with one architecture and one seed (16 jobs), run by
`layerwise run` in a fresh run directory each time. Before the second run the busy process runs
until the one-minute load average shows it (at most --seconds-to-settle), as it would after
running a while on a shared machine. Run it on a machine with nothing else running.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench_demo import cpu_model

SWEEP = ["demo", "--set", 'tasks=["digits","printed-digits"]', "--set", 'archs=["alexnet-small"]',
         "--set", "seeds=[0]", "--set", 'checkpoints="all"']
BUSY = "import torch\nx = torch.randn(1024, 1024)\nwhile True:\n    y = x @ x\n"


def sweep_seconds(extra):
    """Wall time of the sweep in a new run directory."""
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "layerwise", "run", *SWEEP, *extra, "--out", os.path.join(tmp, "run"),
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began


def settle(threads: int, baseline: float, limit: float) -> float:
    """Wait until the load average has risen by most of the busy process's threads."""
    began = time.time()
    while os.getloadavg()[0] < baseline + 0.6 * threads and time.time() - began < limit:
        time.sleep(1)
    return time.time() - began


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds-to-settle", type=float, default=60.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed on to the sweep, e.g. --set train.epochs=1 for a quick check")
    args = parser.parse_args()
    extra = [arg for o in args.overrides for arg in ("--set", o)]
    load = os.getloadavg()[0]
    alone = sweep_seconds(extra)
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        import torch

        waited = settle(torch.get_num_threads(), os.getloadavg()[0], args.seconds_to_settle)
        beside = sweep_seconds(extra)
    finally:
        busy.kill()
        busy.wait()
    ratio = beside / alone
    print(f"sweep alone: {alone:.1f} s; beside one busy torch process: {beside:.1f} s "
          f"(after {waited:.0f} s for the load average to show it)")
    print(f"slowdown: {ratio:.2f}x; target <= 2.5x (a fair share of 2 cores is 2x): {'ok' if ratio <= 2.5 else 'OVER'}")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, load average {load:.2f} before the first run")


if __name__ == "__main__":
    main()
