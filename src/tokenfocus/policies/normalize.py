"""Signal normalizations computed per scope unit over valid tokens; zeros where the mask is False.

zscore:  (x - mean_U) / (std_U + eps), optionally clipped (Low2High step 1, RL_TOKEN_CREDIT.md §1.6)
rank:    2 (r + 0.5) / N - 1 in (-1, 1), r = 0-based ascending rank (ties by seeded jitter)
minmax:  (x - min_U) / (max_U - min_U), 0 for a constant unit
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice
from ..types import PolicyInputs
from .scope import noise, per_unit_mean, rank_within_units, unit_ids

Transform = Literal["zscore", "rank", "minmax", "none"]


def zscore(values, inputs: PolicyInputs, scope: str, clip: float | None = 3.0, eps: float = 1e-6) -> torch.Tensor:
    mask, units = inputs.mask, unit_ids(inputs, scope)
    x = values.double()
    mean = per_unit_mean(x, mask, units)
    var = per_unit_mean((x - mean) ** 2, mask, units)
    z = (x - mean) / (var.sqrt() + eps)
    if clip is not None:
        z = z.clamp(-clip, clip)
    return torch.where(mask, z, torch.zeros_like(z)).to(values.dtype)


def rank(values, inputs: PolicyInputs, scope: str, seed: int = 0) -> torch.Tensor:
    mask, units = inputs.mask, unit_ids(inputs, scope)
    jitter = noise(inputs, seed)
    r, n = rank_within_units(values, mask, units, jitter)
    z = 2.0 * (r.double() + 0.5) / n.clamp(min=1).double() - 1.0
    return torch.where(mask, z, torch.zeros_like(z)).to(values.dtype)


def minmax(values, inputs: PolicyInputs, scope: str, eps: float = 1e-8) -> torch.Tensor:
    mask, units = inputs.mask, unit_ids(inputs, scope)
    n_units = int(units.max().item()) + 1
    big = torch.finfo(torch.float64).max
    x = values.double()
    row_min = torch.where(mask, x, torch.full_like(x, big)).amin(-1)
    row_max = torch.where(mask, x, torch.full_like(x, -big)).amax(-1)
    unit_min = torch.full((n_units,), big, dtype=x.dtype).scatter_reduce(0, units, row_min, "amin")
    unit_max = torch.full((n_units,), -big, dtype=x.dtype).scatter_reduce(0, units, row_max, "amax")
    lo, hi = unit_min[units][:, None], unit_max[units][:, None]
    span = hi - lo
    out = torch.where(span > eps, (x - lo) / span.clamp(min=eps), torch.zeros_like(x))
    return torch.where(mask, out, torch.zeros_like(out)).to(values.dtype)


_TRANSFORMS = {
    "zscore": lambda values, inputs, scope, seed, clip: zscore(values, inputs, scope, clip=clip),
    "rank": lambda values, inputs, scope, seed, clip: rank(values, inputs, scope, seed=seed),
    "minmax": lambda values, inputs, scope, seed, clip: minmax(values, inputs, scope),
    "none": lambda values, inputs, scope, seed, clip: torch.where(inputs.mask, values, torch.zeros_like(values)),
}


def transform(values, inputs: PolicyInputs, scope: str, kind: str, seed: int = 0, clip: float | None = 3.0):
    check_choice("transform", kind, Transform)
    return _TRANSFORMS[kind](values, inputs, scope, seed, clip)
