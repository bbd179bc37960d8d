"""Experiment configs: read a TOML file, apply `--set` overrides, check every key and value.

Every mistake is a `UserError` naming the file, the key or value, and what is valid.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import hf
from .errors import UserError, unknown
from .given import CallableBuilder, GivenPrimary, HFBuilder, given_primary
from .nets import ARCHS
from .options import check_call_options, check_dataclass_options
from .stats import TESTS
from .tasks import TASKS, Task, make_task
from .tasks.files import data_tasks
from .tasks.text import TextFiles  # noqa: F401 (the kind "text" of [data.NAME] tables)
from .train import TrainConfig

REPORT_PANELS = ("pair", "pair-arch")
CHECKPOINTS = ("all", "primaries")
EXECUTORS = ("local", "ray")
SEARCHES = ("full", "adaptive")  # which l_c a sweep trains: every one, or those the advice needs (search.py)


@dataclass
class ReportConfig:
    panels: str = "pair"  # "pair": a panel per ordered pair, a line per arch; "pair-arch": a panel per both


@dataclass
class AnalysisConfig:
    """How the report judges a run (`[analysis]`; `--set analysis.tolerance=2`): the false-positive
    rate of every test, the paired test, and the loss in metric points that freezing may cost."""

    alpha: float = 0.05
    test: str = "t"  # "t" (paired t) or "sign-flip" (exact permutation; needs 6 seeds to reject at 0.05)
    tolerance: float = 1.0

    def __post_init__(self):
        self.alpha, self.tolerance = float(self.alpha), float(self.tolerance)
        if not 0 < self.alpha < 0.5 or not self.tolerance > 0 or self.test not in TESTS:
            raise UserError(f"[analysis] needs 0 < alpha < 0.5, tolerance > 0 (metric points) and test one of "
                            f"{', '.join(TESTS)}; got alpha = {self.alpha!r}, tolerance = {self.tolerance!r}, "
                            f"test = {self.test!r}")


@dataclass
class RayConfig:
    """How units of work run on a Ray cluster (with `executor = "ray"`)."""

    address: Optional[str] = None  # unset: start a local cluster; "auto": the one running here; or "host:port"
    cpus: float = 1.0  # CPUs a unit asks for; its torch threads
    gpus: float = 0.0  # GPUs a unit asks for; a fraction lets small units share one (0.25: four per GPU)
    max_retries: int = 3  # times a unit whose worker died (a crash, a lost node) is started again

    def __post_init__(self):
        if not self.cpus > 0 or self.gpus < 0 or self.max_retries < 0:
            raise UserError(f"[ray] needs cpus > 0, gpus >= 0 and max_retries >= 0; got cpus = {self.cpus!r}, "
                            f"gpus = {self.gpus!r}, max_retries = {self.max_retries!r}")


@dataclass
class Config:
    name: str = "experiment"
    description: str = ""
    tasks: List[str] = field(default_factory=list)
    archs: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    frozen: Union[str, List[int]] = "all"  # "all" = every l_c in 0..L_H
    pairs: Union[str, List[List[str]]] = "all"  # "all" = every ordered pair with compatible shapes
    checkpoints: str = "all"  # "all": keep every trained model; "primaries": only those transfers start from
    estimate: bool = False  # also compute the cheap per-layer estimates (estimate.py) and check them
    executor: str = "local"  # "local": one process; "ray": units of work as tasks on a Ray cluster
    workers: Union[str, int] = "auto"  # processes the local executor runs units in: "auto" (one per core on the CPU) or N
    threads: Union[str, int] = "cores"  # torch threads of each: its share of the cores it may use, of those not busy ("auto"), or N
    search: str = "full"  # "full": every l_c; "adaptive": only the l_c the advice on what to freeze needs (search.py)
    train: TrainConfig = field(default_factory=TrainConfig)
    task_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    data: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # [data.NAME]: tasks from files (tasks/files.py)
    arch_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    report: ReportConfig = field(default_factory=ReportConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    primary: Optional[GivenPrimary] = None  # a primary loaded, not trained (given.py)
    source: str = "<config>"  # where it came from, for messages
    # From Python: tasks and architectures of your own, by name, used before the registries'.
    custom_tasks: Dict[str, Task] = field(default_factory=dict, repr=False)
    custom_archs: Dict[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    def task(self, name: str) -> Task:
        if name in self.custom_tasks:
            return self.custom_tasks[name]
        return make_task(TASKS[name], self.task_options.get(name, {}), f"{self.source} [task_options.{name}]")

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("source", "custom_tasks", "custom_archs")}
        for table in ("train", "report", "analysis", "ray"):
            out[table] = dataclasses.asdict(getattr(self, table))
        if self.primary is None:
            del out["primary"]
        else:
            out["primary"] = {k: v for k, v in dataclasses.asdict(self.primary).items() if v is not None}
        return out


def bundled_experiments() -> Dict[str, Path]:
    """The experiments that ship with the package, by name."""
    folder = resources.files("layerwise") / "experiments"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def read_toml(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist; bundled experiments: "
                        f"{', '.join(sorted(bundled_experiments()))}") from None
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from None


def parse_override(text: str) -> Tuple[List[str], Any]:
    """`a.b=value` -> (["a", "b"], value); the value is read as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects key=value (e.g. train.epochs=2); got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text!r}: {part!r} is not a table")
        node[path[-1]] = value
    return raw


