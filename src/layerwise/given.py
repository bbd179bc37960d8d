"""A given primary: a sweep whose primary is loaded, not trained.

Most people who ask "which layers should I freeze?" already hold a trained network. Their primary
is a checkpoint (safetensors, or a PyTorch state dict read with `weights_only=True`, never an
arbitrary pickle) of a registered or Python-defined architecture, or a module that a Python callable
builds (`package.module:function`, called with no arguments), cut into body layers at named
submodules (`cut.py`, `nets/cuts.py`). The config names it in a `[primary]` table:

    tasks = ["printed-digits"]              # the secondary task(s)
    [primary]
    checkpoint = "digits.safetensors"       # relative to the config file
    arch = "alexnet-small"                  # or "package.module:function"
    name = "digits"                         # the primary's name in the results (default: the file's stem)

The sweep then plans one "given" job, which loads the weights, stores them as the run's own
checkpoint and records the primary (with no metrics, so the analysis sees it as no one's baseline),
and every `l_c` of a transfer into each task, plus each task's baseline trained from scratch, so
the report and the what-to-freeze advice work as for a trained primary. `baseline = false` states
that the architecture is not trained from scratch (a callable's module whose parameters cannot be
reset): then the transfers have no baseline to be compared with.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from safetensors.torch import load_file
from torch import nn

from . import hf
from .errors import UserError, unknown
from .hashing import directory_digest, file_digest, tensors_digest
from .net import LayeredNet
from .nets import ARCHS
from .nets.cuts import family_of, resolve_cuts
from .options import check_dataclass_options

SAFETENSORS = (".safetensors",)
NESTED = ("state_dict", "model")  # where training scripts often put the weights inside a checkpoint


@dataclass
class GivenPrimary:
    arch: str = ""  # a registered or Python-defined architecture, or "package.module:function"
    checkpoint: Optional[str] = None  # its weights; optional for a callable that loads its own
    name: Optional[str] = None  # the primary's name in results (the `source` column)
    classes: Optional[int] = None  # the checkpoint head's outputs (default: read from head.weight)
    cuts: Optional[Union[str, List[str]]] = None  # where to cut a callable's module (a family or names)
    baseline: bool = True  # train each task's baseline from scratch

    @property
    def is_callable(self) -> bool:
        return ":" in self.arch

    @property
    def is_hf(self) -> bool:
        """A Hugging Face model: the checkpoint is a save_pretrained directory (`hf.py`)."""
        return self.checkpoint is not None and Path(self.checkpoint).is_dir()


def given_primary(table: Any, where: str, archs, base: Path) -> GivenPrimary:
    """The `[primary]` table of a config, checked: the architecture exists, the checkpoint is a
    file (a relative path is taken from `base`, the config file's folder)."""
    where = f"{where} [primary]"
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table")
    check_dataclass_options(GivenPrimary, table, "key", where)
    given = GivenPrimary(**table)
    if given.checkpoint is not None and (base / Path(given.checkpoint).expanduser()).is_dir():
        return _hf_primary(given, base, where)
    if not given.arch:
        raise UserError(f"{where}: arch is required: a registered architecture ({', '.join(sorted(ARCHS))}), "
                        "one of your own, or a Python callable as \"package.module:function\"")
    if given.is_callable:
        import_callable(given.arch, where)
    elif given.arch not in archs:
        raise unknown("architecture", given.arch, archs, where)
    if given.checkpoint is not None:
        path = (base / Path(given.checkpoint).expanduser()).resolve()
        if not path.is_file():
            raise UserError(f"{where}: checkpoint {path} does not exist (or is not a file)")
        given.checkpoint = str(path)
    elif not given.is_callable:
        raise UserError(f"{where}: checkpoint is required for the registered architecture {given.arch!r}")
    if given.name is None:
        given.name = Path(given.checkpoint).stem if given.checkpoint else given.arch.rpartition(":")[2]
    if given.cuts is not None:
        resolve_cuts(given.cuts, f"{where} cuts")
    return given


def _hf_primary(given: GivenPrimary, base: Path, where: str) -> GivenPrimary:
    """A `[primary]` whose checkpoint is a saved Hugging Face model: its family is read from its
    config.json now (a directory that is none, or a model_type with no family, stops here), and
    its architecture is named after it ("hf-vit") unless arch names it."""
    given.checkpoint = str((base / Path(given.checkpoint).expanduser()).resolve())
    config = hf.read_config(given.checkpoint)
    hf.require_transformers()
    if given.arch and (given.arch in ARCHS or given.is_callable):
        raise UserError(f"{where}: checkpoint {given.checkpoint} is a Hugging Face model; arch {given.arch!r} is "
                        "another architecture (leave arch out, or give it a name of your own)")
    given.arch = given.arch or f"hf-{config['model_type']}"
    given.name = given.name or Path(given.checkpoint).name
    if given.classes is not None:
        raise UserError(f"{where}: classes is read from the Hugging Face model's config.json; leave it out")
    return given


def import_callable(spec: str, where: str):
    """The function `package.module:function` names, or a UserError saying what is wrong."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"{where}: arch {spec!r}: cannot import {module_name!r} ({err})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{where}: arch {spec!r}: {module_name} has no function {attr!r}")
    return fn


# ---------------------------------------------------------------------------------------------
# Weights


def read_state(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a PyTorch state dict (weights only)."""
    try:
        if path.endswith(SAFETENSORS):
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise UserError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # pickle refused by weights_only, a damaged or foreign file
        raise UserError(f"cannot read checkpoint {path} as weights only (a safetensors file or a torch.save'd "
                        f"state_dict of tensors): {type(err).__name__}: {str(err).splitlines()[0]}") from None
    for key in NESTED:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path} is not a state dict (a mapping of names to tensors); save "
                        "model.state_dict() with torch.save, or use safetensors")
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # it would train as a divergence ("try a lower lr") or score chance, not as a bad file
        raise UserError(f"checkpoint {path} holds NaN or inf in {_first(broken)}; expected finite weights (a model "
                        "saved after its training diverged?)")
    return state


