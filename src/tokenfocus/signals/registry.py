"""The signal registry: a plain dict of name -> SignalInfo, and spec parsing/validation.

A spec is a registered name (``"attention_entropy"``) or a dict with ``name``, the signal's options and an
optional ``label`` (the key its values are stored under; defaults to the name):
``{"name": "attention_entropy", "layers": "all", "head_reduce": "max", "label": "ae_max"}``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..types import ForwardCapture

SignalFn = Callable[..., torch.Tensor]

REQUIREMENTS = ("attention", "logits")
COSTS = ("free", "forward", "forward+attention")


@dataclass(frozen=True)
class SignalInfo:
    """A registered signal.

    fn(capture: ForwardCapture, **options) -> (B, T) float32, zero where ``capture.batch.response_mask`` is False.
    requires: what the scoring forward must capture ("attention": the entropy recorder; "logits": the
              chunked LM-head pass). cost: "free" (no forward), "forward" or "forward+attention".
    """

    name: str
    fn: SignalFn
    requires: frozenset[str]
    cost: str
    description: str

    def options(self) -> dict[str, Any]:
        """Option name -> default, read from the function signature (the single source of truth)."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return {p.name: p.default for p in params}


SIGNALS: dict[str, SignalInfo] = {}


def register_signal(name: str, *, requires: tuple[str, ...] = (), cost: str = "free", description: str = ""):
    unknown = set(requires) - set(REQUIREMENTS)
    if unknown or cost not in COSTS:
        raise ValueError(f"signal {name}: requires must be within {REQUIREMENTS}, cost one of {COSTS}")

    def decorate(fn: SignalFn) -> SignalFn:
        SIGNALS[name] = SignalInfo(name, fn, frozenset(requires), cost, description or (fn.__doc__ or "").strip())
        return fn

    return decorate


@dataclass(frozen=True)
class SignalSpec:
    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> SignalInfo:
        return SIGNALS[self.name]

    def __call__(self, capture: ForwardCapture) -> torch.Tensor:
        return self.info.fn(capture, **self.options)


def parse_signal_spec(spec: str | dict | SignalSpec) -> SignalSpec:
    """Validate a spec: unknown names and unknown options fail, naming the valid choices."""
    if isinstance(spec, SignalSpec):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"A signal spec is a name or a dict with a 'name' key; got {spec!r}")
    options = dict(spec)
    name = options.pop("name")
    label = options.pop("label", name)
    if name not in SIGNALS:
        raise ValueError(f"Unknown signal {name!r}. Registered signals: {', '.join(sorted(SIGNALS))}")
    valid = SIGNALS[name].options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for signal {name!r}. Valid options: "
            + ", ".join(f"{k} (default {v!r})" for k, v in valid.items())
        )
    return SignalSpec(name, label, options)


def parse_signal_specs(specs) -> list[SignalSpec]:
    parsed = [parse_signal_spec(s) for s in specs]
    labels = [s.label for s in parsed]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"Signal labels must be unique; duplicated: {duplicates}. Give each a 'label'.")
    if not parsed:
        raise ValueError(f"No signals requested. Registered signals: {', '.join(sorted(SIGNALS))}")
    return parsed