def _dataclass_from(cls, table: Any, where: str):
    """Build a small settings dataclass from a TOML table, rejecting unknown keys and wrong types."""
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table")
    check_dataclass_options(cls, table, "key", where)
    try:
        return cls(**table)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def load_config(source: str, overrides: Optional[List[str]] = None) -> Config:
    """A config from a file path or a bundled experiment's name, with `--set` overrides applied."""
    path = Path(source)
    if not path.exists() and source in bundled_experiments():
        path = bundled_experiments()[source]
    return overridden(read_toml(path), overrides or [], str(path))


def overridden(raw: Dict[str, Any], overrides: List[str], where: str) -> Config:
    """The config of `raw` (read from `where`) with `--set` overrides applied; an error in it says
    that the overrides changed it (the file may not be where the value came from)."""
    try:
        return config_from_dict(apply_overrides(raw, overrides), where)
    except UserError as err:
        if not overrides:
            raise
        raise UserError(f"{err} (the config as changed by {' '.join(f'--set {text}' for text in overrides)})") from None


def _integers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(v) is int for v in value)


# The config's plain settings: key -> (default, whether a value is valid, what is expected, how it
# is kept when it is not kept as given).
SETTINGS: Dict[str, Tuple[Any, Callable[[Any], bool], str, Optional[Callable[[Any], Any]]]] = {
    # seeds outside torch's range would fail only when their jobs start, after others trained
    "seeds": ([0], lambda v: _integers(v) and all(0 <= s < 2 ** 63 for s in v),
              "a non-empty list of integers from 0 to 2**63 - 1", lambda v: list(dict.fromkeys(v))),
    "frozen": ("all", lambda v: v == "all" or _integers(v), '"all" or a list of integers (l_c values)',
               lambda v: v if v == "all" else sorted(set(v))),
    "checkpoints": ("all", lambda v: v in CHECKPOINTS, f"one of {', '.join(CHECKPOINTS)}", None),
    "estimate": (False, lambda v: isinstance(v, bool), "true or false", None),
    "executor": ("local", lambda v: v in EXECUTORS, f"one of {', '.join(EXECUTORS)}", None),
    "workers": ("auto", lambda v: v == "auto" or (type(v) is int and v >= 1), '"auto" or a positive integer', None),
    "search": ("full", lambda v: v in SEARCHES, f"one of {', '.join(SEARCHES)}", None),
    "threads": ("cores", lambda v: v in ("cores", "auto") or (type(v) is int and v >= 1),
                '"cores", "auto" or a positive integer', None),
}
# [NAME] tables: a settings dataclass each
TABLES = {"ray": RayConfig, "train": TrainConfig, "report": ReportConfig, "analysis": AnalysisConfig}


def config_from_dict(raw: Dict[str, Any], where: str = "<config>") -> Config:
    fields = {f.name for f in dataclasses.fields(Config)} - {"source", "custom_tasks", "custom_archs"}
    for key in raw:
        if key not in fields:
            raise unknown("config key", key, fields, where)
    cfg = Config(source=where, name=str(raw.get("name", Path(where).stem)), description=str(raw.get("description", "")))
    if raw.get("primary") is not None:
        raw = _with_given_primary(cfg, raw, where)
    if cfg.primary is not None and cfg.primary.is_hf and isinstance(raw.get("data"), dict):
        raw = {**raw, "data": {name: hf.data_options(cfg.primary.checkpoint, name, table, where)
                               for name, table in raw["data"].items()}}
    files = data_tasks(raw.get("data", {}), Path(where).parent, where)  # paths relative to the config file
    if cfg.primary is not None and cfg.primary.is_hf:
        for name, task in files.items():
            if hasattr(task, "vocabulary_size"):
                hf.check_vocabulary(cfg.primary.checkpoint, task.vocabulary_size(), f"{where} [data.{name}]")
    cfg.custom_tasks.update(files)
    cfg.data = {name: task.table() for name, task in files.items()}  # paths made absolute, classes found
    for key, registry in (("tasks", {**TASKS, **files}), ("archs", {**ARCHS, **cfg.custom_archs})):
        setattr(cfg, key, _names(raw.get(key), key, registry, where))
    for key, (default, valid, expected, kept) in SETTINGS.items():
        value = raw.get(key, default)
        if not valid(value):
            raise UserError(f"{where}: {key} must be {expected}; got {value!r}")
        setattr(cfg, key, kept(value) if kept else value)
    cfg.pairs = _pairs(raw.get("pairs", "all"), cfg.tasks, where)
    if cfg.search == "adaptive" and cfg.primary is not None and not cfg.primary.baseline:
        raise UserError(f"{where}: search = \"adaptive\" decides what to freeze against the baseline, and "
                        "[primary] baseline = false trains none; use search = \"full\" or train the baseline")
    for key, cls in TABLES.items():
        setattr(cfg, key, _dataclass_from(cls, raw.get(key, {}), f"{where} [{key}]"))
    if cfg.report.panels not in REPORT_PANELS:
        raise UserError(f"{where} [report]: panels must be one of {', '.join(REPORT_PANELS)}; got {cfg.report.panels!r}")
    for key, registry in (("task_options", TASKS), ("arch_options", {**ARCHS, **cfg.custom_archs})):
        setattr(cfg, key, _option_tables(cfg, raw.get(key, {}), key, registry, where))
    check_options(cfg)
    return cfg


