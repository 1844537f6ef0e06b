"""PGPO threshold-gated, mass-conserving token reshaping (RL_TOKEN_CREDIT.md §2).

Paper: "Not All Tokens See Equally: Perception-Grounded Policy Optimization for Large Vision-Language
Models", arXiv 2604.01840, Eq. 6-7 as in the unofficial re-implementation [secondary]:

    I_t = minmax_{t in response}( log(1 + max(S_t, 0)) )                 (constant response -> uniform)
    w~_t = max(floor, I_t / tau)                  if I_t < tau    (floor = low_weight_floor; paper: 0)
    w~_t = 1 + beta (I_t - tau) / (1 - tau)       if I_t >= tau   (up to 1 + beta)
    w_t  = w~_t L_i / sum_t w~_t                  (mass_normalization: sum_t w_t = L_i valid tokens)

Paper form: tau=0.4, beta=2.0, threshold_mode="absolute", low_weight_floor=0.0, mass_normalization=True.
Authors' development form: threshold_mode="quantile" (tau-quantile of the sorted I, index floor(L tau)),
low_weight_floor=0.1, mass_normalization=False. Applied as advantage_scale with token_mean_all (DAPO).
The signal S is the token's context dependency (a KL to a counterfactual forward); any signal name works.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice
from ..types import PolicyInputs, PolicyOutput
from .normalize import minmax
from .registry import register_policy

ThresholdMode = Literal["absolute", "quantile"]


@register_policy("pgpo")
def pgpo(
    inputs: PolicyInputs,
    signal: str = "context_dependency",
    tau: float = 0.4,
    beta: float = 2.0,
    threshold_mode: ThresholdMode = "absolute",
    low_weight_floor: float = 0.0,
    mass_normalization: bool = True,
) -> PolicyOutput:
    """Suppress tokens below the tau gate, ramp those above it to 1 + beta, conserve each response's mass."""
    check_choice("threshold_mode", threshold_mode, ThresholdMode, owner="pgpo")
    if not 0 < tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    mask = inputs.mask
    s = inputs.signal(signal).double()
    importance = minmax(torch.log1p(s.clamp(min=0)), inputs, "sequence")  # (B, T) in [0, 1]
    degenerate = _constant_rows(torch.log1p(s.clamp(min=0)), mask)
    gate = torch.full_like(importance[:, :1], tau)
    if threshold_mode == "quantile":
        gate = _sorted_at(importance, mask, tau)
    gate = gate.clamp(1e-12, 1 - 1e-12)
    low = (importance / gate).clamp(min=low_weight_floor)
    high = 1 + beta * (importance - gate) / (1 - gate)
    raw = torch.where(importance < gate, low, high)
    raw = torch.where(mask, raw, torch.zeros_like(raw))
    if mass_normalization:
        length = mask.sum(-1, keepdim=True).double()
        total = raw.sum(-1, keepdim=True)
        raw = torch.where(total > 1e-12, raw * length / total.clamp(min=1e-12), mask.double())
    weights = torch.where(degenerate[:, None] & mask, torch.ones_like(raw), raw)
    return PolicyOutput(weights.float(), {"uniform_fallback_rows": float(degenerate.sum())})


def _constant_rows(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    big = torch.finfo(values.dtype).max
    hi = torch.where(mask, values, torch.full_like(values, -big)).amax(-1)
    lo = torch.where(mask, values, torch.full_like(values, big)).amin(-1)
    return (hi - lo <= eps) & mask.any(-1)


def _sorted_at(values: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """(B, 1): per row, the sorted valid values at index floor(L * tau) (the development code's gate)."""
    big = torch.finfo(values.dtype).max
    ordered = torch.where(mask, values, torch.full_like(values, big)).sort(-1).values
    length = mask.sum(-1, keepdim=True)
    index = (length.double() * tau).floor().long().clamp(max=(length - 1).clamp(min=0))
    return ordered.gather(-1, index)
