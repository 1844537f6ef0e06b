"""The policy registry and ``apply_policy``: every policy returns detached, masked weights plus stats.

A spec names a policy and its options: ``{"name": "quantile", "ratio": 0.2, "side": "low",
"signal": "attention_entropy"}``; unknown names or options fail with the valid ones listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..registry import Registry, Spec, function_options
from ..types import PolicyInputs, PolicyOutput

PolicyFn = Callable[..., PolicyOutput]


@dataclass(frozen=True)
class PolicyInfo:
    """fn(inputs: PolicyInputs, **options) -> PolicyOutput."""

    name: str
    fn: PolicyFn
    description: str

    def options(self):
        return function_options(self.fn)


POLICIES: Registry[PolicyInfo] = Registry("policy")
PolicySpec = Spec[PolicyInfo]


def register_policy(name: str):
    def decorate(fn: PolicyFn) -> PolicyFn:
        POLICIES.add(name, PolicyInfo(name, fn, (fn.__doc__ or "").strip().splitlines()[0]))
        return fn

    return decorate


def parse_policy_spec(spec) -> PolicySpec:
    return POLICIES.parse(spec, PolicyInfo.options)


def weight_stats(weights: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """kept fraction, weight mean/min/max/std over valid tokens, and ESS / N = (sum w)^2 / (N sum w^2)."""
    w = weights[mask].double()
    if w.numel() == 0:
        return {"policy/kept_fraction": 0.0, "policy/valid_tokens": 0.0}
    total, square = w.sum(), (w * w).sum()
    return {
        "policy/kept_fraction": float((w > 0).double().mean()),
        "policy/valid_tokens": float(w.numel()),
        "policy/weight_mean": float(w.mean()),
        "policy/weight_min": float(w.min()),
        "policy/weight_max": float(w.max()),
        "policy/weight_std": float(w.std(unbiased=False)),
        "policy/ess_fraction": float(total * total / (w.numel() * square)) if square > 0 else 0.0,
    }


def weight_histogram(weights: torch.Tensor, mask: torch.Tensor, bins: int = 30) -> dict[str, list[float]]:
    """Histogram of the weights of the valid tokens on ``bins`` equal bins over [0, max weight] (what the
    report draws; logged by the trainers so the report never recomputes a policy)."""
    w = weights[mask].double()
    top = float(w.max()) if w.numel() else 1.0
    edges = torch.linspace(0.0, max(top, 1e-6), bins + 1, dtype=torch.float64)
    counts = torch.histc(w, bins=bins, min=0.0, max=float(edges[-1])) if w.numel() else torch.zeros(bins)
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def apply_policy(spec, inputs: PolicyInputs) -> PolicyOutput:
    """Run a policy (a spec or a plain callable ``fn(inputs) -> PolicyOutput``) and enforce the contract:
    weights detached, >= 0, exactly 0 where the mask is False, finite; stats namespaced under ``policy/``."""
    if callable(spec) and not isinstance(spec, (str, dict, Spec)):
        out = spec(inputs)
    else:
        parsed = parse_policy_spec(spec)
        out = parsed.entry.fn(inputs, **parsed.options)
    weights = out.weights.detach()
    if weights.shape != inputs.mask.shape:
        raise ValueError(f"policy returned weights of shape {tuple(weights.shape)}, expected {tuple(inputs.mask.shape)}")
    weights = torch.where(inputs.mask, weights, torch.zeros_like(weights)).float()
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("policy produced negative or non-finite weights")
    stats = weight_stats(weights, inputs.mask)
    stats.update({k if k.startswith("policy/") else f"policy/{k}": float(v) for k, v in out.stats.items()})
    return PolicyOutput(weights, stats)