def _names(names: Any, key: str, registry, where: str) -> List[str]:
    """`tasks` or `archs`: a non-empty list of registered names, each once."""
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: {key} must be a non-empty list of names; valid: {', '.join(sorted(registry))}")
    for name in names:
        if name not in registry:
            raise unknown(key[:-1], name, registry, f"{where} ({key})")
    return list(dict.fromkeys(names))


def _pairs(pairs: Any, tasks: List[str], where: str):
    """`pairs`: "all", or [primary, secondary] pairs of two distinct tasks of the config."""
    if pairs == "all":
        return pairs
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise UserError(f"{where}: pairs must be \"all\" or a list of [primary, secondary] pairs; got {pairs!r}")
    for a, b in pairs:
        for name in (a, b):
            if name not in tasks:
                raise UserError(f"{where}: pair [{a!r}, {b!r}] names {name!r}, which is not in tasks ({', '.join(tasks)})")
        if a == b:
            raise UserError(f"{where}: pair [{a!r}, {b!r}] transfers a task to itself; a pair needs two distinct tasks")
    return pairs


def _option_tables(cfg: Config, table: Any, key: str, registry, where: str) -> Dict[str, Any]:
    """`task_options` or `arch_options`: a table per registered name (a data task's options go in
    its [data.NAME] table instead)."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: {key} must be a table of tables")
    for name, options in table.items():
        if key == "task_options" and name in cfg.data:
            raise UserError(f"{where} [task_options.{name}]: {name!r} is read from files; its options go in [data.{name}]")
        if name not in registry:
            raise unknown(key.split("_")[0], name, registry, f"{where} [{key}]")
        if not isinstance(options, dict):
            raise UserError(f"{where} [{key}.{name}] must be a table")
    return table


def _with_given_primary(cfg: Config, raw: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Read `[primary]` into `cfg`; its architecture is the config's (archs may be left out), and
    its transfers go to each task (so pairs may not be given)."""
    base = Path(where).parent if where.endswith(".toml") else Path(".")
    cfg.primary = given_primary(raw["primary"], where, ARCHS, base)
    arch = cfg.primary.arch
    if cfg.primary.is_callable:
        cfg.custom_archs[arch] = CallableBuilder(cfg.primary)
    elif cfg.primary.is_hf:
        cfg.custom_archs[arch] = HFBuilder(cfg.primary)
    if raw.get("archs", [arch]) != [arch]:
        raise UserError(f"{where}: archs must be [{arch!r}], the architecture of [primary], or left out; got {raw['archs']!r}")
    if raw.get("pairs", "all") != "all":
        raise UserError(f"{where}: pairs cannot be given with [primary]: its transfers go to every task in tasks")
    if cfg.primary.name in raw.get("tasks", []):
        raise UserError(f"{where}: [primary] name {cfg.primary.name!r} is also one of tasks; tasks are the secondary "
                        "tasks the given primary transfers to: name the primary otherwise")
    return {**raw, "archs": [arch]}


def check_options(cfg: Config) -> None:
    """Build every task's options and check every architecture's against its builder now, with
    no data loaded, rather than halfway through a sweep."""
    for name in dict.fromkeys([*cfg.tasks, *cfg.task_options]):
        split_seed = getattr(cfg.task(name), "split_seed", 0)
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or not 0 <= split_seed < 2 ** 63:
            table = f"data.{name}" if name in cfg.data else f"task_options.{name}"
            raise UserError(f"{cfg.source} [{table}]: split_seed must be an integer from 0 to 2**63 - 1; "
                            f"got {split_seed!r}")
    for name in dict.fromkeys([*cfg.archs, *cfg.arch_options]):
        if name not in cfg.custom_archs:
            check_call_options(ARCHS[name], cfg.arch_options.get(name, {}), 2,
                               f"option for architecture {name!r}:", f"{cfg.source} [arch_options.{name}]")
