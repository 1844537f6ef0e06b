"""Low2High dynamic soft reweighting (flagship intervention; RL_TOKEN_CREDIT.md §1.6).

Paper: "Not All Tokens Learn Alike", arXiv 2605.07660: soft weights move from low- to high-attention-entropy
tokens over training (Qwen3-8B-Base 34.39 -> 37.40). The formula and constants are [our default]:

    z = clip((H - mean_U H) / (std_U H + 1e-6), -3, 3)        (transform="rank": 2 (r + 0.5) / N - 1)
    kappa(p): linear  k0 (2p - 1) | cosine  -k0 cos(pi p) | step  -k0 if p < p0 else +k0
              const_low  -k0 | const_high  +k0 | high2low  -k0 (2p - 1)
    w = clip(c * exp(kappa z), w_min, w_max), c > 0 by bisection so that mean_U w = 1 exactly
    form="linear":  w = 1 + alpha (2p - 1) clip(z, -2, 2), renormalized to mean one over U

Applied as advantage_scale with the all-token normalizer (TRL ``dapo``). Reproduce with
``{"name": "low2high", "signal": "attention_entropy"}`` (k0 = 0.5, linear, [0.5, 2.0], scope batch).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..options import check_choice
from ..types import PolicyInputs, PolicyOutput
from .normalize import transform
from .registry import register_policy
from .scope import per_unit_mean, unit_ids, unit_means

_SCHEDULES = {
    "linear": lambda k0, p, p0: k0 * (2 * p - 1),
    "cosine": lambda k0, p, p0: -k0 * math.cos(math.pi * p),
    "step": lambda k0, p, p0: -k0 if p < p0 else k0,
    "const_low": lambda k0, p, p0: -k0,
    "const_high": lambda k0, p, p0: k0,
    "high2low": lambda k0, p, p0: -k0 * (2 * p - 1),
}
SCHEDULES = tuple(_SCHEDULES)
Form = Literal["exp", "linear"]


def kappa(schedule: str, kappa0: float, progress: float, p0: float = 0.5) -> float:
    """Signed temperature at training progress p: negative favours anchors, positive explorers."""
    check_choice("schedule", schedule, SCHEDULES, owner="low2high")
    return float(_SCHEDULES[schedule](kappa0, float(progress), p0))


def mean_one_clipped(raw: torch.Tensor, mask: torch.Tensor, units: torch.Tensor, w_min: float, w_max: float,
                     iterations: int = 100) -> torch.Tensor:
    """w = clip(c_u * raw, w_min, w_max) with c_u > 0 per unit such that the unit's mean of w is 1.

    mean(clip(c * raw)) is non-decreasing in c, so bisection on log c finds it; a solution exists whenever
    w_min <= 1 <= w_max. Exact mean one and exact bounds, unlike clip-then-renormalize.
    """
    if not w_min <= 1.0 <= w_max:
        raise ValueError(f"need w_min <= 1 <= w_max for mean-one weights, got [{w_min}, {w_max}]")
    raw = raw.double()
    n_units = int(units.max().item()) + 1
    lo = torch.full((n_units,), -60.0, dtype=torch.float64, device=raw.device)  # bisection on log c
    hi = torch.full((n_units,), 60.0, dtype=torch.float64, device=raw.device)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        w = (raw * mid.exp()[units][:, None]).clamp(w_min, w_max)
        too_low = unit_means(w, mask, units) < 1.0
        lo = torch.where(too_low, mid, lo)
        hi = torch.where(too_low, hi, mid)
    w = (raw * ((lo + hi) / 2).exp()[units][:, None]).clamp(w_min, w_max)
    return torch.where(mask, w, torch.zeros_like(w))


@register_policy("low2high")
def low2high(
    inputs: PolicyInputs,
    signal: str = "attention_entropy",
    kappa0: float = 0.5,
    schedule: str = "linear",
    p0: float = 0.5,
    transform_kind: str = "zscore",
    form: str = "exp",
    alpha: float = 0.2,
    w_min: float = 0.5,
    w_max: float = 2.0,
    scope: str = "batch",
    seed: int = 0,
) -> PolicyOutput:
    """Mean-one soft weights exp(kappa(p) z) that move from anchors to explorers over training."""
    check_choice("form", form, Form, owner="low2high")
    mask = inputs.mask
    units = unit_ids(inputs, scope)
    z = transform(inputs.signal(signal).double(), inputs, scope, transform_kind, seed=seed)
    k = kappa(schedule, kappa0, inputs.progress, p0)
    if form == "exp":
        weights = mean_one_clipped(torch.exp(k * z), mask, units, w_min, w_max)
    else:
        if not 0 <= alpha <= 0.5:
            raise ValueError(f"alpha must be in [0, 0.5] so that weights stay >= 0, got {alpha}")
        raw = 1.0 + alpha * (2 * inputs.progress - 1) * z.clamp(-2, 2)
        raw = torch.where(mask, raw, torch.zeros_like(raw))
        weights = raw / per_unit_mean(raw, mask, units).clamp(min=1e-12)
        weights = torch.where(mask, weights, torch.zeros_like(weights))
    return PolicyOutput(weights.float(), {"kappa": k, "progress": float(inputs.progress)})
