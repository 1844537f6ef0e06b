"""Named components (signals, policies, ...) in plain dicts, and spec validation shared by all of them.

A spec is a registered name or a dict ``{"name": ..., <options>..., "label": ...}``. Options are checked
against the function's signature (the single source of truth for names and defaults) before anything runs:
unknown names and unknown options fail, naming the valid choices.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from .options import check_choice

T = TypeVar("T")


def function_options(fn: Callable, skip: int = 1) -> dict[str, Any]:
    """Keyword options of ``fn`` -> default (``inspect.Parameter.empty`` when required), skipping the first
    ``skip`` positional inputs."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def literal_options(fn: Callable | None) -> dict[str, Any]:
    """Options of ``fn`` annotated with a ``Literal`` type -> that type (checked when a spec is parsed)."""
    if fn is None:
        return {}
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that cannot be resolved: nothing to check early
        return {}
    return {k: v for k, v in hints.items() if typing.get_origin(v) is typing.Literal}


@dataclass(frozen=True)
class Spec(Generic[T]):
    """A validated reference to a registered component with its options."""

    name: str
    label: str
    entry: T
    options: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, kind: str, reserved: tuple[str, ...] = ("name", "label")):
        self.kind = kind
        self.entries: dict[str, T] = {}
        self.reserved = reserved

    def add(self, name: str, entry: T) -> None:
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.entries[name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> T:
        return self.entries[name]

    def __iter__(self):
        return iter(self.entries)

    def values(self):
        return self.entries.values()

    def parse(self, spec, options_of: Callable[[T], dict[str, Any]]) -> Spec[T]:
        if isinstance(spec, Spec):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"A {self.kind} spec is a name or a dict with a 'name' key; got {spec!r}")
        if not isinstance(spec["name"], str) or not all(isinstance(k, str) for k in spec):
            raise ValueError(f"A {self.kind} spec's name and option keys are strings; got {spec!r}")
        options = dict(spec)
        name = options.pop("name")
        label = options.pop("label", name)
        if name not in self.entries:
            raise ValueError(f"Unknown {self.kind} {name!r}. Registered: {', '.join(sorted(self.entries))}")
        valid = options_of(self.entries[name])
        unknown = sorted(set(options) - set(valid))
        missing = sorted(k for k, v in valid.items() if v is inspect.Parameter.empty and k not in options)
        if unknown or missing:
            described = ", ".join(
                f"{k} (required)" if v is inspect.Parameter.empty else f"{k} (default {v!r})" for k, v in valid.items()
            )
            problems = []
            if unknown:
                problems.append(f"unknown option(s) {unknown}")
            if missing:
                problems.append(f"missing required option(s) {missing}")
            raise ValueError(f"{self.kind} {name!r}: {' and '.join(problems)}. Valid options: {described}")
        for key, kind in literal_options(getattr(self.entries[name], "fn", None)).items():
            if key in options:
                check_choice(key, options[key], kind, owner=f"{self.kind} {name!r}")
        return Spec(name, str(label), self.entries[name], options)
