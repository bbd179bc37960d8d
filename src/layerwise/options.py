"""Checking a user's options against what they set: the type of each option's default.

Training settings, task options and architecture options all come from TOML tables, where any
value can be written; a value of the wrong type is caught here, before the first job, instead of
as a traceback after hours of training.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Dict

from .errors import UserError, unknown

KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}


def expected_type(default: Any, hint: Any = None):
    """The type (or types) an option's value must have: those its annotation allows when it allows
    several (`Union[int, List[int]]` -> (int, list)), else its default's, else the one type its
    annotation allows besides None (`Optional[str]` -> str); None when nothing can be said."""
    choices = [typing.get_origin(a) or a for a in typing.get_args(hint) if a is not type(None)] if hint is not None else []
    if len(choices) > 1 and all(isinstance(c, type) for c in choices):
        return tuple(choices)
    if default is not None and default is not inspect.Parameter.empty:
        return type(default)
    if len(choices) == 1 and isinstance(choices[0], type):
        return choices[0]
    return hint if isinstance(hint, type) else None


def _is(value: Any, expected: type) -> bool:
    """isinstance, where an integer is a number and true and false are not integers."""
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def check_type(value: Any, expected, key: str, where: str) -> None:
    """Raise a UserError naming `where` and `key` unless `value` has the `expected` type (or one of
    them, for a tuple)."""
    if expected is None:
        return
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if not any(_is(value, kind) for kind in kinds):
        names = " or ".join(KINDS.get(kind, kind.__name__) for kind in kinds)
        raise UserError(f"{where}: {key} must be {names}; got {value!r}")


def check_dataclass_options(cls, options: Dict[str, Any], what: str, where: str) -> None:
    """Every key of `options` is a field of `cls` and has its field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: fall back to the defaults' types
        hints = {}
    for key, value in options.items():
        if key not in fields:
            raise unknown(what, key, fields or ["(none)"], where)
        f = fields[key]
        if value is None and f.default is None:
            continue  # "not set", as a resolved config (config.json) writes it
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        check_type(value, expected_type(default, hints.get(key)), key, where)


def check_call_options(builder: Callable, options: Dict[str, Any], skip: int, what: str, where: str) -> None:
    """Every key of `options` is a keyword of `builder` (after its first `skip` parameters) and
    has the type of that keyword's default."""
    try:
        params = list(inspect.signature(builder).parameters.values())[skip:]
    except (TypeError, ValueError):
        return  # not introspectable: the builder's own error will have to do
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key, value in options.items():
        if key not in named:
            raise unknown(what, key, named or ["(none)"], where)
        check_type(value, expected_type(named[key].default), key, where)
