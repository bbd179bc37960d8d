"""The run directory: the resolved config, one record per finished job, checkpoints, results.csv.

    DIR/config.json            the resolved config of the last run in DIR
    DIR/jobs/KEY.json          one record per finished job, written atomically
    DIR/checkpoints/KEY.safetensors
    DIR/results.csv            one row per (job, split, metric)

A record's existence is what "finished" means, so a sweep stopped at any point and started again
skips what is recorded and loses nothing.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError

# fold / source_fold: the fold of the target task and of the source task's primary (empty for a
# task without folds); see Task.folds().
RESULT_COLUMNS = ["arch", "source", "target", "seed", "frozen", "split", "metric", "value", "epoch", "key",
                  "fold", "source_fold"]


def blank_if_none(value: Any) -> Any:
    return "" if value is None else value


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.checkpoints = self.root / "checkpoints"
        self.claims = self.root / "claims"

    def create(self) -> "Store":
        try:
            self.jobs.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the run directory {self.root}: {err.strerror}") from None
        return self

    # config -----------------------------------------------------------------------------
    def write_config(self, config: Dict[str, Any]) -> None:
        write_atomic(self.root / "config.json", json.dumps(config, indent=2) + "\n")

    def read_config(self) -> Dict[str, Any]:
        path = self.root / "config.json"
        if not path.exists():
            raise UserError(f"{self.root} is not a layerwise run directory: {path} is missing")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON: {err}") from None

    def write_plan(self, keys: List[str]) -> None:
        """The keys of the jobs the last run planned: what its report is made of."""
        write_atomic(self.root / "plan.json", json.dumps(keys) + "\n")

    def read_plan(self) -> List[str]:
        path = self.root / "plan.json"
        if not path.exists():
            raise UserError(f"{self.root} is not a layerwise run directory: {path} is missing")
        return json.loads(path.read_text())

    # records ----------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return (self.jobs / f"{key}.json").exists()

    def finished_keys(self) -> set:
        return {p.stem for p in self.jobs.glob("*.json")}

    def write_record(self, record: Dict[str, Any]) -> None:
        write_atomic(self.jobs / f"{record['key']}.json", json.dumps(record, indent=1) + "\n")

    def record(self, key: str) -> Optional[Dict[str, Any]]:
        path = self.jobs / f"{key}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def records(self, keys: Iterable[str]) -> List[Dict[str, Any]]:
        return [r for r in (self.record(k) for k in keys) if r is not None]

    # claims -----------------------------------------------------------------------------
    # Several `layerwise run` processes (on one machine, or on many sharing the directory) can
    # work on one sweep: each claims a unit of work by creating its claim file exclusively.
    def claim(self, key: str) -> bool:
        path = self.claims / f"{key}.json"
        self.claims.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(path):
                    return False
                path.unlink(missing_ok=True)  # its process is gone: take the work over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
            return True
        return False

    def release(self, key: str) -> None:
        (self.claims / f"{key}.json").unlink(missing_ok=True)

    @staticmethod
    def _stale(path: Path) -> bool:
        """A claim is stale when it was made on this host by a process that no longer runs. A
        claim from another host is trusted: delete DIR/claims/ by hand after a machine crashed."""
        try:
            owner = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False  # being written right now
        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    # checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self, key: str) -> Path:
        return self.checkpoints / f"{key}.safetensors"

    def save_checkpoint(self, key: str, net: torch.nn.Module, metadata: Dict[str, str]) -> None:
        path = self.checkpoint_path(key)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        save_file(state, str(tmp), metadata=metadata)
        os.replace(tmp, path)

    def load_checkpoint(self, key: str, net: torch.nn.Module) -> torch.nn.Module:
        path = self.checkpoint_path(key)
        if not path.exists():
            raise UserError(f"checkpoint {path} is missing; delete {self.jobs / (key + '.json')} to train that job again")
        net.load_state_dict(load_file(str(path)))
        return net

    # results ----------------------------------------------------------------------------
    def write_results(self, records: List[Dict[str, Any]]) -> Path:
        """results.csv: one row per (job, split, metric); pandas.read_csv reads it as is."""
        path = self.root / "results.csv"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(RESULT_COLUMNS)
            for r in records:
                for split in ("val", "test"):
                    for metric, value in r[split].items():
                        writer.writerow([r["arch"], r["source"] or "", r["target"], r["seed"],
                                         "" if r["frozen"] is None else r["frozen"], split, metric,
                                         f"{value:.6g}", r["best_epoch"], r["key"],
                                         blank_if_none(r.get("fold")), blank_if_none(r.get("source_fold"))])
        os.replace(tmp, path)
        return path
