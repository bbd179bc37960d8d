"""Drive a sweep: plan it, claim its run directory, hand its units to an executor, follow the
records as they appear, and write results.csv when it ends.

What runs is planned in plan.py; the executors (executors.py) run the units, in this process or
in workers, each through a Runner (runner.py), which trains one job at a time and writes its
record. A finished job is never run again. A job whose training fails (a diverged loss) is
finished too: its record says "status": "failed" and why, and so do the records of the transfers
of a failed primary.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from tqdm.auto import tqdm

from .config import Config
from .errors import warn
from .executors import executor
from .plan import Job, ordered_pairs, plan, units
from .runner import Runner, task_of
from .search import Search
from .store import Store
from .train import resolve_device


class Sweep:
    """Runs a plan into a store, loading each task's data once and reusing primaries."""

    def __init__(self, cfg: Config, out: Path, progress: bool = True, mode: str = "resume", retry_failed: bool = False):
        """`mode` says what to do when `out` holds another experiment: "resume" refuses, "extend"
        adds this one's jobs to it, "replace" sets its config, plan and report aside.
        `retry_failed` runs the failed jobs of this plan again."""
        self.cfg, self.progress, self.mode, self.retry_failed = cfg, progress, mode, retry_failed
        self.store = Store(out)
        self.jobs = plan(cfg)
        self.device = resolve_device(cfg.train.device)
        self._runner: Optional[Runner] = None
        self._ran: set = set()
        self.search = Search(self.jobs, cfg.analysis.tolerance, cfg.analysis.alpha) if cfg.search == "adaptive" else None

    @property
    def runner(self) -> Runner:
        """The Runner of this process, for units run here (one worker, or estimates)."""
        if self._runner is None:
            self._runner = Runner(self.cfg, self.store.root)
        return self._runner

    def pending(self) -> List[Job]:
        failed = {job.key for job in self.failed()} if self.retry_failed else set()
        return [job for job in self.jobs if not self.store.has(job.key) or job.key in failed]

    def failed(self) -> List[Job]:
        """The jobs of the plan whose record says they failed."""
        return [job for job in self.jobs if self.store.has(job.key) and self.store.record(job.key).get("status") == "failed"]

    def check_directory(self) -> None:
        """Refuse an --out that is not empty and not a run, or that holds another experiment."""
        self.store.check_experiment([job.key for job in self.jobs], self.mode)

    def warn_without_transfers(self) -> None:
        if ordered_pairs(self.cfg, {name: self.cfg.task(name) for name in self.cfg.tasks}):
            return  # (asked of the config, not of self.jobs, which `layerwise estimate` narrows to primaries)
        if len(self.cfg.tasks) == 1:
            why = "it has one task"
        elif self.cfg.pairs != "all":
            why = "its list of pairs is empty"
        else:
            shapes = ", ".join(f"{name} {self.cfg.task(name).input_shape}" for name in self.cfg.tasks)
            why = f"no two of its tasks have the same input shape ({shapes})"
        warn(f"{self.cfg.source} plans no transfer: {why}; only the baselines train")

    def check_data(self, jobs: List[Job]) -> None:
        """Fail before any training when a task's data is missing or damaged: the task's own check
        (Task.check) raises its message (what is wrong, where, how to get it), or fetches it
        where allowed."""
        for name, fold in dict.fromkeys((job.target, job.fold) for job in jobs if job.kind != "given"):
            task_of(self.cfg, name, fold).check()

    def run(self, announce: Optional[Callable[[int], None]] = None) -> List[Job]:
        """Run every unfinished job through the config's executor (executors.py); return the jobs
        that were recorded during this call. `announce(n)` is told how many jobs are to
        run once the run directory is this process's.

        The run directory's lock is held throughout: a second process started on it would repeat
        jobs, so it is refused (a sweep is shared between workers by the Ray executor). The call
        returns when the whole sweep is recorded.
        """
        execute = executor(self.cfg.executor)
        self.check_directory()
        self.check_data(self.pending())
        self.warn_without_transfers()
        with self.store.locked():
            self.check_directory()
            self.store.start(self.cfg.to_dict(), [job.key for job in self.jobs], self.mode)
            if self.retry_failed:
                for job in self.failed():
                    self.store.remove_record(job.key)
            if self.search is None:  # a transfer an adaptive search stopped early trains in full now
                for job in self.jobs:
                    if job.kind == "transfer" and (self.store.record(job.key) or {}).get("status") == "pruned":
                        self.store.remove_record(job.key)
            finished: Dict[str, dict] = {}
            self.sync(finished)
            self._ran = set()  # keys recorded from now on (a primary set aside and trained again counts)
            if announce:
                announce(len(self.jobs) - len(finished))
            bar = tqdm(total=len(self.jobs), initial=len(finished), unit="job", disable=not self.progress,
                       dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line a while
            try:
                execute(self, finished, bar)
            finally:  # once, however the run ends: rewriting it after every job grows with the sweep
                bar.close()
                self.write_results(finished)
        return [job for job in self.jobs if job.key in self._ran]

    def todo(self, finished: Dict[str, dict]) -> List[List[Job]]:
        """The units with a job not recorded yet, in plan order; in an adaptive search, those of
        the jobs the advice needs next (search.py), asked again as records appear."""
        if self.search is not None:
            return units(self.search.todo(finished))
        return [unit for unit in units(self.jobs) if any(job.key not in finished for job in unit)]

    def sync(self, finished: Dict[str, dict], bar=None) -> None:
        """Bring `finished` up to the run directory: add the records written since the last look
        (by this process or a worker), drop those set aside since."""
        on_disk = self.store.finished_keys()
        gone = [key for key in finished if key not in on_disk]
        for key in gone:
            del finished[key]
        added = 0
        for job in self.jobs:
            if job.key not in finished and job.key in on_disk:
                record = self.store.record(job.key)
                if record is not None:  # else it was damaged, and is now set aside
                    finished[job.key] = record
                    self._ran.add(job.key)
                    added += 1
        if bar is not None and (added or gone):
            bar.update(added - len(gone))

    def finish(self, finished: Dict[str, dict], job: Job, record: dict, bar) -> None:
        """Count a job this process has just recorded."""
        finished[job.key] = record
        self._ran.add(job.key)
        bar.update()

    def write_results(self, finished: Dict[str, dict]) -> None:
        """results.csv of every finished job the run directory plans, also those this run was not
        asked to run (`layerwise estimate` runs the primaries alone)."""
        planned = self.store.read_plan()
        records = (finished[key] if key in finished else self.store.record(key) for key in planned)
        self.store.write_results([r for r in records if r is not None])
