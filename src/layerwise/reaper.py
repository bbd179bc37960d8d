"""Tear down the local Ray cluster of a driver that died without shutting it down (kill -9).

`ray.init()` with no address starts a cluster whose processes are the driver's children: its GCS
and raylet end with the driver, but the raylet's agents (dashboard, runtime environments) stay for
good, and its workers keep running their tasks for seconds. The Ray executor starts this script
beside such a cluster (`python reaper.py DRIVER_PID`, as a file: it imports nothing of
layerwise, so it starts at once). It notes the driver's descendants every half second and, once
the driver is gone, kills those that are still the processes it noted. The driver kills it after
`ray.shutdown()`. Linux only (/proc); elsewhere it exits at once.
"""

import os
import signal
import sys
import time


def processes() -> dict:
    """{pid: (parent pid, start time)} of every process, from /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # it ended as we looked
                continue
            found[int(name)] = (int(fields[1]), fields[19])
    return found


def descendants(root: int) -> dict:
    """{pid: start time} of the processes below `root`."""
    table, below, todo = processes(), {}, [root]
    children: dict = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in below:
                below[child] = table[child][1]
                todo.append(child)
    return below


def main() -> None:
    driver = int(sys.argv[1])
    if not os.path.isdir("/proc"):
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    noted: dict = {}
    while os.getppid() == driver:
        noted.update(descendants(driver))
        time.sleep(0.5)
    noted.pop(os.getpid(), None)
    alive = processes()
    for pid, started in noted.items():
        if pid in alive and alive[pid][1] == started:  # not another process given the same id since
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
