"""Typed option choices and the one checker every component uses.

Sections of options (a train config's ``run:``, a task's options, the diagnostics) are dataclasses;
``parse_section`` checks a dict against one -- names, types from the annotations, ``Literal`` choices, and
the dataclass's own ``problems()`` range checks -- appending every problem instead of stopping at the first.
Numeric strings are numbers: PyYAML reads ``1e-5`` (no dot) as the string "1e-5", so ``coerce`` turns such a
string into the float or int its field declares before the type check.

An option with a fixed set of values is a ``Literal`` type in the function's signature; its choices are read
from the type, so the signature, the checker and the error message never disagree:

    Side = Literal["low", "high", "middle"]
    check_choice("side", side, Side, owner="quantile")   # ValueError: quantile: side='top' is not one of (...)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin


def choices(kind: Any) -> tuple:
    """The values of a ``Literal[...]`` type (or a tuple/list of values, returned as a tuple)."""
    if isinstance(kind, (tuple, list, frozenset, set)):
        return tuple(kind)
    values = get_args(kind)
    if not values:
        raise TypeError(f"{kind!r} is neither a Literal type nor a collection of choices")
    return values


def check_choice(name: str, value: Any, kind: Any, owner: str | None = None) -> None:
    """Raise ``ValueError`` naming the option, its value and the valid choices when ``value`` is not one of them."""
    valid = choices(kind)
    if value not in valid:
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}{name}={value!r} is not one of {valid}")



def suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def type_name(kind) -> str:
    if get_origin(kind) is Literal:
        return f"one of {get_args(kind)}"
    if get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(type_name(k) for k in get_args(kind))
    return getattr(kind, "__name__", str(kind))


def matches(value: Any, kind) -> bool:
    """Whether ``value`` (from YAML) fits the annotation ``kind`` (ints fit float fields, bools fit nothing else)."""
    if kind is Any:
        return True
    origin = get_origin(kind)
    if origin is Literal:
        return value in get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, k) for k in get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    base = origin or kind
    if base in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, base)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number_kinds(kind) -> set:
    """The numeric types among ``kind`` and its Union members (bool excluded: "1" is never a bool)."""
    if kind in (int, float):
        return {kind}
    if get_origin(kind) in (typing.Union, types.UnionType):
        return set().union(*(_number_kinds(k) for k in get_args(kind)))
    return set()


def coerce(value: Any, kind) -> Any:
    """A numeric string ("1e-5", "3", "1e3") as the number ``kind`` declares (float, int, or a Union holding
    them; an int only when the number is integral); any other value unchanged."""
    if not isinstance(value, str) or matches(value, kind) or not _NUMBER.fullmatch(value.strip()):
        return value
    number = float(value)
    wanted = _number_kinds(kind)
    if float in wanted and math.isfinite(number):
        return number
    if int in wanted and math.isfinite(number) and number == int(number):
        return int(number)
    return value


def coerce_section(data: dict, schema: dict[str, Any]) -> dict:
    """``data`` with numeric strings converted for the numeric keys of ``schema``."""
    return {k: coerce(v, schema[k]) if isinstance(k, str) and k in schema else v for k, v in data.items()}


def check_keys(section: str, data: dict, schema: dict[str, Any], problems: list[str]) -> None:
    """Unknown keys (with the closest valid one) and wrong types, for a {key: annotation} schema."""
    for key, value in data.items():
        if not isinstance(key, str) or key not in schema:
            problems.append(f"{section}: unknown key {key!r}{suggest(key, schema)}; valid: {sorted(schema)}")
        elif not matches(value, schema[key]):
            problems.append(f"{section}.{key}: expected {type_name(schema[key])}, got {type(value).__name__} "
                            f"({value!r})")
        elif isinstance(value, float) and math.isnan(value):
            problems.append(f"{section}.{key}: expected a number, got nan")


def fits(key: Any, value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``key`` is in ``schema`` and ``value`` fits its annotation (NaN fits no field)."""
    return (isinstance(key, str) and key in schema and matches(value, schema[key])
            and not (isinstance(value, float) and math.isnan(value)))


S = TypeVar("S")


def section_schema(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def parse_section(cls: type[S], data: dict | None, section: str, problems: list[str]) -> S | None:
    """``cls(**data)`` after checking keys and types; None (with problems appended) when it does not fit.

    A dataclass may add range checks in a ``problems(self) -> list[str]`` method; they are reported too.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        problems.append(f"{section}: expected a mapping, got {type(data).__name__} ({data!r})")
        return None
    before = len(problems)
    schema = section_schema(cls)
    data = coerce_section(data, schema)
    check_keys(section, data, schema, problems)
    # Range checks run on the fields that fit, so every problem of the section is listed at once.
    value = cls(**{k: v for k, v in data.items() if fits(k, v, schema)})
    check = getattr(value, "problems", None)
    if callable(check):
        problems.extend(f"{section}.{p}" for p in check())
    return value if len(problems) == before else None
