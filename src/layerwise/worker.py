"""A worker process of the local executor: `python -m layerwise.worker`, started by executors.WorkerPool.

It reads calls from stdin, each a pickled (function, arguments): a function of layerwise such as
executors.run_unit, which runs a unit of work into the run directory (each job writes its own
record, as under Ray). It answers each on the stdout it was started with: a pickled ("ok", what the
function returned, its warnings) or ("error", exception, its warnings); the driver prints each
warning once, however many workers met it. Anything else it prints goes to stderr. It ends when its stdin closes, and within a
second of its driver's end however that came (a driver started again must not meet it still
running a unit), quietly and without running the calls its driver left in the pipe; Ctrl-C is
the driver's to handle, so it ignores it.

Its driver is the process DRIVER names: a driver killed while this one was still importing torch
has already gone when this one first looks, and its parent is then some other process.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback

from .errors import UserError, held_warnings
from .executors import DRIVER


def orphaned(driver: int) -> bool:
    """Whether `driver` has ended: this process was then given another parent."""
    return os.getppid() != driver


def end_with(driver: int) -> None:
    """End this process as soon as `driver` is no longer its parent."""
    while not orphaned(driver):
        time.sleep(0.5)
    os._exit(1)


def main() -> None:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver = int(os.environ.get(DRIVER) or os.getppid())
    if orphaned(driver):  # it ended while this process started
        os._exit(1)
    threading.Thread(target=end_with, args=(driver,), daemon=True).start()
    while True:
        try:
            function, args = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        if orphaned(driver):  # a call it sent before it ended: nobody waits for its answer
            os._exit(1)
        with held_warnings() as said:
            try:
                answer = ("ok", function(*args))
            except UserError as err:
                answer = ("error", UserError(str(err)))
            except Exception:  # a bug: its traceback, as text (not every exception pickles)
                answer = ("error", RuntimeError(f"{function.__name__} failed in a worker process:\n{traceback.format_exc()}"))
        try:
            pickle.dump((*answer, said), answers)
            answers.flush()
        except BrokenPipeError:  # the driver ended while this call ran: nobody to tell
            os._exit(1)


if __name__ == "__main__":
    main()
