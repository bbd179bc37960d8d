"""Any `nn.Module` as a LayeredNet: cut it into body layers at named submodules.

A pretrained network arrives as one module whose forward calls its submodules. Holding its first
`l_c` layers constant needs those layers as a list (see `net.py`), so `cut_module` makes that list
from the dotted names of the submodules that END each body layer, in execution order: the names
timm's `freeze(submodules=...)` and torchvision's feature extraction use ("layer1", "features.4").
What runs after the last cut is the module's output layer; it stays the net's head (so the net
computes what the module computes) and transfer replaces it with a fresh linear head per task.

Cutting is honest only when the forward is a chain: each submodule receives exactly what the one
before it returned. A skip connection around a cut, or a function applied between two submodules,
would make the pieces compute something other than the module, so the chain is checked on an
example input, submodule by submodule, and the first break is named with the body layer it falls
in. One function between submodules is accepted: flattening to (batch, features), which
torchvision's ResNet, VGG and AlexNet apply with `torch.flatten` before their classifier; it becomes
an `nn.Flatten` in the piece.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import UserError

Atom = Tuple[str, nn.Module]
HeadBuilder = Callable[[int], nn.Module]  # as net.py's: num_outputs -> a fresh head


def cut_module(module: nn.Module, cuts: Sequence[str], example: torch.Tensor,
               make_head: Optional[HeadBuilder] = None) -> Tuple[List[nn.Module], nn.Module, HeadBuilder]:
    """The body layers, head and head builder of a LayeredNet (`LayeredNet.from_module` makes it)
    whose body layers are `module`'s submodules cut after each name in `cuts`.

    The pieces are the module's own submodules (not copies). `example` (a batch of inputs) is run
    once in evaluation mode to find the execution order and to check that the pieces compose to
    the module's own output. `make_head(num_outputs)` defaults to a linear layer on the flattened
    output of the last body layer."""
    what = type(module).__name__
    if isinstance(cuts, str):  # iterated, it would be a list of one-letter names
        raise UserError(f"cannot cut {what} at {cuts!r}: cuts must be a list of submodule names, not a string; a "
                        f"family's list is layerwise.nets.cuts.CUTS[{cuts!r}] (a given primary's cuts may name it)")
    cuts = _check_names(module, list(cuts), what)
    atoms = _atoms(module, "", cuts)
    calls, traced = _trace(module, atoms, example, what)
    order = [atoms[i][0] for i in calls]
    _check_order(order, cuts, what)
    pieces, tail = _pieces(atoms, calls, cuts)
    flatten_after = _check_chain(atoms, calls, pieces, example, traced, what)
    _check_training_chain(module, atoms, calls, pieces, example, what)
    layers = [_sequential(atoms, piece, flatten_after) for piece in pieces]
    head = _sequential(atoms, tail, flatten_after) if tail else nn.Identity()
    was_training = module.training
    module.eval()
    with torch.no_grad():
        features = example
        for layer in layers:
            features = layer(features)
        if make_head is None:
            make_head = _linear_head(tuple(features.shape[1:]))
        same = torch.allclose(head(features), traced[0], rtol=1e-4, atol=1e-5)
    module.train(was_training)
    if not same:  # every link was checked above: this would be a bug here, not the user's cut
        raise RuntimeError(f"the pieces of {what} do not compose to its output although every link matched")
    return layers, head, make_head


def _check_names(module: nn.Module, cuts: List[str], what: str) -> List[str]:
    if not cuts:
        raise UserError(f"cannot cut {what}: no cuts given; name the submodules that end each body layer "
                        "(e.g. [\"layer1\", \"layer2\"])")
    names = dict(module.named_modules())
    for cut in cuts:
        if cut not in names or cut == "":
            near = [n for n in names if n and n.split(".")[-1] == cut.split(".")[-1]][:5]
            hint = f"; did you mean {', '.join(near)}" if near else \
                f"; its top-level submodules: {', '.join(n for n, _ in module.named_children())}"
            raise UserError(f"cannot cut {what} at {cut!r}: it has no submodule of that name{hint}")
    if len(set(cuts)) != len(cuts):
        raise UserError(f"cannot cut {what}: a cut is named twice in {cuts}")
    for a in cuts:
        for b in cuts:
            if b.startswith(a + "."):
                raise UserError(f"cannot cut {what} at both {a!r} and {b!r}: one lies inside the other")
    return cuts


def _atoms(module: nn.Module, prefix: str, cuts: List[str]) -> List[Atom]:
    """The module's submodules in registration order, opened up only where a cut lies inside one."""
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if own:
        raise UserError(f"cannot cut inside {prefix[:-1] or 'the module'} ({type(module).__name__}): it holds parameters "
                        f"of its own ({', '.join(own)}) that its forward uses outside its submodules")
    out = []
    for name, child in module.named_children():
        full = prefix + name
        if any(c.startswith(full + ".") for c in cuts):
            out += _atoms(child, full + ".", cuts)
        else:
            out.append((full, child))
    return out


