"""The Ray executor on a local cluster of 2 CPUs: the same records as the local executor, a
worker that dies is replaced, and a driver killed at any moment is resumed without repeating
finished work."""

import signal
from pathlib import Path
import subprocess
import sys
import time

import pytest

from conftest import assert_same_runs, cli_env, records
from layerwise.config import config_from_dict
from layerwise.executors import CRASH_ONCE, connect
from layerwise.plan import units
from layerwise.sweep import Sweep
from test_cli import write_config

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'layerwise[ray]')")

@pytest.fixture(scope="module")
def cluster(data_dir):
    """A local Ray cluster for this module; its address, for drivers in other processes."""
    connect(ray, None, num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def on_ray(raw):
    return config_from_dict({**raw, "executor": "ray"}, "tiny.toml")


def test_a_sweep_on_ray_gives_the_records_of_the_local_executor(cluster, tiny_raw, tmp_path):
    local = config_from_dict({**tiny_raw, "threads": 1}, "tiny.toml")  # a Ray unit of 1 CPU has 1 thread
    Sweep(local, tmp_path / "local", progress=False).run()
    sweep = Sweep(on_ray(tiny_raw), tmp_path / "ray", progress=False)
    assert sweep.run() == sweep.jobs
    assert_same_runs(tmp_path / "local", tmp_path / "ray", len(sweep.jobs))


def test_a_worker_that_dies_in_the_middle_of_a_unit_is_replaced_and_every_job_runs_once(cluster, tiny_raw, tmp_path,
                                                                                        monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE, str(marker))  # the first unit of several jobs kills its worker after one
    sweep = Sweep(on_ray(tiny_raw), tmp_path / "run", progress=False)
    assert sweep.run() == sweep.jobs
    first = marker.read_text()  # the job recorded just before its worker died
    unit = next(u for u in units(sweep.jobs) if u[0].key == first)
    assert len(unit) > 1  # the rest of the unit ran in the unit's second attempt
    assert (tmp_path / "run" / "jobs" / f"{first}.json").stat().st_mtime_ns <= marker.stat().st_mtime_ns  # not run again
    assert len(records(tmp_path / "run")) == len(sweep.jobs)


def test_a_driver_killed_mid_sweep_and_started_again_finishes_the_rest_and_reruns_nothing_finished(cluster, tiny_raw,
                                                                                                    tmp_path):
    tiny_raw["frozen"] = "all"
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    command = [sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet", "--address", cluster]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.time() + 180
    while len(list(out.glob("jobs/*.json"))) < 4 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    time.sleep(1)  # its tasks end within a fifth of a second of it (executors.ends_with)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("jobs/*.json")}
    assert 4 <= len(before) < 16
    time.sleep(2)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("jobs/*.json")} == before  # none writes

    ran = Sweep(on_ray(tiny_raw), out, progress=False).run()  # started again, here
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("jobs/*.json")}
    assert len(after) == 16 and all(after[name] == seen for name, seen in before.items())
    assert 0 < len(ran) <= 16 - len(before)  # fewer if a job ended as its driver died
    assert not {f"{job.key}.json" for job in ran} & set(before)


def test_an_address_where_nothing_answers_fails_in_seconds_in_one_line(tmp_path, tiny_raw):
    import socket

    with socket.socket() as free:  # a port nothing listens on once this closes
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet",
                           "--address", f"127.0.0.1:{port}"], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - started < 60, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("layerwise: error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "nothing answers there" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not list(out.rglob("jobs/*.json"))


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b""])
def test_an_address_where_something_else_answers_fails_in_seconds_in_one_line(tmp_path, tiny_raw, reply):
    """A web server, or a service that accepts and says nothing, at --address: Ray would wait on
    it for minutes."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port, held = server.getsockname()[1], []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)
            if reply:
                connection.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet",
                               "--address", f"127.0.0.1:{port}"], env=cli_env(), capture_output=True, text=True,
                              timeout=120)
    finally:
        server.close()
    assert done.returncode == 2 and time.monotonic() - started < 60, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("layerwise: error:")]
    assert len(errors) == 1 and "not as a Ray head node does" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not list(out.rglob("jobs/*.json"))


def ray_processes() -> dict:
    """{pid: command line} of the running processes of Ray (its binaries, agents and workers)."""
    from test_workers import alive

    found = {}
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("ray::" in line or "/ray/" in line or "default_worker" in line) and alive(int(path.parent.name)):
            found[int(path.parent.name)] = line[:120]
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_driver_killed_with_the_local_cluster_it_started_leaves_no_ray_process_and_no_writer(tiny_raw, tmp_path):
    """kill -9 of a driver that started its own local Ray cluster (no --address): its tasks stop
    within half a second and no Ray process of it stays (its agents did, for good); run again, the
    sweep finishes without repeating a job."""
    tiny_raw["frozen"] = "all"
    config, out = write_config(tmp_path, tiny_raw), tmp_path / "run"
    before = set(ray_processes())
    command = [sys.executable, "-m", "layerwise", "run", str(config), "--out", str(out), "--quiet", "--executor", "ray"]
    env = {k: v for k, v in cli_env().items() if k != "RAY_ADDRESS"}  # a cluster of its own
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while len(list(out.glob("jobs/*.json"))) < 4 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    assert {pid for pid in ray_processes() if pid not in before}, "no Ray process started"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(0.5)  # a task ends within 0.2 s of its driver; without that, they went on for a second or more
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("jobs/*.json")}
    deadline = time.time() + 10
    while {pid for pid in ray_processes() if pid not in before} and time.time() < deadline:
        time.sleep(0.2)
    assert not {pid: line for pid, line in ray_processes().items() if pid not in before}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("jobs/*.json")} == written  # nothing wrote since
    assert 4 <= len(written) < 16

    ran = Sweep(config_from_dict(tiny_raw, "tiny.toml"), out, progress=False).run()  # the rest, here
    assert len(list(out.glob("jobs/*.json"))) == 16 and not {f"{job.key}.json" for job in ran} & set(written)
