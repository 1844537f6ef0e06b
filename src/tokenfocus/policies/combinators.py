"""Combine policies: product of weights, union / intersection of masks.

``{"name": "product", "policies": [{"name": "low2high"}, {"name": "d3s_samples"}]}`` multiplies weights;
``union`` / ``intersection`` combine the kept sets (weight > 0) into a 0/1 mask.
"""

from __future__ import annotations

import torch

from ..types import PolicyInputs, PolicyOutput
from .registry import apply_policy, register_policy


def _children(inputs: PolicyInputs, policies) -> list[PolicyOutput]:
    if isinstance(policies, (str, dict)) or not policies:
        raise ValueError("a combinator needs a non-empty list of policy specs under 'policies'")
    return [apply_policy(spec, inputs) for spec in policies]


def _merge_stats(outputs: list[PolicyOutput]) -> dict[str, float]:
    return {f"part{i}/{k.removeprefix('policy/')}": v for i, out in enumerate(outputs) for k, v in out.stats.items()}


@register_policy("product")
def product(inputs: PolicyInputs, policies: list = ()) -> PolicyOutput:
    """Elementwise product of the child policies' weights."""
    outputs = _children(inputs, policies)
    weights = torch.ones_like(inputs.mask, dtype=torch.float32)
    for out in outputs:
        weights = weights * out.weights
    return PolicyOutput(weights, _merge_stats(outputs))


@register_policy("union")
def union(inputs: PolicyInputs, policies: list = ()) -> PolicyOutput:
    """Tokens kept by any child policy."""
    outputs = _children(inputs, policies)
    kept = torch.zeros_like(inputs.mask)
    for out in outputs:
        kept |= out.weights > 0
    return PolicyOutput(kept.float(), _merge_stats(outputs))


@register_policy("intersection")
def intersection(inputs: PolicyInputs, policies: list = ()) -> PolicyOutput:
    """Tokens kept by every child policy."""
    outputs = _children(inputs, policies)
    kept = inputs.mask.clone()
    for out in outputs:
        kept &= out.weights > 0
    return PolicyOutput(kept.float(), _merge_stats(outputs))