def load_weights(net: nn.Module, state: Dict[str, torch.Tensor], path: str, what: str) -> nn.Module:
    """Load `state` into `net`, or name in one line every missing and unexpected key and every
    shape that differs (a checkpoint of another architecture, other options or another head)."""
    own = net.state_dict()
    optional = lambda k: k.endswith("num_batches_tracked")  # noqa: E731 (old checkpoints lack it)
    missing = [k for k in own if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {list(state[k].shape)} in the checkpoint, {list(own[k].shape)} in the model"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = [f"{label} {_first(items)}" for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ:", shapes)) if items]
    if problems:
        raise UserError(f"checkpoint {path} does not fit {what}: {'; '.join(problems)}")
    net.load_state_dict(state, strict=False)
    return net


def _first(items: List[str], shown: int = 3) -> str:
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


# ---------------------------------------------------------------------------------------------
# Networks


def example_input(input_shape: Tuple[int, ...]) -> torch.Tensor:
    """A fixed random batch to check a cut on (zeros would hide a skip connection that adds zero)."""
    return torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))


def as_layered(module: nn.Module, given: GivenPrimary, input_shape) -> LayeredNet:
    """A callable's module as a LayeredNet: used as is when it is one, else cut at `cuts` (by
    default the cut list its function's name implies, e.g. resnet50 -> "resnet")."""
    if isinstance(module, LayeredNet):
        return module
    if not isinstance(module, nn.Module):
        raise UserError(f"arch {given.arch!r} returned {type(module).__name__}, not a torch nn.Module")
    cuts = given.cuts or family_of(given.arch.rpartition(":")[2])
    if not cuts:
        raise UserError(f"[primary] cuts is required for arch {given.arch!r}: the dotted names of the submodules "
                        "that end each body layer, or a family's cut list")
    return LayeredNet.from_module(module, resolve_cuts(cuts, "[primary] cuts"), example_input(input_shape))


