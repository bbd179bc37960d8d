"""The one exception type for mistakes a user can fix (bad config, missing data, bad value), and
the one way to warn.

The command line prints its message and exits with status 2, without a traceback. Everything
else is a bug and keeps its traceback.
"""

import sys


class UserError(Exception):
    """A mistake in the user's input: the message names the file, key or value and what is valid."""


def unknown(kind: str, name: str, valid, where: str = "") -> UserError:
    """The error for a name that is not one of `valid` (a task, an architecture, a config key)."""
    place = f" in {where}" if where else ""
    return UserError(f"unknown {kind} {name!r}{place}; valid: {', '.join(sorted(valid))}")


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run."""
    from tqdm.auto import tqdm

    tqdm.write(f"layerwise: warning: {message}", file=sys.stderr)  # above a progress bar, not through it
