"""Checks of a method's signal and policy specs that need more than their signatures, run before any model loads.

A policy checks some options only when it runs (a ratio outside [0, 1], w_min > 1, a schedule name). So the
parsed policy is dry-run with ``apply_policy`` on a small synthetic ``PolicyInputs`` -- rows of different
lengths (one all-masked), two prompt groups, advantages, random values for every signal label the method
computes -- at progress 0, 0.5 and 1. Whatever it raises is reported as a config problem. This is generic
over the registered policies: a new policy's run-time checks are config checks too, with no code here.

Option values are also checked against the function's annotations, and numeric strings (PyYAML reads ``1e-5``
as a string) are converted to the number the annotation or the default declares.
"""

from __future__ import annotations

import types as pytypes
import typing
from typing import Any

import torch

from ..options import coerce, matches, type_name
from ..policies import PolicySpec, apply_policy
from ..registry import Registry, Spec
from ..signals import SignalSpec, attention_plan
from ..types import PolicyInputs

_SIMPLE = (int, float, bool, str, type(None))
PROGRESS = (0.0, 0.5, 1.0)


def _hints(fn) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):  # an annotation that cannot be resolved: nothing to check
        return {}


def _kind(fn, name: str, default: Any) -> Any:
    """The annotation of option ``name``, else the type of its default (an int default also takes floats),
    else None (unchecked)."""
    hint = _hints(fn).get(name)
    if hint is not None:
        return hint
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return float
    return None


def _simple(kind) -> bool:
    """Whether ``matches`` can check ``kind`` exactly (plain scalars, Literal, and Unions of them)."""
    if kind in _SIMPLE:
        return True
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, pytypes.UnionType):
        return all(_simple(k) for k in typing.get_args(kind))
    return False


def form_problems(spec, kind: str) -> list[str]:
    """A spec must be a name or a mapping whose ``name`` is a string (the registry would fail on an unhashable
    name with a bare TypeError); a combinator's ``policies`` are specs too."""
    if isinstance(spec, str):
        return []
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return [f"a {kind} spec is a name or a mapping with a string 'name', got {spec!r}"]
    odd = [k for k in spec if not isinstance(k, str)]
    if odd:
        return [f"{kind} {spec['name']!r}: option names must be strings, got {odd}"]
    children = spec.get("policies")
    if kind == "policy" and isinstance(children, (list, tuple)):
        return [p for child in children for p in form_problems(child, kind)]
    return []


def coerce_spec(spec, registry: Registry) -> Any:
    """``spec`` with numeric-string option values as numbers (the option's annotation or default decides);
    child policy specs under ``policies`` too. Anything that is not a dict naming a registered entry is
    returned unchanged (the registry's parse reports it)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or spec["name"] not in registry:
        return spec
    fn = registry[spec["name"]].fn
    defaults = registry[spec["name"]].options()
    out = {}
    for key, value in spec.items():
        if key == "policies" and isinstance(value, (list, tuple)):
            value = [coerce_spec(child, registry) for child in value]
        elif isinstance(key, str) and key in defaults:
            kind = _kind(fn, key, defaults[key])
            value = coerce(value, kind) if kind is not None else value
        out[key] = value
    return out


def type_problems(spec: Spec) -> list[str]:
    """Options whose value does not fit the function's scalar annotation (``seed: abc``)."""
    fn = spec.entry.fn
    found = []
    for key, value in spec.options.items():
        kind = _hints(fn).get(key)
        if kind is not None and _simple(kind) and not matches(value, kind):
            found.append(f"{spec.name}.{key}: expected {type_name(kind)}, got "
                         f"{type(value).__name__} ({value!r})")
    return found


def layers_problem(value: Any) -> str | None:
    """Why ``value`` is not a ``layers`` option ('middle', 'all', an int or a non-empty list of ints), or None."""
    if isinstance(value, str) and value in ("middle", "all"):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    if isinstance(value, str):
        return f"layers={value!r}: expected 'middle', 'all', an int or a list of ints (e.g. layers: [10, 11])"
    return f"layers={value!r}: expected 'middle', 'all', an int or a non-empty list of ints"


def layer_problems(spec: SignalSpec) -> list[str]:
    """The ``layers`` option of a signal spec (when it has one) and the spec's other scalar option types."""
    found = type_problems(spec)
    options = {**spec.entry.options(), **spec.options}
    if "layers" in options:
        problem = layers_problem(options["layers"])
        if problem:
            found.append(f"{spec.label}: {problem}")
    return found


def plan_problems(specs: list[SignalSpec]) -> list[str]:
    """What ``attention_plan`` refuses about the set of specs (e.g. two different key sets), on a model deep
    enough for every int layer the specs name (the real depth is checked when the model loads)."""
    depth = 1
    for spec in specs:
        layers = {**spec.entry.options(), **spec.options}.get("layers")
        ints = [layers] if isinstance(layers, int) else layers if isinstance(layers, (list, tuple)) else []
        depth = max([depth, *(v + 1 if v >= 0 else -v for v in ints if isinstance(v, int))])
    try:
        attention_plan(list(specs), depth)
    except (ValueError, TypeError) as error:
        return [str(error)]
    return []


def synthetic_inputs(labels, progress: float, rows: int = 8, width: int = 7) -> PolicyInputs:
    """A small generation batch: two prompt groups of ``rows // 2`` completions of different lengths (the last
    one empty), advantages of both signs, U(0, 1) values for every signal label."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([width - (r % width) for r in range(rows - 1)] + [0])
    mask = torch.arange(width)[None, :] < lengths[:, None]  # (B, T)
    signals = {label: torch.rand(rows, width, generator=generator) * mask for label in sorted(labels)}
    return PolicyInputs(mask=mask, signals=signals, group_ids=torch.arange(rows) // (rows // 2),
                        advantages=torch.randn(rows, generator=generator), progress=progress, step=0)


def dry_run_policy(policy: PolicySpec, labels) -> list[str]:
    """What the policy refuses when it runs on synthetic inputs at progress 0, 0.5 and 1 (at most one problem:
    the first)."""
    found = type_problems(policy)
    if found:
        return found
    for progress in PROGRESS:
        try:
            apply_policy(policy, synthetic_inputs(labels, progress))
        # Any exception here is the option's fault (the inputs are valid by construction): a wrong type shows up
        # as a TypeError, an impossible seed as a RuntimeError. Each becomes a listed config problem.
        except Exception as error:  # noqa: BLE001
            kind = "" if isinstance(error, ValueError) else f"{type(error).__name__}: "
            return [f"{policy.name!r} with options {policy.options} fails when it runs (dry run at progress "
                    f"{progress}): {kind}{error}"]
    return []
