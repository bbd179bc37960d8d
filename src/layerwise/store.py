"""The run directory: the resolved config, one record per finished job, checkpoints, results.csv.

    DIR/config.json            the resolved config of the last run in DIR
    DIR/plan.json              the keys of the jobs the experiment plans
    DIR/jobs/KEY.json          one record per finished job ("status": "ok" or "failed"), written atomically
    DIR/checkpoints/KEY.safetensors
    DIR/results.csv            one row per (successful job, split, metric)
    DIR/damaged/               records and checkpoints that could not be read, set aside
    DIR/replaced/TIME/         the config, plan and report of an experiment replaced by another

A readable record's existence is what "finished" means, so a sweep stopped at any point and
started again skips what is recorded and loses nothing. A damaged file is never trusted and never
deleted: it is named, moved to DIR/damaged/, and its job runs again.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError, warn
from .results import RESULT_COLUMNS, plain, result_rows

try:
    import fcntl
except ImportError:  # Windows: nothing stops two runs in one directory there
    fcntl = None

RECORD_FIELDS = ("key", "kind", "arch", "target", "seed", "num_layers", "val", "test")  # what every readable record has
SCORED_FIELDS = ("source", "frozen", "metric", "lower_is_better", "best_epoch")  # and one with metrics
RUN_CONFIG_KEYS = ("tasks", "archs")  # what every config.json layerwise writes has
# What --replace sets aside: the experiment's config and plan, and everything made from its jobs
# (the report's tables, figures and observations, the estimates and their tables), so that the
# new report shows nothing of the old experiment.
EXPERIMENT_FILES = ("config.json", "plan.json", "results.csv", "report.html", "observations.json", "curves.csv",
                    "transferability.csv", "asymmetry.csv", "freezable.csv", "similarity.csv", "estimates.csv",
                    "estimate_*.csv", "estimate_costs.json", "*.png", "truncated-*")  # the last: run directories


def to_json(value: Any, **kwargs) -> str:
    return json.dumps(plain(value), allow_nan=False, **kwargs) + "\n"


@contextmanager
def writing(path: Path):
    """Write `path` through a temporary file that replaces it only when complete. A failed write
    (a read-only folder, a full disk) leaves the old file as it was, removes the partial one and
    becomes a UserError naming the path; yields the temporary path."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        name = path if err.filename in (None, str(tmp), tmp) else err.filename  # the file meant, not its temporary one
        raise UserError(f"cannot write {name}: {err.strerror or err}; every finished job is kept: "
                        "make room (or make the folder writable) and run the same command again") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def discard_temporaries(folder: Path) -> None:
    """Remove from `folder` the temporary files of `writing` whose process has ended (one killed
    while it wrote: kill -9 leaves no time to clean up). Only a folder that one process on this
    machine writes at a time (a run directory's top level, a report's folder): a Ray worker on
    another node may be writing in jobs/ under a process id this machine does not know."""
    for path in folder.glob(".*.tmp*"):
        pid = path.name.rpartition(".tmp")[2]
        if pid.isdigit() and not running(int(pid)):
            _discard(path)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def write_atomic(path: Path, text: str) -> None:
    with writing(path) as tmp:
        tmp.write_text(text)


LOCK_FILE = ".layerwise.lock"


def _own_start(path: Path) -> bool:
    """What a run leaves in its folder before its config is written: the lock, empty folders of
    a run stopped that early, the temporary file of a config being written right now."""
    if path.name == LOCK_FILE or re.fullmatch(r"\.(config|plan)\.json\.tmp\d+", path.name):
        return True
    return path.name in ("jobs", "checkpoints") and path.is_dir() and not any(path.iterdir())


