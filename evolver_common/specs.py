"""The one spec syntax, `KIND:ADDRESS[:KEY=VALUE...]`, and the one check of typed options.

Every neuron kind (`v1:complex:ori=45`, `encoder:DIR:roi=V4`, `folder:PATH:channel=3`,
`zmq:tcp://HOST:PORT:timeout=60`, `template:IMAGE[:MODEL:LAYER]`) and every generator (`stimuli:layers=3`)
is parsed by `parse_spec`; the options of optimizers, generators, neuron kinds and runs are checked by
`typed_options`, so a wrong one is reported in one format wherever it was given. (Noise specs,
`poisson:count=5,overdispersion=2`, keep their commas: they are recorded in config.json and hashed into
sweep folder names, which a new syntax would rename.)
"""
from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evolver_common.errors import BadInput, nearest

# The name `annotations` gives the keywords of a callable that takes any (**options): those are its own to check.
OTHER_OPTIONS = "**"

# No option needs a larger whole number (a population of 10,000 codes of 4,096 values is already 160 MB a
# generation): a larger one is a typo, refused before it fills memory.
MAX_INT = 10_000


@dataclass(frozen=True)
class Spec:
    """A parsed spec: `kind`, the `address` fields (a path or URL may hold ':') and the `options` as text."""

    text: str
    kind: str
    address: tuple[str, ...]
    options: dict[str, str]

    @property
    def location(self) -> str:
        """The address as written, its fields joined by ':'."""
        return ":".join(self.address)


def parse_spec(text: str, help: str, address_fields: int = 1) -> Spec:
    """`KIND:ADDRESS[:KEY=VALUE...]`: the trailing fields holding '=' beyond the first `address_fields` are
    options (a key is a name; none twice; a value is not empty). `help` ends every error."""
    parts = text.strip().split(":")
    options: dict[str, str] = {}
    while len(parts) > 1 + address_fields and "=" in parts[-1]:
        part = parts.pop()
        key, _, value = part.partition("=")
        if not key.isidentifier() or key in options or not value:
            problem = "an option is KEY=VALUE" if not key.isidentifier() or not value else f"{key} is given twice"
            raise BadInput(f"Malformed spec '{text.strip()[:200]}' at '{part[:60]}': {problem}. {help}")
        options[key] = value
    return Spec(text.strip(), parts[0], tuple(parts[1:]), dict(reversed(options.items())))


def typed_options(values: Mapping[str, Any], kinds: Mapping[str, Any], what: str, help: str = "",
                  from_text: bool = True, max_int: float = MAX_INT) -> dict[str, Any]:
    """`values` checked against `kinds` ({name: annotation}: int, float, bool, str, X | None, dict, Any),
    each converted to its type where `from_text` (a spec's or the command line's text); whole numbers up to
    `max_int` in size. Every unknown name and every wrong value is named in one BadInput:
    "{what}: KEY='VALUE' (a whole number up to 10,000); …. Valid options: …"."""
    problems, checked = [], {}
    for name, value in values.items():
        if name not in kinds and OTHER_OPTIONS in kinds:
            checked[name] = value
            continue
        if name not in kinds:
            problems.append(f"unknown option {name} (closest: {nearest(name, list(kinds))})")
            continue
        try:
            checked[name] = _convert(value, kinds[name], from_text, max_int)
        except (TypeError, ValueError, OverflowError):
            shown = repr(value[:40]) if isinstance(value, str) else repr(value)[:40]
            problems.append(f"{name}={shown} ({_describe(kinds[name], max_int)})")
    if problems:
        valid = ", ".join(f"{name} ({_describe(kind, max_int)})" for name, kind in kinds.items() if name != OTHER_OPTIONS)
        raise BadInput(f"{what}: {'; '.join(problems)}. Valid options: {valid}.{' ' + help if help else ''}")
    return checked


def annotations(kind: Any) -> dict[str, Any]:
    """{name: type} of a dataclass's fields or a callable's keyword parameters (resolving string annotations;
    a parameter without one takes its default's type, or Any; a callable taking **options adds OTHER_OPTIONS)."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return {f.name: hints[f.name] for f in dataclasses.fields(kind)}
    target = kind.func if hasattr(kind, "func") else kind  # a functools.partial
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # an annotation that names what this module cannot import: check by defaults
        hints = {}
    found = {}
    for name, parameter in inspect.signature(kind).parameters.items():
        if parameter.kind == parameter.VAR_KEYWORD:
            found[OTHER_OPTIONS] = Any
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        default = parameter.default
        found[name] = hints.get(name, type(default) if default not in (parameter.empty, None) else Any)
    return found


def _convert(value: Any, kind: Any, from_text: bool, max_int: float) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner:
            try:
                return _convert(value, candidate, from_text, max_int)
            except (TypeError, ValueError, OverflowError):
                pass
        raise ValueError(value)
    if origin is not None:
        kind = origin
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(value)
    if kind is int:
        if isinstance(value, bool) or not (isinstance(value, int) or from_text and isinstance(value, str)):
            raise TypeError(value)
        number = int(value)
        if abs(number) > max_int:
            raise ValueError(value)
        return number
    if kind is float:
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or from_text and isinstance(value, str)):
            raise TypeError(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        return number
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if isinstance(kind, type) and not isinstance(value, kind):
        raise TypeError(value)
    return value


def _describe(kind: Any, max_int: float = MAX_INT) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [_describe(a, max_int) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or nothing" if type(None) in args else "")
    kind = origin or kind
    whole = "a whole number" + (f" up to {max_int:,}" if math.isfinite(max_int) else "")
    return {int: whole, float: "a finite number", bool: "true or false",
            str: "text", dict: "a table of name = value"}.get(kind, "anything" if kind is Any else
                                                            getattr(kind, "__name__", str(kind)))
