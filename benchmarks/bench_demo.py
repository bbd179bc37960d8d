"""Wall time of `layerwise demo` from a cold start (fresh run directory), which must stay under
5 minutes on a 2-core machine. Prints the figure; the data cache is kept warm unless --cold.

    python benchmarks/bench_demo.py [--cold] [--keep DIR]

It prints the machine beside the figure (cores, CPU model, load average before the run): timings
from a loaded machine are not comparable.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from layerwise.estimate import cpu_model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also regenerate the rendered task data")
    parser.add_argument("--keep", help="copy the finished run directory here (to read its report)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if args.cold:
            env["LAYERWISE_DATA"] = os.path.join(tmp, "data")
        out = os.path.join(tmp, "demo")
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "layerwise", "demo", "--out", out, "--quiet"], check=True, env=env)
        seconds = time.perf_counter() - began
        jobs = len(os.listdir(os.path.join(out, "jobs")))
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
    print(f"demo: {jobs} jobs in {seconds:.1f} s wall ({seconds / jobs:.2f} s/job); target < 300 s: "
          f"{'ok' if seconds < 300 else 'OVER'}")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, load average {load:.2f} before the run")


if __name__ == "__main__":
    main()
