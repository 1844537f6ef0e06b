"""Hard token subsets: full, random, and quantile subsets of any signal (anchors / explorers / middle).

Paper: "Not All Tokens Learn Alike", arXiv 2605.07660, §1.3 of RL_TOKEN_CREDIT.md. The flagship's subsets are
``quantile`` on ``attention_entropy`` with side low (anchors), high (explorers) or middle, ratio 0.2,
scope "batch"; the random-20% control is ``random`` with ratio 0.2. The 80/20 baseline ("Beyond the 80/20
Rule", arXiv 2506.01939) is ``quantile`` on ``predictive_entropy``, side high, ratio 0.2.
"""

from __future__ import annotations

import torch

from ..types import PolicyInputs, PolicyOutput
from .registry import register_policy
from .scope import seeded_uniform, select_exact


@register_policy("full")
def full(inputs: PolicyInputs) -> PolicyOutput:
    """Every valid token, weight 1 (the baseline)."""
    return PolicyOutput(inputs.mask.float())


@register_policy("random")
def random(inputs: PolicyInputs, ratio: float = 0.2, scope: str = "batch", seed: int = 0) -> PolicyOutput:
    """Exactly ceil(ratio * N) uniformly random tokens per scope unit; seeded by (seed, step)."""
    noise = seeded_uniform(inputs.mask.shape, seed + 7919, inputs.step, inputs.mask.device)
    selected = select_exact(noise, inputs, ratio, "low", scope, seed)
    return PolicyOutput(selected.float(), {"selected_fraction": _fraction(selected, inputs.mask)})


@register_policy("quantile")
def quantile(
    inputs: PolicyInputs,
    signal: str = "attention_entropy",
    ratio: float = 0.2,
    side: str = "low",
    scope: str = "batch",
    seed: int = 0,
) -> PolicyOutput:
    """Bottom ("low": anchors), top ("high": explorers) or remaining ("middle") ratio of a signal, exact-k."""
    selected = select_exact(inputs.signal(signal), inputs, ratio, side, scope, seed)
    return PolicyOutput(selected.float(), {"selected_fraction": _fraction(selected, inputs.mask)})


def _fraction(selected: torch.Tensor, mask: torch.Tensor) -> float:
    return float(selected.sum()) / max(1, int(mask.sum()))
