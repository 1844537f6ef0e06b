"""Policy-gradient objectives as per-token terms (losses are to be minimized).

clipped_surrogate (PPO / GRPO / DAPO; GSPO with ratio_level="sequence"):
    r = exp(logp - old_logp)   (sequence level: exp of the masked mean log-ratio, shape (B, 1))
    l = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)
    dual_clip c > 1 (Ye et al. 2020): for A < 0, l = min(l, -c A)
    delta (TRL's two-sided clip): r is capped at delta in the unclipped branch
cispo (MiniMax-M1): l = -clip(r, max=eps_high).detach() * A * logp

``advantages`` may be (B,) or (B, T); token weights w >= 0 can be folded in as A_t = w_t A (the
``advantage_scale`` mode), which equals multiplying the per-token loss by w for these objectives.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice
from ..types import LossTerms

RatioLevel = Literal["token", "sequence"]


def _advantages(advantages: torch.Tensor) -> torch.Tensor:
    return advantages[:, None] if advantages.dim() == 1 else advantages


def log_ratio(logprobs, old_logprobs, mask, ratio_level: RatioLevel = "token") -> torch.Tensor:
    check_choice("ratio_level", ratio_level, RatioLevel)
    delta = torch.where(mask, logprobs - old_logprobs, torch.zeros_like(logprobs))
    if ratio_level == "token":
        return delta
    return (delta.sum(-1) / mask.sum(-1).clamp(min=1)).unsqueeze(-1)  # (B, 1)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    x = x.expand_as(mask)
    return float(x[mask].double().mean()) if mask.any() else 0.0


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    ratio_level: RatioLevel = "token",
    dual_clip: float | None = None,
    delta: float | None = None,
) -> LossTerms:
    """Per-token clipped surrogate; metrics: clip fractions (low / high / region) and mean ratio."""
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.bool()
    advantages = _advantages(advantages)
    ratio = torch.exp(log_ratio(logprobs, old_logprobs, mask, ratio_level))
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)
    per_token = -torch.min(unclipped * advantages, clipped * advantages)
    if dual_clip is not None:
        if dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        per_token = torch.where(advantages < 0, torch.minimum(per_token, -dual_clip * advantages), per_token)
    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (advantages < 0)
        high = (ratio > 1 + epsilon_high) & (advantages > 0)
        metrics = {
            "loss/clip_ratio_low": _masked_mean(low.float(), mask),
            "loss/clip_ratio_high": _masked_mean(high.float(), mask),
            "loss/clip_ratio_region": _masked_mean((low | high).float(), mask),
            "loss/ratio_mean": _masked_mean(ratio, mask),
        }
    return LossTerms(per_token, metrics)


def cispo(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_high: float = 5.0,
    ratio_level: RatioLevel = "token",
) -> LossTerms:
    """CISPO: REINFORCE on log-probs with the detached importance ratio clipped from above."""
    mask = mask.bool()
    ratio = torch.exp(log_ratio(logprobs, old_logprobs, mask, ratio_level))
    weight = torch.clamp(ratio, max=epsilon_high).detach()
    per_token = -weight * _advantages(advantages) * logprobs
    with torch.no_grad():
        metrics = {"loss/cispo_clip_fraction": _masked_mean((ratio > epsilon_high).float(), mask)}
    return LossTerms(per_token, metrics)
