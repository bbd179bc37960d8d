"""The one exception type for mistakes a user can fix (bad config, missing data, bad value), and
the one way to warn.

The command line prints its message and exits with status 2, without a traceback. Everything
else is a bug and keeps its traceback.
"""

import sys
from contextlib import contextmanager
from typing import List, Optional

_said: set = set()  # the warnings this process has printed: each is printed once
_held: Optional[List[str]] = None  # a worker's warnings, kept for its driver to print


class UserError(Exception):
    """A mistake in the user's input: the message names the file, key or value and what is valid."""


def unknown(kind: str, name: str, valid, where: str = "") -> UserError:
    """The error for a name that is not one of `valid` (a task, an architecture, a config key)."""
    place = f" in {where}" if where else ""
    return UserError(f"unknown {kind} {name!r}{place}; valid: {', '.join(sorted(valid))}")


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run, once
    per process however often it comes up; in a worker, kept for the driver (`held_warnings`)."""
    from tqdm.auto import tqdm

    if _held is not None:
        _held.append(message)
    elif message not in _said:
        _said.add(message)
        tqdm.write(f"layerwise: warning: {message}", file=sys.stderr)  # above a progress bar, not through it


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a failed memory allocation: Python's MemoryError, torch's on a GPU, or
    torch's CPU allocator (a plain RuntimeError saying it "can't allocate memory")."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def memory_error(what: str, err: BaseException) -> UserError:
    """The one line for `what` (a job, a curve) that ran out of memory. The machine, not the job,
    is at fault, so nothing is recorded for it: the same command, with less running at once,
    runs it again."""
    said = (str(err).strip().splitlines() or [type(err).__name__])[-1].split("DefaultCPUAllocator: ")[-1].strip()
    return UserError(f"{what} ran out of memory ({said}); finished jobs are kept: run fewer at once "
                     "(workers = 1), or lower train.batch_size, train.eval_batch_size or train.cache_limit_gb, "
                     "and run the same command again")


@contextmanager
def held_warnings():
    """Keep the block's warnings in the list it yields instead of printing them: a worker process
    sends them to its driver, which prints each once however many workers met it."""
    global _held
    before, _held = _held, []
    try:
        yield _held
    finally:
        _held = before
