"""Run a gradual-transfer experiment from Python, with your own layers and your own tensors.

    from layerwise import TensorTask, TrainConfig, run_experiment

    report = run_experiment(
        tasks={"a": TensorTask("a", (xa, ya), (xa_val, ya_val), (xa_test, ya_test)), "b": ...},
        archs={"mine": my_builder},  # my_builder(input_shape, num_outputs) -> LayeredNet
        out="runs/mine", seeds=[0, 1], train=TrainConfig(epochs=10))

The run directory, resuming, results.csv and the report are the same as the command line's.
Registered task and architecture names may be mixed in as plain strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from .config import REPORT_PANELS, Config, ReportConfig
from .errors import UserError, unknown
from .net import LayeredNet
from .nets import ARCHS
from .report import report
from .sweep import Sweep
from .tasks import TASKS, Task
from .train import TrainConfig

Builder = Callable[..., LayeredNet]


def run_experiment(tasks: Union[Dict[str, Task], List[str]], archs: Union[Dict[str, Builder], List[str]],
                   out: Union[str, Path], seeds: List[int] = (0,), frozen: Union[str, List[int]] = "all",
                   pairs: Union[str, List[List[str]]] = "all", train: Optional[TrainConfig] = None,
                   name: str = "experiment", panels: str = "pair", progress: bool = True) -> Path:
    """Train the primaries and every transfer into `out` (resuming what is there); return the
    path of report.html. Anything not a registered name must be given as an object."""
    custom_tasks = dict(tasks) if isinstance(tasks, dict) else {}
    custom_archs = dict(archs) if isinstance(archs, dict) else {}
    for kind, names, own, registry in (("task", tasks, custom_tasks, TASKS), ("architecture", archs, custom_archs, ARCHS)):
        for n in names:
            if n not in own and n not in registry:
                raise unknown(kind, n, set(registry) | set(own), "run_experiment()")
    if panels not in REPORT_PANELS:
        raise UserError(f"run_experiment(): panels must be one of {', '.join(REPORT_PANELS)}; got {panels!r}")
    cfg = Config(name=name, tasks=list(tasks), archs=list(archs), seeds=list(seeds),
                 frozen=frozen if frozen == "all" else sorted(set(frozen)), pairs=pairs,
                 train=train or TrainConfig(), report=ReportConfig(panels), source="run_experiment()",
                 custom_tasks=custom_tasks, custom_archs=custom_archs)
    return run(cfg, Path(out), progress)


def run(cfg: Config, out: Path, progress: bool = True) -> Path:
    """Run every job of `cfg` not yet recorded in `out`, then write the report; return its path."""
    Sweep(cfg, out, progress).run()
    return report(out)
