"""Fit one network on one task and evaluate it.

Only parameters that require grad reach the optimizer, so a frozen layer gets neither gradient
nor optimizer state (nor weight decay). The epoch is chosen by the validation metric and the
record holds validation and test metrics at that epoch. The same seed gives the same numbers on
the CPU: shuffling, augmentation and dropout each draw from seeded generators.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from .errors import UserError
from .net import LayeredNet
from .tasks.base import Split, Task, TaskData


@dataclass
class TrainConfig:
    """The training budget and recipe; every run of one sweep gets the same one."""

    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 1024
    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 1e-3
    finetune_lr: Optional[float] = None  # transfers' learning rate; unset: `lr`, the paper's single recipe
    finetune_epochs: Optional[int] = None  # transfers' epochs; unset: `epochs` (a truncated sweep sets fewer)
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "step" | "cosine"
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # "step": fractions of the run
    gamma: float = 0.1  # "step": factor at each milestone
    device: str = "auto"  # "auto" (cuda when present) | "cpu" | "cuda" | "cuda:1" ...
    amp: bool = False  # mixed precision (float16 on CUDA, bfloat16 on CPU)
    channels_last: Optional[bool] = None  # unset: on for the CPU, where convolutions and pooling run faster in it
    cache_prefix: bool = True  # train on cached frozen-prefix outputs when inputs are deterministic
    cache_limit_gb: float = 2.0  # largest prefix-output cache held in memory per secondary task

    def __post_init__(self):
        choices = {"optimizer": ("adam", "sgd"), "schedule": ("constant", "step", "cosine")}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise UserError(f"train.{key} must be one of {', '.join(valid)}; got {getattr(self, key)!r}")
        for key in ("epochs", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise UserError(f"train.{key} must be at least 1; got {getattr(self, key)!r}")
        if self.finetune_epochs is not None and (type(self.finetune_epochs) is not int or self.finetune_epochs < 1):
            raise UserError(f"train.finetune_epochs must be a whole number at least 1 (or left out to use epochs); "
                            f"got {self.finetune_epochs!r}")
        tuning = self.finetune_lr
        if tuning is not None and (isinstance(tuning, bool) or not isinstance(tuning, (int, float)) or tuning <= 0):
            raise UserError(f"train.finetune_lr must be a positive number (or left out to use lr); got {tuning!r}")
        # A setting that cannot train would give every job a chance-level result recorded as ok.
        for key in ("lr", "momentum", "weight_decay", "gamma", "cache_limit_gb"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"train.{key} must be a finite number; got {value!r}")
        if self.lr <= 0:
            raise UserError(f"train.lr must be positive (at {self.lr!r} no weight ever changes); got {self.lr!r}")
        for key in ("momentum", "weight_decay", "cache_limit_gb"):
            if getattr(self, key) < 0:
                raise UserError(f"train.{key} must be at least 0; got {getattr(self, key)!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise UserError(f"train.nesterov = true needs optimizer = \"sgd\" and a positive train.momentum; got "
                            f"optimizer = {self.optimizer!r}, momentum = {self.momentum!r}")
        if self.schedule == "step" and (self.gamma <= 0 or not all(
                isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m < 1 for m in self.milestones)):
            raise UserError(f"train.schedule = \"step\" needs gamma > 0 and milestones between 0 and 1 (fractions of "
                            f"the run); got gamma = {self.gamma!r}, milestones = {self.milestones!r}")
        if self.batch_size < 2:  # fit skips a lone example: batch norm cannot normalise one
            raise UserError(f"train.batch_size must be at least 2 (a batch of one example cannot train with batch "
                            f"norm, so every step would be skipped); got {self.batch_size!r}")


class TrainingFailed(Exception):
    """A training run that cannot give a usable model (its loss diverged, or no batch could be
    made). `history` holds the epochs it ran; a sweep records the job as failed."""

    def __init__(self, reason: str, history: List[Dict[str, float]]):
        super().__init__(reason)
        self.history = history


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device = {name!r} but this machine has no CUDA device; use 'auto' or 'cpu'")
    return torch.device(name)


def memory_layout(cfg: TrainConfig, device: torch.device) -> torch.memory_format:
    """Where 4-d activations keep their channels. On the CPU channels-last is the unset default:
    oneDNN's convolutions and torch's pooling are vectorised over channels there (a 2x2 max pool
    of 64 x 32 x 16 x 16 ran 13x faster; the demo sweep 1.2x faster). Its results are as
    reproducible as the default layout's at a fixed thread count: a job retrained in another
    process, or after other jobs, gives the same bits. On a GPU it pays with mixed precision, so
    it is asked for there."""
    wanted = device.type == "cpu" if cfg.channels_last is None else cfg.channels_last
    return torch.channels_last if wanted else torch.contiguous_format


def to_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """`x` in `layout` when it is a batch of images (4-d); other inputs (a bundle of token ids and
    their mask, say) have no channels to move."""
    return x.contiguous(memory_format=layout) if isinstance(x, torch.Tensor) and x.dim() == 4 else x


def lr_factor(cfg: TrainConfig, progress: float) -> float:
    """The learning-rate multiplier at `progress` (0..1) of the run."""
    if cfg.schedule == "step":
        return cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The fused kernels update every tensor in one call: the same rule, and on small networks a
    third of the time of torch's default, which loops over the tensors in Python (an Adam step
    of alexnet-small on the CPU: 0.21 ms against 0.74 ms)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def better(value: float, best: Optional[float], lower_is_better: bool) -> bool:
    return best is None or (value < best if lower_is_better else value > best)


@dataclass
class FitResult:
    best_epoch: int
    val: Dict[str, float]
    test: Dict[str, float]
    history: List[Dict[str, float]]
    seconds: float


@torch.no_grad()
def evaluate(net: LayeredNet, task: Task, split: Split, cfg: TrainConfig, start: int = 0) -> Dict[str, float]:
    """Metrics of one split: logits for every example (in order), then the task's own scoring."""
    net.eval()
    device = split.y.device
    layout = memory_layout(cfg, device)
    chunks = []
    for i in range(0, len(split), cfg.eval_batch_size):
        end = min(i + cfg.eval_batch_size, len(split))
        # A tensor is sliced (a view, no copy); a lazy view of examples takes only index tensors.
        x = split.x[i:end] if isinstance(split.x, torch.Tensor) else split.x[torch.arange(i, end, device=device)]
        with torch.autocast(device.type, enabled=cfg.amp):
            chunks.append(net(to_layout(x, layout), start=start).float())
    logits = torch.cat(chunks).cpu()
    groups = None if split.groups is None else split.groups.cpu()
    return task.score(logits, Split(None, split.y.cpu(), groups))


