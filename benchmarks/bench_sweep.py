"""One sweep three ways, in one process: a plain PyTorch loop, layerwise, and an ideal floor.

    python benchmarks/bench_sweep.py            # the demo suite, 1 seed, every l_c: 90 jobs, ~10 min on 2 cores
    python benchmarks/bench_sweep.py --quick    # 2 tasks, 2 epochs: 32 jobs, for a check
    python benchmarks/bench_sweep.py --quick --ways layerwise --profile 25   # where layerwise's time goes

The three ways train the same jobs (every primary, and every transfer of every ordered pair at
every l_c) with the same data, seeds, optimizer, schedule, epochs and batch size:

- plain: what a researcher would write by hand: a DataLoader, a full forward pass every step,
  frozen layers held only by requires_grad=False and evaluation mode, the validation split
  evaluated every epoch, the best epoch's weights kept and tested;
- layerwise: `layerwise.experiment.run` into a temporary run directory (records, checkpoints of the
  primaries, layer similarity, results.csv and the report included), as a user runs it: in its
  worker processes, one per core, each with one thread (`--threads N`: one process, N threads);
- floor: the least work that gives the same numbers: each transfer trains only its suffix on
  prefix outputs computed once (one more layer per l_c), and nothing else is written or computed.

Speed-up is plain time / layerwise time; efficiency is floor time / layerwise time (1.0: layerwise
costs nothing beyond the training itself; above 1 where its workers use the cores better than one
process can). Timings are only comparable on an idle machine, so
the machine and its load average are printed beside them.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import itertools
import json
import math
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this checkout's layerwise

from bench_demo import cpu_model  # noqa: E402
from layerwise.config import Config, load_config  # noqa: E402
from layerwise.nets import ARCHS  # noqa: E402
from layerwise.experiment import run as layerwise_sweep  # noqa: E402
from layerwise.tasks import TaskData  # noqa: E402
from layerwise.train import TrainConfig, lr_factor  # noqa: E402
from layerwise.train import make_optimizer as layerwise_optimizer  # noqa: E402

# A job is named by (arch, source, target, l_c, seed); a primary has source and l_c None.
JobName = Tuple[str, object, str, object, int]
WAYS = ("plain", "layerwise", "floor")
# Layerwise and the floor do the same arithmetic in the same order, so they must agree exactly.
# The plain loop is the same training in torch's defaults (contiguous layout, the unfused
# optimizer): rounding differs (~1e-7), and six epochs carry that into which test examples a job
# gets right. Measured on the demo suite (1 seed), rounding alone moved a job's test error by
# 0.57 points on average and 2.3 at most (--quick: 0.57 and 1.7); two planted mistakes in the
# plain loop, on --quick, moved it by far more: frozen batch norm left in training mode 2.0 on
# average and 21.9 at most, a learning rate 1.5x too high 2.9 and 13.0. Hence:
SAME = 1e-3  # points: float32 rounding of a percentage; one test example is worth 0.13 points or more
TOLERANCE_FLOOR = SAME  # layerwise against floor: any real difference is a bug
TOLERANCE_MEAN = 1.0  # points: mean |plain - layerwise| over jobs
TOLERANCE_MAX = 5.0  # points: largest |plain - layerwise| of one job


def config(quick: bool, seeds: List[int], overrides: List[str] = ()) -> Config:
    """The demo experiment, 1 seed; --quick keeps two tasks and two epochs."""
    changes = [f"seeds={seeds}"]
    if quick:
        changes += ['tasks=["digits", "printed-digits"]', "train.epochs=2"]
    cfg = load_config("demo", [*changes, *overrides])
    assert cfg.train.device in ("auto", "cpu") and not cfg.train.amp, "the plain loop and floor are float32 CPU loops"
    return cfg


def error(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 - (logits.argmax(1) == y).float().mean().item() * 100


def plain_optimizer(params, train: TrainConfig) -> torch.optim.Optimizer:
    """torch's optimizers with their defaults, as a researcher would make them."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov,
                               weight_decay=train.weight_decay)
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)