def _trace(module: nn.Module, atoms: List[Atom], example: torch.Tensor, what: str, training: bool = False):
    """Run `module(example)` in evaluation mode (or training mode, with autograd on), recording the
    order in which the atoms run, a copy of what each receives and returns (copies: an in-place
    ReLU would change them later), and which atoms received a tensor autograd cannot reach."""
    calls: List[int] = []
    seen: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
    grads: Dict[int, List[bool]] = {}  # in training mode: whether each atom's input and output require grad
    problems: List[str] = []

    def before(i):
        def hook(mod, args, kwargs):
            if i in seen or i in calls:
                problems.append(f"{atoms[i][0]!r} runs more than once in one forward (a module reused)")
            elif kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
                problems.append(f"{atoms[i][0]!r} is called with something other than one tensor")
            else:
                calls.append(i)
                seen[i] = (args[0].detach().clone(), None)
                grads[i] = [args[0].requires_grad, False]
        return hook

    def after(i):
        def hook(mod, args, output):
            if i in seen and seen[i][1] is None:
                if not isinstance(output, torch.Tensor):
                    problems.append(f"{atoms[i][0]!r} returns {type(output).__name__}, not one tensor")
                else:
                    seen[i] = (seen[i][0], output.detach().clone())
                    grads[i][1] = output.requires_grad
        return hook

    handles = []
    for i, (_, atom) in enumerate(atoms):
        handles.append(atom.register_forward_pre_hook(before(i), with_kwargs=True))
        handles.append(atom.register_forward_hook(after(i)))
    was_training = module.training
    try:
        with torch.set_grad_enabled(training):
            output = module.train(training)(example)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    if problems:
        raise UserError(f"cannot cut {what}: {problems[0]}; its forward is not a chain of submodules there")
    if not isinstance(output, torch.Tensor):
        raise UserError(f"cannot cut {what}: its forward returns {type(output).__name__}, not one tensor")
    if training:
        return calls, (output.detach(), seen), grads
    return calls, (output, seen)


def _check_training_chain(module: nn.Module, atoms: List[Atom], calls: List[int], pieces: List[List[int]],
                          example: torch.Tensor, what: str) -> None:
    """The chain again in training mode, where the cut net trains: a function the forward applies
    only then (functional dropout, `F.dropout(x, training=self.training)`) or one that cuts the
    gradient (`.detach()`) would make the cut net train differently from the module. The module's
    batch-norm statistics and the random state are left as they were."""
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    x = (example if len(example) > 1 else torch.cat([example, example])).detach().clone()  # batch norm needs two
    if x.is_floating_point():  # not a leaf: an in-place first submodule may write into it
        x = x.requires_grad_(True).clone()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            train_calls, traced, grads = _trace(module, atoms, x, what, training=True)
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    if train_calls != calls:
        raise UserError(f"cannot cut {what}: in training mode its forward runs other submodules than in evaluation "
                        "mode; cut a module whose forward is the same chain in both")
    try:
        _check_chain(atoms, calls, pieces, x, traced, what)
    except UserError as err:
        raise UserError(f"{err} (in training mode: a function applied only while training, such as functional "
                        "dropout, breaks the chain; make it a submodule, nn.Dropout)") from None
    for n, i in enumerate(calls):
        reached = x.requires_grad if n == 0 else grads[calls[n - 1]][1]
        if not reached or grads[i][0]:
            continue
        after = f"the output of {atoms[calls[n - 1]][0]!r}" if n else "the module's input"
        raise UserError(f"cannot cut {what}: {atoms[i][0]!r} receives {after} cut off from autograd (a .detach() or "
                        "torch.no_grad between them), so the cut net would train what the module does not; remove it")