def _failure(train_loss: float, epoch: int, examples: int) -> str:
    if examples < 2:
        return f"the training split has {examples} example(s); a batch needs at least 2"
    return f"the training loss diverged ({train_loss}) in epoch {epoch}; try a lower train.lr"


def non_finite_state(net: torch.nn.Module) -> Optional[str]:
    """The name of the first parameter or buffer of `net` holding NaN or inf (None: all finite)."""
    for name, value in net.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def fit(net: LayeredNet, task: Task, data: TaskData, cfg: TrainConfig, seed: int, start: int = 0,
        on_epoch: Optional[Callable[[int, Dict[str, float]], None]] = None) -> FitResult:
    """Train `net` on `data` (already on the training device) for `cfg.epochs` epochs.

    `start > 0` means the inputs are the outputs of the net's first `start` (frozen) layers,
    computed once elsewhere; the forward pass then begins at layer `start`. Augmentation applies
    only to raw inputs, which is why prefix caching is used only for deterministic tasks.

    Raises TrainingFailed when an epoch's summed training loss is not finite, or when the weights
    it ends with are not (a last step that diverged): the network is then no model at all, and its
    metrics would pass for a (chance-level) result.
    """
    began = time.perf_counter()
    device = data.train.y.device
    layout = memory_layout(cfg, device)
    net.to(memory_format=layout)
    torch.manual_seed(seed)  # dropout
    shuffle = torch.Generator().manual_seed(seed)
    augment = torch.Generator(device=device).manual_seed(seed)
    optimizer = make_optimizer(net.trainable_parameters(), cfg)
    n = len(data.train)
    total_steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step / total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")

    best, best_epoch, best_state, history = None, 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        running, batches = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2:  # a lone example breaks batch norm and teaches nothing
                scheduler.step()
                continue
            x = data.train.x[idx]
            if start == 0 and not task.deterministic:
                x = task.augment(x, augment)
            with torch.autocast(device.type, enabled=cfg.amp):
                x, begin = to_layout(x, layout), max(start, net.frozen)
                if start < net.frozen:
                    with torch.inference_mode():  # the frozen prefix is a fixed function: no graph
                        x = net.features(x, upto=net.frozen, start=start)
                    x = x.clone()  # an inference tensor cannot enter autograd; a clone can
                loss = task.loss(net(x, start=begin), data.train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running += loss.detach().float()
            batches += 1
        train_loss = running.item() / max(batches, 1)  # the one host sync of the epoch
        if not batches or not math.isfinite(train_loss):
            history.append({"epoch": epoch, "train_loss": train_loss if batches else None})
            raise TrainingFailed(_failure(train_loss, epoch, n), history)
        broken = non_finite_state(net)
        if broken:  # the epoch's last step diverged after its loss was taken: its metrics would be chance's
            history.append({"epoch": epoch, "train_loss": None})
            raise TrainingFailed(f"the training diverged in epoch {epoch}: {broken} holds NaN or inf after its last "
                                 "step; try a lower train.lr", history)
        val = evaluate(net, task, data.val, cfg, start)
        history.append({"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in val.items()}})
        if on_epoch:
            on_epoch(epoch, val)
        if better(val[task.metric], best, task.lower_is_better):
            best, best_epoch = val[task.metric], epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    val = history[best_epoch - 1]
    test = evaluate(net, task, data.test, cfg, start)
    val_metrics = {k[4:]: v for k, v in val.items() if k.startswith("val_")}
    return FitResult(best_epoch, val_metrics, test, history, time.perf_counter() - began)
