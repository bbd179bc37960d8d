"""The command line: `layerwise demo | run | freeze | estimate | report | list | fetch`.

User mistakes print one line naming what is wrong and exit with status 2; an interrupted run
keeps every finished job and resumes when the same command runs again.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path
from typing import List, Optional

from . import __version__
from .config import load_config
from .errors import UserError
from .estimate import train_primaries, write_estimates
from .executors import local_workers, unit_threads
from .fetch import fetch
from .freeze import advice, freeze_config
from .net import count_parameters
from .nets import ARCHS
from .report import report
from .sweep import Sweep
from .tasks import TASKS
from .truncated import name as truncated_name
from .truncated import run_truncated

STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def load(config: str, overrides: List[str], executor: Optional[str] = None, address: Optional[str] = None):
    """The config with --set overrides, and --executor / --address over its own executor settings."""
    cfg = load_config(config, overrides)
    if address is not None:
        if executor == "local":
            raise UserError(f"--address {address} is a Ray cluster's address; it goes with --executor ray")
        executor, cfg.ray.address = "ray", address
    cfg.executor = executor or cfg.executor
    return cfg


def where(cfg, sweep) -> str:
    if cfg.executor == "ray":
        return "on Ray" + (f" at {cfg.ray.address}" if cfg.ray.address else "")
    workers = local_workers(cfg, sweep.device)
    threads = "threads as cores are free" if cfg.threads == "auto" else f"{unit_threads(cfg.threads, 0, workers)} thread(s)"
    return f"on {sweep.device}, " + (f"in {workers} worker processes of {threads} each" if workers > 1 else f"with {threads}")


def cmd_run(config: str, out: Optional[str], overrides: List[str], quiet: bool, mode: str = "resume",
            retry_failed: bool = False, executor: Optional[str] = None, address: Optional[str] = None) -> int:
    return cmd_run_config(load(config, overrides, executor, address), out, quiet, mode, retry_failed)


def cmd_run_config(cfg, out: Optional[str], quiet: bool, mode: str = "resume", retry_failed: bool = False) -> int:
    out_dir = Path(out or Path("runs") / cfg.name)
    sweep = Sweep(cfg, out_dir, progress=not quiet, mode=mode, retry_failed=retry_failed)
    sweep.check_directory()

    def announce(todo: int) -> None:  # once the run directory is ours
        print(f"{cfg.name}: {len(sweep.jobs)} jobs, {len(sweep.jobs) - todo} already finished in {out_dir}, "
              f"{'up to ' if sweep.search else ''}{todo} to run {where(cfg, sweep)}"
              + ("; adaptive search: only the l_c the advice on what to freeze needs" if sweep.search else ""),
              file=sys.stderr)

    signal.signal(signal.SIGTERM, _interrupt)  # a batch system's stop is handled like Ctrl-C
    try:
        ran = sweep.run(announce)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished jobs are kept in {out_dir}; run the same command again to resume", file=sys.stderr)
        return 130
    failed = sweep.failed()
    print(f"{cfg.name}: ran {len(ran)} jobs{' on Ray' if cfg.executor == 'ray' else ''}" + (
        f"; {len(failed)} of the sweep's jobs failed (the reason is in each record in {out_dir / 'jobs'}); "
        "to try them again, run the same command with --retry-failed" if failed else ""), file=sys.stderr)
    if cfg.estimate:
        print(f"estimates: {write_estimates(sweep, progress=not quiet)}", file=sys.stderr)
    print(f"report: {report(out_dir)}")
    return 0


def cmd_estimate(config: str, out: Optional[str], overrides: List[str], quiet: bool, executor: Optional[str] = None,
                 address: Optional[str] = None, truncated: Optional[int] = None) -> int:
    cfg = load(config, overrides, executor, address)
    out_dir = Path(out or Path("runs") / cfg.name)
    sweep = Sweep(cfg, out_dir, progress=not quiet)
    todo = [job for job in sweep.pending() if job.primary is None]
    print(f"{cfg.name}: {len(todo)} primaries to train in {out_dir} {where(cfg, sweep)}, then estimates without "
          "fine-tuning", file=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        train_primaries(sweep)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished jobs are kept in {out_dir}; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"estimates: {write_estimates(sweep, progress=not quiet)}", file=sys.stderr)
    if truncated is not None:
        try:
            where_to = run_truncated(cfg, out_dir, truncated, progress=not quiet)
        except KeyboardInterrupt:
            print(f"\ninterrupted: the truncated sweep's finished jobs are kept in {out_dir}; run the same command "
                  "again to resume", file=sys.stderr)
            return 130
        print(f"{truncated_name(truncated)}: {where_to}", file=sys.stderr)
    print(f"report: {report(out_dir)}")
    return 0


def cmd_freeze(args) -> int:
    cfg = freeze_config(args.model, args.arch, args.data, args.cuts, args.classes, args.name, args.seeds, args.overrides)
    code = cmd_run_config(cfg, args.out, args.quiet)
    if code == 0:
        for line in advice(Path(args.out or Path("runs") / cfg.name), cfg.primary.baseline):
            print(line)
    return code


def cmd_report(run_dir: str, out: Optional[str] = None) -> int:
    print(f"report: {report(Path(run_dir), None if out is None else Path(out))}")
    return 0


def cmd_list() -> int:
    tasks = {name: cls() for name, cls in TASKS.items()}
    print("tasks:")
    print(f"  {'name':<18}{'classes':>8}  {'input shape':<14}{'metric':<26}{'data':<11}description")
    for name, task in tasks.items():
        metric = f"{task.metric} ({'lower' if task.lower_is_better else 'higher'} better)"
        data = "available" if task.available() else "missing"
        print(f"  {name:<18}{task.num_classes:>8}  {str(task.input_shape):<14}{metric:<26}{data:<11}{task.description}")
    print("architectures (L_H and parameters for each input shape they build on, 10 outputs):")
    shapes = list(dict.fromkeys(task.input_shape for task in tasks.values()))
    for name, builder in ARCHS.items():
        built = []
        for shape in shapes:
            try:
                net = builder(shape, 10)
            except Exception:  # an architecture need not build on every shape
                continue
            built.append(f"{shape}: L_H={net.num_layers}, {count_parameters(net):,} parameters")
        print(f"  {name:<18}" + ("; ".join(built) or "builds on none of the tasks' shapes"))
    return 0


def cmd_fetch(name: str, root: Optional[str]) -> int:
    for path in fetch(name, root):
        print(path)
    return 0


# `freeze` searches adaptively by default once bench_search.py shows the full sweep's advice on 11 of the
# demo's 12 curves at no more than 40% of its training cost; it gives 12 of 12 at about half the cost.
FREEZE_SEARCH = "full"


def executor_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--executor", choices=("local", "ray"), help="where the jobs run: this process (local, the "
                         "default) or tasks on a Ray cluster (ray); overrides the config's executor")
    command.add_argument("--address", help="the Ray cluster to run on: 'auto' for the one running on this machine "
                         "(ray start), or HOST:PORT; without it Ray starts a local cluster. Implies --executor ray")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerwise", description="Measure how transferable each layer of a network "
                                "is between tasks (gradual transfer learning).")
    p.add_argument("--version", action="version", version=f"layerwise {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the embedded offline experiment end to end and write its report")
    demo.add_argument("--out", help="run directory (default: runs/demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    run = sub.add_parser("run", help="run an experiment config (a TOML file or a bundled experiment's name)")
    run.add_argument("config", help="a TOML file, or the name of a bundled experiment (demo, paper-images, paper-speech)")
    run.add_argument("--out", help="run directory (default: runs/NAME); running again resumes")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set train.epochs=2 --set seeds=[0,1,2]")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    existing = run.add_mutually_exclusive_group()
    existing.add_argument("--extend", action="store_const", dest="mode", const="extend", default="resume",
                          help="when --out holds another experiment: keep it and add this config's jobs to it")
    existing.add_argument("--replace", action="store_const", dest="mode", const="replace",
                          help="when --out holds another experiment: move its config, plan and report to "
                          "OUT/replaced/ and run this one (finished jobs are kept and reused)")
    run.add_argument("--retry-failed", action="store_true",
                     help="run again the jobs recorded as failed (a diverged training), instead of keeping them")
    executor_options(run)
    run.add_argument("--search", choices=("full", "adaptive"), help="which l_c to train: every one (full, the "
                     "default: the curves are the product) or only those the advice on what to freeze needs "
                     "(adaptive); overrides the config's search")
    est = sub.add_parser("estimate", help="train the primaries only and estimate every curve without fine-tuning "
                         "(linear probe, LogME, H-score, kNN); checked against the real curves when the run has them")
    est.add_argument("config")
    est.add_argument("--out", help="run directory (default: runs/NAME), shared with `layerwise run`")
    est.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, as for run")
    est.add_argument("--quiet", action="store_true", help="no progress bar")
    est.add_argument("--truncated", type=int, metavar="EPOCHS", help="also train the real sweep's transfers for "
                     "EPOCHS epochs each (from the same primaries, into OUT/truncated-EPOCHS), the reference the "
                     "estimates are judged against at about their cost; its cost is measured beside theirs")
    executor_options(est)
    frz = sub.add_parser("freeze", help="which layers of a trained network to freeze for your data: transfer it at "
                         "every l_c, train a baseline from scratch, print the advice")
    frz.add_argument("--model", help="its weights: a .safetensors file or a torch.save'd state_dict (read as weights "
                     "only; optional when --arch is a callable that loads its own), or a Hugging Face model's "
                     "save_pretrained directory (vit, bert, roberta, distilbert, wav2vec2, hubert; needs no --arch)")
    frz.add_argument("--arch", help="a registered architecture (see `layerwise list`) or "
                     "package.module:function returning an nn.Module; not needed for a Hugging Face directory")
    frz.add_argument("--data", required=True, help="the task to transfer to: a registered task's name, or your data: "
                     "an image folder, a .npz file (or folder of .npy), an audio folder; its options with "
                     "--set data.NAME.KEY=VALUE (e.g. shape=[1,16,16]), NAME being its file or folder name")
    frz.add_argument("--cuts", nargs="+", help="for a module: the submodules that end each body layer, or a family "
                     "(resnet, timm-resnet, alexnet, vgg11..vgg19[_bn]); default: from the function's name. For a "
                     "Hugging Face model: the units that end each body layer (embeddings, blocks.0, blocks.1 ...) or "
                     "every-K (the stem and every K-th block); default: every unit")
    frz.add_argument("--classes", type=int, help="outputs of the checkpoint's head (default: read from head.weight)")
    frz.add_argument("--name", help="the primary's name in the results (default: the checkpoint's file name)")
    frz.add_argument("--seeds", type=int, default=3, help="seeds per l_c and for the baseline (default 3)")
    frz.add_argument("--out", help="run directory (default: runs/freeze-NAME-DATA); running again resumes")
    frz.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, as for run (e.g. --set train.epochs=10)")
    frz.add_argument("--quiet", action="store_true", help="no progress bar")
    frz.add_argument("--search", choices=("full", "adaptive"), default=FREEZE_SEARCH,
                     help="which l_c to train: every one (full, the default: the whole curve) or only those the "
                     "advice needs (adaptive: l_c = 0 upward, stopping at the first not shown safe)")
    rep = sub.add_parser("report", help="rebuild the figures and report.html of a run directory")
    rep.add_argument("dir")
    rep.add_argument("--out", help="folder for the report (figures, tables, report.html, results.csv) instead of the "
                                   "run directory, which is then left as it is (a read-only run)")
    sub.add_parser("list", help="tasks and architectures")
    fetch = sub.add_parser("fetch", help="download a corpus from its official source, checked by MD5")
    fetch.add_argument("name", help="cifar10, cifar100, svhn or svhn-extra")
    fetch.add_argument("--root", help="directory for the files (default: $LAYERWISE_DATA/<task>, else ~/.cache/layerwise/<task>)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "search", None):
        args.overrides.append(f'search="{args.search}"')
    try:
        if args.command == "demo":
            return cmd_run("demo", args.out, [], args.quiet)
        if args.command == "run":
            return cmd_run(args.config, args.out, args.overrides, args.quiet, args.mode, args.retry_failed,
                           args.executor, args.address)
        if args.command == "freeze":
            return cmd_freeze(args)
        if args.command == "estimate":
            return cmd_estimate(args.config, args.out, args.overrides, args.quiet, args.executor, args.address,
                                args.truncated)
        if args.command == "report":
            return cmd_report(args.dir, args.out)
        if args.command == "fetch":
            return cmd_fetch(args.name, args.root)
        return cmd_list()
    except UserError as err:
        print(f"layerwise: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk or a read-only folder met outside the run directory's own files
        if err.errno not in STORAGE_ERRORS:
            raise
        print(f"layerwise: error: cannot write {err.filename or 'a file'}: {err.strerror}; every finished job is "
              "kept: make room (or make the folder writable) and run the same command again", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
