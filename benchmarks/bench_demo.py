"""Wall time of `layerwise demo` from a cold start (fresh run directory), which must stay under
5 minutes on a 2-core machine. Prints the figure; the data cache is kept warm unless --cold.

    python benchmarks/bench_demo.py [--cold]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also regenerate the rendered task data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if args.cold:
            env["LAYERWISE_DATA"] = os.path.join(tmp, "data")
        out = os.path.join(tmp, "demo")
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "layerwise", "demo", "--out", out, "--quiet"], check=True, env=env)
        seconds = time.perf_counter() - began
        jobs = len(os.listdir(os.path.join(out, "jobs")))
        shutil.rmtree(out)
    print(f"demo: {jobs} jobs in {seconds:.1f} s wall ({seconds / jobs:.2f} s/job) on {os.cpu_count()} cores; "
          f"target < 300 s: {'ok' if seconds < 300 else 'OVER'}")


if __name__ == "__main__":
    main()