def _check_order(order: List[str], cuts: List[str], what: str) -> None:
    ran = [c for c in cuts if c in order]
    missing = [c for c in cuts if c not in order]
    if missing:
        raise UserError(f"cannot cut {what} at {missing[0]!r}: its forward does not run that submodule")
    if ran != sorted(ran, key=order.index):
        expected = sorted(ran, key=order.index)
        raise UserError(f"cannot cut {what}: the cuts must be in execution order, which is {expected}; got {cuts}")


def _pieces(atoms: List[Atom], calls: List[int], cuts: List[str]):
    """Atom indices per body layer (in execution order) and of the output layer after the last cut;
    atoms the forward never runs are left out."""
    pieces, current = [], []
    for i in calls:
        current.append(i)
        if atoms[i][0] in cuts:
            pieces.append(current)
            current = []
    return pieces, current


def _check_chain(atoms: List[Atom], calls: List[int], pieces: List[List[int]], example: torch.Tensor,
                 traced, what: str) -> set:
    """The atoms (indices) whose output the next one receives flattened; raise a UserError
    naming the first link where an atom does not receive what the one before it returned."""
    output, seen = traced
    layer_of = {i: k + 1 for k, piece in enumerate(pieces) for i in piece}

    def where(i: int) -> str:
        k = layer_of.get(i)
        return f"body layer {k} of {len(pieces)}" if k else "the output layer (after the last cut)"

    flatten_after, previous = set(), example
    for n, i in enumerate(calls):
        received = seen[i][0]
        if _same(received, previous):
            pass
        elif n and previous.dim() > 2 and _same(received, previous.flatten(1)):
            flatten_after.add(calls[n - 1])
        else:
            after = f"the output of {atoms[calls[n - 1]][0]!r}" if n else "the module's input"
            raise UserError(f"cannot cut {what}: {where(i)} does not compute what the module does: {atoms[i][0]!r} "
                            f"does not receive {after} (the forward applies something between them that is not a "
                            "submodule: a skip connection, a function, another order); cut around it")
        previous = seen[i][1]
    if not _same(output, previous):
        raise UserError(f"cannot cut {what}: its output is not the output of {atoms[calls[-1]][0]!r}, the last "
                        "submodule it runs (the forward applies a function after it)")
    return flatten_after


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _sequential(atoms: List[Atom], indices: List[int], flatten_after: set) -> nn.Sequential:
    """One piece as an nn.Sequential of the module's own submodules, named after them; a flatten
    ends the piece that produces what is flattened (the cut rule of `net.py`)."""
    parts: "OrderedDict[str, nn.Module]" = OrderedDict()
    for i in indices:
        name, atom = atoms[i]
        parts[name.replace(".", "_")] = atom
        if i in flatten_after:
            parts[f"{name}_flatten".replace(".", "_")] = nn.Flatten()
    return nn.Sequential(parts)


def _linear_head(features: Tuple[int, ...]) -> HeadBuilder:
    """A fresh linear head on the body's output, flattened first when it is not (batch, features)."""
    size = 1
    for n in features:
        size *= n

    def make_head(num_outputs: int) -> nn.Module:
        linear = nn.Linear(size, num_outputs)
        return linear if len(features) == 1 else nn.Sequential(nn.Flatten(), linear)
    return make_head
