"""Scopes and the shared exact-k selector.

A scope is the unit within which tokens are ranked (RL_TOKEN_CREDIT.md §1.3):
    sequence  one completion;      group  the completions of one prompt (``group_ids``);
    batch     the whole batch given; global  the same computation, on values the integration layer has
              already gathered across ranks (a policy never gathers by itself).

Exact-k selection: k = ceil(ratio * N_unit) tokens per unit, ranked by (value, seeded jitter), so ties are
broken deterministically and exactly k are chosen (TRL's ``>= quantile`` can choose more on ties). All policy
noise (``noise``) is seeded by the policy's ``seed`` option, the batch's step and the run's seed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..options import check_choice
from ..types import PolicyInputs, Scope

Side = Literal["low", "high", "middle"]


def check_ratio(ratio: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low <= float(ratio) <= high:
        raise ValueError(f"ratio must be in [{low}, {high}], got {ratio}")


def unit_ids(inputs: PolicyInputs, scope: Scope) -> torch.Tensor:
    """(B,) long: the scope unit of each row, numbered 0..U-1."""
    check_choice("scope", scope, Scope)
    b = inputs.mask.shape[0]
    device = inputs.mask.device
    if scope == "sequence":
        return torch.arange(b, device=device)
    if scope == "group":
        if inputs.group_ids is None:
            raise ValueError("scope='group' needs group_ids (one id per row, equal for one prompt's completions)")
        return torch.unique(inputs.group_ids, return_inverse=True)[1].to(device)
    return torch.zeros(b, dtype=torch.long, device=device)


# The CPU generator (mt19937) keeps only the low 32 bits of its seed, so the key is folded to 32 bits explicitly.
# The run seed enters through an odd multiplier (invertible mod 2**32): at one (seed, step), two run seeds give two
# different keys; run seed 0 keeps the (seed, step) values of earlier versions.
_RUN_SEED_MULTIPLIER = 0x9E3779B1


def seeded_uniform(shape, seed: int, step: int, device, run_seed: int = 0) -> torch.Tensor:
    """U(0, 1) from a CPU generator seeded by (seed, step, run_seed): same values on any device and process."""
    key = (int(seed) * 1_000_003 + int(step) + int(run_seed) * _RUN_SEED_MULTIPLIER) % 2**32
    generator = torch.Generator().manual_seed(key)
    return torch.rand(shape, generator=generator, dtype=torch.float64).to(device)


def noise(inputs: PolicyInputs, seed: int) -> torch.Tensor:
    """(B, T) float64 U(0, 1) for this batch, seeded by the policy's ``seed``, the batch's ``step`` and the run's
    seed (``inputs.seed``): resampled per batch, different across the runs of a study, reproducible in one run."""
    return seeded_uniform(inputs.mask.shape, seed, inputs.step, inputs.mask.device, run_seed=inputs.seed)


def exact_count(ratio: float, n: torch.Tensor, at_least_one: bool = False) -> torch.Tensor:
    """ceil(ratio * n) per unit, robust to float error (0.2 * 10 is 2.0000000000000004)."""
    k = torch.ceil(n.double() * float(ratio) - 1e-9).long().clamp(min=0)
    if at_least_one:
        k = torch.where(n > 0, k.clamp(min=1), k)
    return torch.minimum(k, n)


def rank_within_units(values: torch.Tensor, mask: torch.Tensor, units: torch.Tensor, jitter: torch.Tensor):
    """Ascending rank of each valid token inside its unit, ties broken by ``jitter``.

    Returns (rank (B, T) long, -1 where invalid; count (B, T) long = size of the token's unit, 0 where invalid).
    Three stable sorts give the lexicographic order (unit, value, jitter) in O(N log N).
    """
    rows, cols = mask.nonzero(as_tuple=True)
    unit = units[rows]
    value = values[rows, cols].double()
    order = torch.argsort(jitter[rows, cols], stable=True)
    order = order[torch.argsort(value[order], stable=True)]
    order = order[torch.argsort(unit[order], stable=True)]
    counts = torch.bincount(unit, minlength=int(units.max().item()) + 1 if units.numel() else 0)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    rank = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    rank[rows, cols] = position - starts[unit]
    count = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    count[rows, cols] = counts[unit]
    return rank, count


def select_exact(
    values: torch.Tensor,
    inputs: PolicyInputs,
    ratio: float,
    side: Side,
    scope: Scope,
    seed: int = 0,
) -> torch.Tensor:
    """Bool (B, T): the bottom ("low"), top ("high") or remaining ("middle") tokens of each scope unit.

    low/high select exactly ceil(ratio * N) tokens per unit (at least one for scope="sequence");
    middle is what neither low nor high selects.
    """
    check_ratio(ratio, 0.0, 1.0 if side != "middle" else 0.5)
    check_choice("side", side, Side)
    mask = inputs.mask
    if not mask.any():
        return torch.zeros_like(mask)
    units = unit_ids(inputs, scope)
    jitter = noise(inputs, seed)
    rank, count = rank_within_units(values, mask, units, jitter)
    k = exact_count(ratio, count, at_least_one=scope == "sequence")
    low = mask & (rank < k)
    high = mask & (rank >= count - k)
    if side == "low":
        return low
    if side == "high":
        return high
    return mask & ~low & ~high


def unit_means(values: torch.Tensor, mask: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """(U,): the mean of ``values`` over the valid tokens of each scope unit (0 for an empty unit)."""
    n_units = int(units.max().item()) + 1 if units.numel() else 0
    row_sum = torch.where(mask, values, torch.zeros_like(values)).sum(-1)
    row_count = mask.sum(-1).to(values.dtype)
    unit_sum = torch.zeros(n_units, dtype=values.dtype, device=values.device).index_add_(0, units, row_sum)
    unit_count = torch.zeros(n_units, dtype=values.dtype, device=values.device).index_add_(0, units, row_count)
    return unit_sum / unit_count.clamp(min=1)


def per_unit_mean(values: torch.Tensor, mask: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """(B, T): the mean of ``values`` over the valid tokens of each token's unit (0 for empty units)."""
    return unit_means(values, mask, units)[units][:, None].expand_as(values)


def ceil_count(ratio: float, n: int) -> int:
    return min(n, math.ceil(n * ratio - 1e-9))