def record_problem(record: Dict[str, Any]) -> Optional[str]:
    """What makes a parsed record unusable as a result (None: nothing). Python's json reads a bare
    NaN, and a hand-edited record may hold anything: a result must be a number the report can use."""
    for split in ("val", "test"):
        metrics = record[split]
        if not isinstance(metrics, dict):
            return f"{split} is {type(metrics).__name__}, expected an object of metric: number"
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"{split}.{name} is {value!r}, expected a finite number"
    for name in ("seed", "num_layers", "frozen", "fold", "source_fold", "best_epoch", "examples"):
        value = record.get(name)  # the first two every record has; the others may be null
        if (value is not None or name in RECORD_FIELDS) and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name} is {value!r}, expected an integer"
    for name in ("kind", "arch", "target", "source", "metric"):
        value = record.get(name)
        if (value is not None or name in RECORD_FIELDS) and not isinstance(value, str):
            return f"{name} is {value!r}, expected text"
    history = record.get("history", [])  # read per epoch by the adaptive search and the cost figures
    if not isinstance(history, list):
        return f"history is {type(history).__name__}, expected a list of objects (one per epoch)"
    for i, epoch in enumerate(history):
        if not isinstance(epoch, dict):
            return f"history[{i}] is {epoch!r}, expected an object (one epoch's metrics)"
    if record.get("status", "ok") == "ok" and (record["val"] or record["test"]):
        missing = [f for f in SCORED_FIELDS if f not in record]
        if missing:
            return f"a record with metrics lacks {', '.join(missing)}"
    return None


