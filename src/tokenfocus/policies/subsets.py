"""Hard token subsets: full, random, and quantile subsets of any signal (anchors / explorers / middle).

Paper: "Not All Tokens Learn Alike", arXiv 2605.07660, §1.3 of RL_TOKEN_CREDIT.md. The flagship's subsets are
``quantile`` on ``attention_entropy`` with side low (anchors), high (explorers) or middle, ratio 0.2,
scope "batch"; the random-20% control is ``random`` with ratio 0.2. The 80/20 baseline ("Beyond the 80/20
Rule", arXiv 2506.01939) is ``quantile`` on ``predictive_entropy``, side high, ratio 0.2.
"""

from __future__ import annotations

import torch

from ..types import PolicyInputs, PolicyOutput, Scope
from .registry import register_policy
from .scope import Side, noise, select_exact


@register_policy("full")
def full(inputs: PolicyInputs) -> PolicyOutput:
    """Every valid token, weight 1 (the baseline)."""
    return PolicyOutput(inputs.mask.float())


def random_subset(inputs: PolicyInputs, ratio: float = 0.2, scope: Scope = "batch", seed: int = 0) -> torch.Tensor:
    """(B, T) bool: exactly ceil(ratio * N) uniformly random valid tokens per scope unit, seeded by (seed, step) and
    the run's seed (``inputs.seed``)."""
    return select_exact(noise(inputs, seed + 7919), inputs, ratio, "low", scope, seed)


def anchor_explorer_subsets(inputs: PolicyInputs, signal: str = "attention_entropy", ratio: float = 0.2,
                            scope: Scope = "batch", seed: int = 0) -> dict[str, torch.Tensor]:
    """{"anchors", "middle", "explorers"}: (B, T) bool partition of the valid tokens into the bottom ``ratio``,
    the rest and the top ``ratio`` of ``signal`` (exact-k per scope unit, ties by seeded jitter).

    The one definition of the flagship's subsets, used by the trainer's diagnostics and the evidence
    analysis; the ``anchors20`` / ``explorers20`` method presets are ``quantile`` with the same arguments.
    """
    values = inputs.signal(signal)
    anchors = select_exact(values, inputs, ratio, "low", scope, seed)
    explorers = select_exact(values, inputs, ratio, "high", scope, seed)
    return {"anchors": anchors, "middle": inputs.mask & ~anchors & ~explorers, "explorers": explorers}


@register_policy("random")
def random(inputs: PolicyInputs, ratio: float = 0.2, scope: Scope = "batch", seed: int = 0) -> PolicyOutput:
    """Exactly ceil(ratio * N) uniformly random tokens per scope unit; seeded by (seed, step) and the run's seed."""
    selected = random_subset(inputs, ratio, scope, seed)
    return PolicyOutput(selected.float(), {"selected_fraction": _fraction(selected, inputs.mask)})


@register_policy("quantile")
def quantile(
    inputs: PolicyInputs,
    signal: str = "attention_entropy",
    ratio: float = 0.2,
    side: Side = "low",
    scope: Scope = "batch",
    seed: int = 0,
) -> PolicyOutput:
    """Bottom ("low": anchors), top ("high": explorers) or remaining ("middle") ratio of a signal, exact-k."""
    selected = select_exact(inputs.signal(signal), inputs, ratio, side, scope, seed)
    return PolicyOutput(selected.float(), {"selected_fraction": _fraction(selected, inputs.mask)})


def _fraction(selected: torch.Tensor, mask: torch.Tensor) -> float:
    return float(selected.sum()) / max(1, int(mask.sum()))