def reset(module: nn.Module, given: GivenPrimary) -> nn.Module:
    """The same architecture with fresh weights, for the baselines: every submodule holding
    parameters resets them, or the architecture cannot be trained from scratch here."""
    for name, sub in module.named_modules():
        if any(True for _ in sub.parameters(recurse=False)):
            if not hasattr(sub, "reset_parameters"):
                raise UserError(f"arch {given.arch!r} cannot be trained from scratch for the baselines: its submodule "
                                f"{name or '(root)'!r} ({type(sub).__name__}) has parameters but no reset_parameters(); "
                                "set baseline = false in [primary] to transfer without a baseline")
            sub.reset_parameters()
    return module


@dataclass(frozen=True)
class HFBuilder:
    """A builder (input_shape, num_outputs) -> LayeredNet for a Hugging Face model's architecture,
    freshly initialised from its config.json (the baselines; the caller seeds it), cut as the
    given primary is, with a fresh head. An object, so that a worker process can be sent it."""

    given: GivenPrimary

    def __call__(self, input_shape, num_outputs: int) -> LayeredNet:
        net = hf.layered(self.given.checkpoint, self.given.cuts, weights=False)
        return LayeredNet(net.layers, net.make_head(num_outputs), net.make_head)


@dataclass(frozen=True)
class CallableBuilder:
    """A builder (input_shape, num_outputs) -> LayeredNet for a callable's architecture: its module
    (with fresh weights when the baselines train), cut, with a fresh head. An object rather than
    a closure, so that a worker process can be sent it."""

    given: GivenPrimary

    def __call__(self, input_shape, num_outputs: int) -> LayeredNet:
        module = import_callable(self.given.arch, "[primary]")()
        if self.given.baseline and isinstance(module, nn.Module):
            reset(module, self.given)
        net = as_layered(module, self.given, input_shape)
        return LayeredNet(net.layers, net.make_head(num_outputs), net.make_head)


def primary_net(cfg, input_shape, weights: bool) -> LayeredNet:
    """The given primary's network; with `weights`, holding the given weights (else as built,
    for the run's own checkpoint of it to be loaded into)."""
    given = cfg.primary
    if given.is_hf:
        return hf.layered(given.checkpoint, given.cuts, weights=weights)
    what = f"arch {given.arch!r}"
    state = read_state(given.checkpoint) if weights and given.checkpoint else None
    if given.is_callable:
        module = import_callable(given.arch, "[primary]")()
        if state is not None:
            load_weights(module, state, given.checkpoint, what)
        return as_layered(module, given, input_shape)
    classes = given.classes or _head_outputs(cfg)
    builder = cfg.custom_archs.get(given.arch) or ARCHS[given.arch]
    options = cfg.arch_options.get(given.arch, {})
    net = builder(input_shape, classes, **options)
    if state is not None:
        load_weights(net, state, given.checkpoint, f"{what} with {classes} outputs, input shape {tuple(input_shape)}"
                     + (f" and options {options}" if options else ""))
    return net


def _head_outputs(cfg) -> int:
    """The number of outputs of the checkpoint's head, from its `head.weight` (a LayeredNet's)."""
    state = read_state(cfg.primary.checkpoint)
    head = state.get("head.weight")
    if head is None:
        raise UserError(f"{cfg.source} [primary]: classes is required: checkpoint {cfg.primary.checkpoint} has no "
                        "head.weight to read the number of outputs of its head from")
    return int(head.shape[0])


def identity(cfg, input_shape) -> Dict[str, Any]:
    """What determines the given primary: its architecture and its weights (the file's digest, or
    the state a callable builds when there is no file). Loading them here names a checkpoint that
    does not fit before anything trains."""
    given = cfg.primary
    net = primary_net(cfg, input_shape, True)
    if given.is_hf:
        weights = directory_digest(Path(given.checkpoint))
    else:
        weights = file_digest(given.checkpoint) if given.checkpoint else tensors_digest(net.state_dict().items())
    return {"arch": given.arch, "options": cfg.arch_options.get(given.arch, {}), "classes": given.classes,
            "cuts": given.cuts, "input_shape": list(input_shape), "weights": weights}