class DamagedCheckpoint(UserError):
    """A checkpoint that is missing or cannot be read; the job that made it must train again."""

    def __init__(self, key: str, path: Path, why: str):
        super().__init__(f"checkpoint {path} {why}")
        self.key, self.path, self.why = key, path, why


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.checkpoints = self.root / "checkpoints"
        self.damaged = self.root / "damaged"
        self._readable: set = set()  # keys whose record has been read and found whole

    def create(self) -> "Store":
        try:
            self.jobs.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the run directory {self.root}: {err.strerror}") from None
        return self

    # the experiment ---------------------------------------------------------------------
    def is_run(self) -> bool:
        """A layerwise run directory: a config.json that is layerwise's (or too damaged to say)
        beside a plan.json or a jobs/ folder. Someone else's config.json is not enough."""
        return (self.root / "config.json").exists() and self._not_a_run() is None

    def _not_a_run(self) -> Optional[str]:
        """Why a folder holding a config.json is not a layerwise run directory (None when it is)."""
        if not ((self.root / "plan.json").is_file() or (self.root / "jobs").is_dir()):
            return "it has a config.json but no plan.json or jobs/ folder"
        try:
            config = json.loads((self.root / "config.json").read_bytes())
        except (OSError, ValueError):
            return None  # a run's damaged config: read_config names it
        missing = [k for k in RUN_CONFIG_KEYS if not isinstance(config, dict) or k not in config]
        if missing:
            return f"its config.json is not a layerwise config (it has no {', '.join(missing)})"
        return None

    @contextmanager
    def locked(self):
        """Hold the run directory's lock, creating the folder if need be. One process drives a
        sweep at a time: a second one would repeat its jobs, so it is refused at once (a sweep is
        shared between workers by the Ray executor, driven from one process)."""
        self.check_empty()
        lock = self.root / LOCK_FILE
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a")
        except OSError as err:
            raise UserError(f"cannot write {lock}: {err.strerror}") from None
        with handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UserError(f"{self.root} is in use by another layerwise process (it holds {lock}); wait "
                                    "for it to finish, or run the sweep with --executor ray to share it between "
                                    "several workers") from None
            yield

    def check_empty(self) -> None:
        """Refuse a folder that is neither a run directory nor empty: a run must not overwrite
        files that are not its own (a results.csv of something else)."""
        if not self.root.exists() or self.is_run():
            return
        if not self.root.is_dir():
            raise UserError(f"{self.root} is a file, not a folder; choose a new --out")
        if (self.root / "config.json").exists():
            raise UserError(f"{self.root} is not a layerwise run directory: {self._not_a_run()}; nothing is written "
                            "there, whatever the flag: choose a new --out, or an empty folder")
        other = sorted(p.name for p in self.root.iterdir() if not _own_start(p))
        if other:
            raise UserError(f"{self.root} is not empty and is not a layerwise run directory (it has no config.json but "
                            f"holds {', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); choose a new --out, "
                            "or an empty folder")

    def check_experiment(self, keys: List[str], mode: str = "resume") -> None:
        """A run directory holds one experiment: resuming it with a config that plans other jobs
        would silently replace its config, plan and report. `mode` "extend" or "replace" says
        what to do instead."""
        self.check_empty()
        if mode != "resume" or not self.is_run():
            return
        old = self.read_plan() if (self.root / "plan.json").exists() else []
        if set(old) != set(keys):
            shared = len(set(old) & set(keys))
            raise UserError(f"{self.root} holds a different experiment ({len(old)} planned jobs; this config plans "
                            f"{len(keys)}, {shared} of them the same). Run this config with a new --out; or add "
                            "--extend to add its jobs to that experiment (the report then covers both), or --replace "
                            f"to make it that directory's experiment (its config, plan and report go to "
                            f"{self.root / 'replaced'}; finished jobs are kept)")

    def start(self, config: Dict[str, Any], keys: List[str], mode: str = "resume") -> List[str]:
        """Write the config and plan of the experiment about to run; return the plan. "extend"
        keeps the planned jobs and adds `keys` (and the new tasks, architectures, seeds and data
        tasks to the config, so the report names them); "replace" sets the old files aside first."""
        self.create()
        discard_temporaries(self.root)
        if mode == "replace" and self.is_run():
            self.set_experiment_aside()
        if mode == "extend" and self.is_run():
            old_config, old_plan = self.read_config(), self.read_plan() if (self.root / "plan.json").exists() else []
            keys = list(dict.fromkeys([*old_plan, *keys]))
            config = {**config, **{k: list(dict.fromkeys([*old_config.get(k, []), *config[k]]))
                                   for k in ("tasks", "archs", "seeds") if k in config}}
            if isinstance(old_config.get("data"), dict):  # the old experiment's own data tasks stay described
                config["data"] = {**old_config["data"], **config.get("data", {})}
        self._write_if_changed(self.root / "config.json", to_json(config, indent=2))
        self._write_if_changed(self.root / "plan.json", to_json(keys))
        return keys

    def set_experiment_aside(self) -> Path:
        """Move the experiment's own files (config, plan, report, estimates) into DIR/replaced/TIME/."""
        aside = self.root / "replaced" / time.strftime("%Y%m%d-%H%M%S")
        try:
            aside.mkdir(parents=True, exist_ok=True)
            for pattern in EXPERIMENT_FILES:
                for path in sorted(self.root.glob(pattern)):
                    if path.is_file() or (path.is_dir() and pattern == "truncated-*"):
                        os.replace(path, aside / path.name)
        except OSError as err:
            raise UserError(f"cannot move the old experiment into {aside}: {err.strerror}") from None
        warn(f"the experiment that was in {self.root} (its config, plan, report and estimates) is now in {aside}")
        return aside

    def _write_if_changed(self, path: Path, text: str) -> None:
        """Leave a file that already says `text` alone, so resuming a finished run writes
        nothing (it works on a read-only copy) and other workers never see the file change."""
        try:
            if path.read_text() == text:
                return
        except (OSError, ValueError):
            pass
        write_atomic(path, text)

    # config -----------------------------------------------------------------------------
    def read_config(self) -> Dict[str, Any]:
        path = self.root / "config.json"
        if not path.exists():
            raise UserError(f"{self.root} is not a layerwise run directory: {path} is missing")
        if self._not_a_run():
            raise UserError(f"{self.root} is not a layerwise run directory: {self._not_a_run()}")
        config = self._read_json(path)
        if not isinstance(config, dict):
            raise UserError(f"{path} is damaged: expected a JSON object (the run's config); rerun with --replace")
        return config

    def read_plan(self) -> List[str]:
        path = self.root / "plan.json"
        if not path.exists():
            raise UserError(f"{self.root} is not a layerwise run directory: {path} is missing")
        keys = self._read_json(path)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise UserError(f"{path} is damaged: expected a JSON list of job keys; rerun the experiment with --replace")
        return keys

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except ValueError as err:  # JSONDecodeError, or bytes that are not text at all
            raise UserError(f"{path} is damaged: not valid JSON ({err})") from None
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror}") from None

    # records ----------------------------------------------------------------------------
    # A record that cannot be read whole is damaged: it is named once, moved to DIR/damaged/
    # (never deleted) and its job is not finished, so the next run does it again.
    def has(self, key: str) -> bool:
        return (self.jobs / f"{key}.json").exists() and (key in self._readable or self.record(key) is not None)

    def finished_keys(self) -> set:
        return {p.stem for p in self.jobs.glob("*.json") if self.has(p.stem)}

    def write_record(self, record: Dict[str, Any]) -> None:
        write_atomic(self.jobs / f"{record['key']}.json", to_json(record, indent=1))
        self._readable.add(record["key"])

    def record(self, key: str) -> Optional[Dict[str, Any]]:
        """The record of a finished job (successful or failed), or None when there is none or
        it was damaged (and has now been set aside)."""
        path = self.jobs / f"{key}.json"
        try:
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as err:
            self.set_aside(path, f"is damaged (not valid JSON: {err})")
            return None
        if not isinstance(record, dict) or record.get("key") != key or not all(f in record for f in RECORD_FIELDS):
            self.set_aside(path, f"is damaged (not a job record: expected a JSON object with key = {key!r}, {', '.join(RECORD_FIELDS[1:])})")
            return None
        problem = record_problem(record)
        if problem:
            self.set_aside(path, f"is damaged ({problem})")
            return None
        self._readable.add(key)
        return record

    def records(self, keys: Iterable[str]) -> List[Dict[str, Any]]:
        """The records of `keys` that exist, failed ones included (their "status" says so)."""
        return [r for r in (self.record(k) for k in keys) if r is not None]

    def remove_record(self, key: str) -> None:
        """Forget a job's record (a failed job about to be retried)."""
        try:
            (self.jobs / f"{key}.json").unlink(missing_ok=True)
        except OSError as err:
            raise UserError(f"cannot remove {self.jobs / (key + '.json')}: {err.strerror}") from None
        self._readable.discard(key)

    def set_aside(self, path: Path, problem: str) -> Optional[Path]:
        """Move a file that cannot be trusted into DIR/damaged/ and say what is wrong with it;
        return where it went (None when it could not be moved, or was not there any more)."""
        dest = self.damaged / path.name
        try:
            self.damaged.mkdir(exist_ok=True)
            if dest.exists():
                dest = dest.with_name(f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
            os.replace(path, dest)
        except FileNotFoundError:
            return None
        except OSError as err:
            warn(f"{path} {problem} and cannot be moved aside ({err.strerror}); it is ignored")
            return None
        self._readable.discard(path.name.split(".")[0])
        warn(f"{path} {problem}; moved to {dest}; its job is not finished: a run of its experiment does it again")
        return dest

    # checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self, key: str) -> Path:
        return self.checkpoints / f"{key}.safetensors"

    def save_checkpoint(self, key: str, net: torch.nn.Module, metadata: Dict[str, str]) -> None:
        state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        with writing(self.checkpoint_path(key)) as tmp:
            try:
                save_file(state, str(tmp), metadata=metadata)
            except SafetensorError as err:  # safetensors' own type for a write that failed (a full disk, a size limit)
                raise OSError(errno.EIO, str(err)) from None

    def load_checkpoint(self, key: str, net: torch.nn.Module) -> torch.nn.Module:
        """Load a job's weights into `net`; a DamagedCheckpoint names the file when it is missing
        or unreadable (see `set_job_aside`)."""
        path = self.checkpoint_path(key)
        if not path.exists():
            raise DamagedCheckpoint(key, path, "is missing")
        try:
            net.load_state_dict(load_file(str(path)))
        except Exception as err:  # safetensors has its own error type for a damaged file; torch raises on wrong tensors
            raise DamagedCheckpoint(key, path, f"cannot be read ({type(err).__name__}: {err})") from None
        return net

    def set_job_aside(self, key: str, why: str) -> None:
        """Move a job's record and checkpoint into DIR/damaged/: it is not finished any more."""
        self.set_aside(self.checkpoint_path(key), why)
        self.set_aside(self.jobs / f"{key}.json", f"is the record of a job whose checkpoint {why}")

    # results ----------------------------------------------------------------------------
    def write_results(self, records: List[Dict[str, Any]]) -> Path:
        """results.csv: one row per (successful job, split, metric); pandas.read_csv reads it as is."""
        return write_results(self.root / "results.csv", records)

    def writable(self) -> bool:
        """Whether files can be created in the run directory (not a read-only copy or mount)."""
        probe = self.root / f".layerwise.probe{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except OSError:
            return False
        _discard(probe)
        return True


def write_results(path: Path, records: List[Dict[str, Any]]) -> Path:
    """results.csv at `path`, left alone when it already says the same: a report of a finished run
    rewrites nothing (and works on a read-only copy)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(result_rows(records))
    try:
        with open(path, newline="") as f:
            if f.read() == text.getvalue():
                return path
    except (OSError, ValueError):
        pass
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text.getvalue())
    return path
