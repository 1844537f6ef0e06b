"""The signal registry: name -> SignalInfo, and spec parsing/validation.

A spec is a registered name (``"attention_entropy"``) or a dict with ``name``, the signal's options and an
optional ``label`` (the key its values are stored under; defaults to the name):
``{"name": "attention_entropy", "layers": "all", "head_reduce": "max", "label": "ae_max"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from ..options import check_choice
from ..registry import Registry, Spec, function_options
from ..types import ForwardCapture

SignalFn = Callable[..., torch.Tensor]

Requirement = Literal["attention", "logits", "key_mass", "counterfactual", "received", "teacher"]
# "forward+counterfactual": the scoring forward plus one no-grad forward per counterfactual context;
# "extra-models": no-grad forwards of other models over the same tokens (cDPO's positive and negative models);
# "teacher": one no-grad forward of the run's teacher over the same tokens (plus one of the scoring model for the
# vocabulary KL estimators)
Cost = Literal["free", "forward", "forward+attention", "forward+counterfactual", "extra-models", "teacher"]


@dataclass(frozen=True)
class SignalInfo:
    """A registered signal.

    fn(capture: ForwardCapture, **options) -> (B, T) float32, zero where ``capture.batch.response_mask`` is False.
    requires: what the scoring forward must capture ("attention": the entropy recorder; "logits": the
              chunked LM-head pass; "key_mass": the recorder's attention mass on marked keys, with the
              spec's ``keys`` option naming the marks: "prompt", or "marked" for caller-given marks; "counterfactual":
              a second forward of the same response with part of the prompt hidden or changed, the spec's
              ``counterfactual`` option naming which; "received": the recorder's column sums, the attention
              each key receives; "teacher": a teacher's scores of the same tokens, ``TeacherRecord``). cost: "free"
              (no forward), "forward", "forward+attention", "forward+counterfactual", "extra-models" or "teacher".
    """

    name: str
    fn: SignalFn
    requires: frozenset[Requirement]
    cost: Cost
    description: str

    def options(self) -> dict[str, Any]:
        """Option name -> default, read from the function signature."""
        return function_options(self.fn)


SIGNALS: Registry[SignalInfo] = Registry("signal")


def register_signal(name: str, *, requires: tuple[Requirement, ...] = (), cost: Cost = "free", description: str = ""):
    for requirement in requires:
        check_choice("requires", requirement, Requirement, owner=f"signal {name}")
    check_choice("cost", cost, Cost, owner=f"signal {name}")

    def decorate(fn: SignalFn) -> SignalFn:
        SIGNALS.add(name, SignalInfo(name, fn, frozenset(requires), cost, description or (fn.__doc__ or "").strip()))
        return fn

    return decorate


SignalSpec = Spec[SignalInfo]


def parse_signal_spec(spec) -> SignalSpec:
    """Validate a spec: unknown names and unknown options fail, naming the valid choices."""
    return SIGNALS.parse(spec, SignalInfo.options)


def evaluate(spec: SignalSpec, capture: ForwardCapture) -> torch.Tensor:
    return spec.entry.fn(capture, **spec.options)


def parse_signal_specs(specs) -> list[SignalSpec]:
    parsed = [parse_signal_spec(s) for s in specs]
    labels = [s.label for s in parsed]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"Signal labels must be unique; duplicated: {duplicates}. Give each a 'label'.")
    if not parsed:
        raise ValueError(f"No signals requested. Registered signals: {', '.join(sorted(SIGNALS))}")
    return parsed