def schedule(optimizer, train: TrainConfig, steps: int):
    """The config's learning-rate schedule, stepped once per batch as layerwise steps it."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(train, step / steps))


# -- (a) the plain loop ----------------------------------------------------------------------

class EpochOrder(Sampler):
    """One seeded permutation per epoch. torch's RandomSampler draws two per epoch (the second
    for a remainder that is empty here), which only changes which examples share a batch; this
    draws what layerwise draws, so the two can be compared job by job."""

    def __init__(self, n: int, seed: int):
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def plain_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    wrong = 0
    with torch.no_grad():  # (a loader without its own generator would draw from dropout's stream)
        for xb, yb in DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=torch.Generator()):
            wrong += (model(xb).argmax(1) != yb).sum().item()
    return 100.0 * wrong / len(y)


def plain_fit(model: nn.Sequential, frozen: int, data: TaskData, train: TrainConfig, seed: int) -> Dict[str, float]:
    """Train `model` with its first `frozen` modules held constant; the best validation epoch's
    weights are kept and tested."""
    for p in model[:frozen].parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)  # dropout
    # Every loader draws a seed for worker processes each epoch, from the global stream (dropout's)
    # unless it has a generator of its own; layerwise draws nothing there.
    loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=train.batch_size,
                        sampler=EpochOrder(len(data.train), seed), generator=torch.Generator())
    optimizer = plain_optimizer([p for p in model.parameters() if p.requires_grad], train)
    scheduler = schedule(optimizer, train, train.epochs * len(loader))
    best, best_state = None, None
    for epoch in range(1, train.epochs + 1):
        model.train()
        model[:frozen].eval()  # frozen batch norm keeps its statistics, frozen dropout stays off
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        val = plain_error(model, data.val.x, data.val.y, train.eval_batch_size)
        if best is None or val < best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return {"val": best, "test": plain_error(model, data.test.x, data.test.y, train.eval_batch_size)}


def each_pair(cfg: Config, fit_primary, results: Dict[JobName, Dict[str, float]]):
    """For each (arch, seed): every task's primary trained from scratch by `fit_primary(model,
    data, seed)` (its result recorded as that task's baseline), then each ordered pair as
    (arch, seed, source, target, the source's trained primary, the target's data)."""
    for arch in cfg.archs:
        for seed in cfg.seeds:
            data = {name: cfg.task(name).load(seed) for name in cfg.tasks}
            primaries = {}
            for name in cfg.tasks:
                task = cfg.task(name)
                torch.manual_seed(seed)
                net = ARCHS[arch](task.input_shape, task.num_classes)
                model = nn.Sequential(*net.layers, net.head)
                results[arch, None, name, None, seed] = fit_primary(model, data[name], seed)
                primaries[name] = model.to(memory_format=torch.contiguous_format)  # as layerwise reads it back
            for source, target in itertools.permutations(cfg.tasks, 2):
                yield arch, seed, source, target, primaries[source], data[target]


def new_head(primary: nn.Sequential, classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)  # the new head: the same for every l_c of a seed
    return nn.Linear(primary[-1].in_features, classes)


def plain(cfg: Config) -> Dict[JobName, Dict[str, float]]:
    results = {}
    fit_primary = lambda model, data, seed: plain_fit(model, 0, data, cfg.train, seed)  # noqa: E731
    for arch, seed, source, target, primary, data in each_pair(cfg, fit_primary, results):
        body = primary[:-1]
        for frozen in range(len(body) + 1):
            head = new_head(primary, cfg.task(target).num_classes, seed)
            model = nn.Sequential(*copy.deepcopy(body), head)
            results[arch, source, target, frozen, seed] = plain_fit(model, frozen, data, cfg.train, seed)
    return results


# -- (b) layerwise ---------------------------------------------------------------------------

def layerwise(cfg: Config) -> Tuple[Dict[JobName, Dict[str, float]], float, float, set]:
    """Run the sweep (and its report) into a temporary directory; return its results, the seconds
    that took, the seconds its report takes (written again, on its own, to time it) and the
    thread counts its jobs trained with."""
    from layerwise.report import report

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        began = time.perf_counter()
        layerwise_sweep(cfg, out, progress=False)
        seconds = time.perf_counter() - began
        began = time.perf_counter()
        report(out)
        report_seconds = time.perf_counter() - began
        results, threads = {}, set()
        for path in (out / "jobs").glob("*.json"):
            r = json.loads(path.read_text())
            results[r["arch"], r["source"], r["target"], r["frozen"], r["seed"]] = {
                "val": r["val"]["error"], "test": r["test"]["error"]}
            threads.add(r.get("threads"))
    return results, seconds, report_seconds, threads


# -- (c) the floor ---------------------------------------------------------------------------

def layerwise_layout(train: TrainConfig) -> torch.memory_format:
    """The memory layout layerwise's fit trains in on the CPU (this benchmark also runs on
    versions before 0.3, whose channels_last was false unless set)."""
    try:
        from layerwise.train import memory_layout
    except ImportError:
        return torch.channels_last if train.channels_last else torch.contiguous_format
    return memory_layout(train, torch.device("cpu"))


def to_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    return x.contiguous(memory_format=layout) if x.dim() == 4 else x


def floor_fit(model: nn.Sequential, data: TaskData, train: TrainConfig, seed: int) -> Dict[str, float]:
    """Train every module of `model` on tensors already on hand: no loader, no host sync but
    the metrics, evaluation in slices of train.eval_batch_size; in the memory layout layerwise
    is told to use, so that the floor measures its overhead and not the layout."""
    layout = layerwise_layout(train)
    model.to(memory_format=layout)
    prepare = lambda x: to_layout(x, layout)  # noqa: E731
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    n, size = len(data.train), train.batch_size
    optimizer = layerwise_optimizer(list(model.parameters()), train)
    scheduler = schedule(optimizer, train, train.epochs * math.ceil(n / size))

    def logits(x):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(prepare(x[i:i + train.eval_batch_size])) for i in range(0, len(x), train.eval_batch_size)])

    best, best_state = None, None
    for epoch in range(1, train.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        for i in range(0, n, size):
            idx = order[i:i + size]
            loss = F.cross_entropy(model(prepare(data.train.x[idx])), data.train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        val = error(logits(data.val.x), data.val.y)
        if best is None or val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"val": best, "test": error(logits(data.test.x), data.test.y)}


def advance(layer: nn.Module, data: TaskData, train: TrainConfig) -> TaskData:
    """Every split's inputs passed through one more frozen layer (evaluation mode, no graph)."""
    layer.eval()
    layout, batch = layerwise_layout(train), train.eval_batch_size
    with torch.no_grad():
        def through(x):
            return torch.cat([layer(to_layout(x[i:i + batch], layout)) for i in range(0, len(x), batch)])
        return TaskData(*(type(s)(through(s.x), s.y, s.groups) for s in (data.train, data.val, data.test)))


def floor(cfg: Config) -> Dict[JobName, Dict[str, float]]:
    results = {}
    fit_primary = lambda model, data, seed: floor_fit(model, data, cfg.train, seed)  # noqa: E731
    for arch, seed, source, target, primary, seen in each_pair(cfg, fit_primary, results):
        body = primary[:-1]
        for frozen in range(len(body) + 1):
            if frozen:
                seen = advance(body[frozen - 1], seen, cfg.train)
            head = new_head(primary, cfg.task(target).num_classes, seed)
            suffix = nn.Sequential(*copy.deepcopy(body[frozen:]), head)
            results[arch, source, target, frozen, seed] = floor_fit(suffix, seen, cfg.train, seed)
    return results


# -- comparing and reporting -----------------------------------------------------------------

def differences(a: Dict[JobName, Dict[str, float]], b: Dict[JobName, Dict[str, float]]) -> Dict[JobName, float]:
    if set(a) != set(b):
        raise SystemExit(f"the ways ran different jobs: {sorted(set(a) ^ set(b), key=str)[:5]} ...")
    return {k: a[k]["test"] - b[k]["test"] for k in sorted(a, key=str)}


def describe(job: JobName) -> str:
    arch, source, target, frozen, seed = job
    return f"{arch} {target} seed {seed}" if source is None else f"{arch} {source}->{target} l_c={frozen} seed {seed}"


def agreement(results: Dict[str, Dict[JobName, Dict[str, float]]], same_threads: bool) -> bool:
    """Whether the ways' test errors agree: layerwise and the floor exactly when they trained
    with the same threads, else (a thread count changes rounding) as the plain loop must."""
    ok = True
    exact = (TOLERANCE_FLOOR, TOLERANCE_FLOOR) if same_threads else (TOLERANCE_MEAN, TOLERANCE_MAX)
    checks = [("layerwise", "floor", *exact),
              ("plain", "layerwise", TOLERANCE_MEAN, TOLERANCE_MAX),
              ("plain", "floor", TOLERANCE_MEAN, TOLERANCE_MAX)]
    for a, b, mean_tol, max_tol in checks:
        if a not in results or b not in results:
            continue
        signed = differences(results[a], results[b])
        diff = [abs(d) for d in signed.values()]
        mean, worst = sum(diff) / len(diff), max(diff)
        same = sum(d < SAME for d in diff)
        good = mean <= mean_tol and worst <= max_tol
        ok &= good
        print(f"test error, {a} vs {b}: mean |diff| {mean:.3f} points (tolerance {mean_tol:g}), "
              f"mean diff {sum(signed.values()) / len(diff):+.3f}, largest {worst:.3f} (tolerance {max_tol:g}), "
              f"{same}/{len(diff)} jobs identical: {'agree' if good else 'DISAGREE'}")
        if not good or worst >= SAME:
            job = max(signed, key=lambda k: abs(signed[k]))
            print(f"  largest: {describe(job)}: {results[a][job]['test']:.3f} against {results[b][job]['test']:.3f}")
    return ok


def machine() -> str:
    loads = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, load average {loads}")


def busy_seconds() -> Tuple[float, float]:
    """(CPU seconds this process and its ended children have used, CPU seconds the whole machine has been busy): their
    changes over a timing say how much of the machine other processes took meanwhile."""
    own = sum(os.times()[:4])  # with the finished children's: layerwise's worker processes
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return own, float("nan")
    idle = fields[3] + fields[4]  # idle and iowait
    return own, (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def others_share(start: Tuple[float, float], seconds: float) -> float:
    """The fraction of the machine's cores that other processes kept busy during `seconds`."""
    own, machine_busy = (b - a for a, b in zip(start, busy_seconds()))
    return max(machine_busy - own, 0.0) / (seconds * (os.cpu_count() or 1))


def warm_up(cfg: Config) -> None:
    """One short training step of each architecture, so no way pays for the first calls."""
    task = cfg.task(cfg.tasks[0])
    x = torch.randn(cfg.train.batch_size, *task.input_shape)
    for arch in cfg.archs:
        net = ARCHS[arch](task.input_shape, task.num_classes)
        F.cross_entropy(net(x), torch.zeros(len(x), dtype=torch.long)).backward()
        for make in (plain_optimizer, layerwise_optimizer):  # the first one made imports torch._dynamo (1.5 s)
            make(list(net.parameters()), cfg.train).step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two tasks, two epochs (32 jobs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)}")
    parser.add_argument("--threads", type=int, help="torch intra-op threads of every way, layerwise then in one "
                                                      "process (default: torch's own; layerwise's workers)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for layerwise and the floor (the plain loop takes only "
                             "the recipe: optimizer, schedule, epochs, batch sizes)")
    parser.add_argument("--profile", type=int, metavar="N", help="profile layerwise and print its N costliest calls")
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    if not ways or set(ways) - set(WAYS):
        parser.error(f"--ways takes a comma-separated list of {', '.join(WAYS)}; got {args.ways!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    # layerwise as a user runs it, or in one process with the threads the other two ways have
    cfg = config(args.quick, args.seeds, [*([f"threads={args.threads}", "workers=1"] if args.threads else []), *args.set])
    before = machine()
    warm_up(cfg)
    results, seconds, report_seconds, threads = {}, {}, None, set()
    for way in ways:
        profiler = cProfile.Profile() if args.profile and way == "layerwise" else None
        began, busy = time.perf_counter(), busy_seconds()
        if profiler:
            profiler.enable()
        if way == "plain":
            results[way] = plain(cfg)
        elif way == "layerwise":
            results[way], sweep_seconds, report_seconds, threads = layerwise(cfg)
        else:
            results[way] = floor(cfg)
        if profiler:
            profiler.disable()
        seconds[way] = sweep_seconds if way == "layerwise" else time.perf_counter() - began
        how = f", jobs on {'/'.join(map(str, sorted(threads)))} thread(s) each" if way == "layerwise" else ""
        print(f"{way}: {len(results[way])} jobs in {seconds[way]:.1f} s{how} (other processes took "
              f"{others_share(busy, seconds[way]):.0%} of the machine meanwhile)", flush=True)
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    print(f"experiment: {cfg.name}{' --quick' if args.quick else ''}, tasks {', '.join(cfg.tasks)}, "
          f"archs {', '.join(cfg.archs)}, seeds {cfg.seeds}, {cfg.train.epochs} epochs")
    if report_seconds is not None:
        print(f"layerwise's time includes its report: {report_seconds:.1f} s (timed again on its own)")
    if "plain" in seconds and "layerwise" in seconds:
        print(f"speed-up over the plain loop: {seconds['plain'] / seconds['layerwise']:.2f}x (target >= 3)")
    if "floor" in seconds and "layerwise" in seconds:
        print(f"efficiency (floor / layerwise): {seconds['floor'] / seconds['layerwise']:.2f} (target >= 0.9)")
    if "plain" in seconds and "floor" in seconds:
        print(f"the floor is {seconds['plain'] / seconds['floor']:.2f}x faster than the plain loop")
    print(f"machine before: {before}")
    print(f"machine after:  {machine()}")
    sys.exit(0 if agreement(results, threads <= {torch.get_num_threads()}) else 1)


if __name__ == "__main__":
    main()
