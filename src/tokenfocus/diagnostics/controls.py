"""Controls for the gradient diagnostics (RL_TOKEN_CREDIT.md §1.5, §1.7): matched random subsets and prefixes
shared by a whole prompt group.

``matched_random(target, universe, bins)``: a random subset of ``universe`` with the target's histogram over
``bins`` (C1: ``position_bins``, relative position r = c / L in equal bins; C5: ``quantile_bins`` of predictive
entropy, deciles over the universe). Per bin it samples, uniformly from the universe's tokens in that bin, as many
tokens as the target has there (the target lies inside the universe, so every bin has enough): the size and the
histogram are exactly the target's. Target tokens may be drawn (a random control of the bin), so the overlap with
the target is about the target's share of each bin.

``group_shared_prefix``: completion positions c at which every completion of a prompt group holds the same tokens
0..c. Their contexts and tokens are identical, so are their per-token gradients, while GRPO advantages sum to zero
over a group: at ratio 1 the copies of such a position cancel exactly in any subset holding all of them, and leave
a non-cancelling remainder in a subset holding only some (e.g. a random subset).
"""

from __future__ import annotations

import torch

from ..policies.scope import seeded_uniform
from ..types import relative_position


def group_shared_prefix(completion_ids: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: True at completion position c of every row of a group of >= 2 rows whose completions are all
    valid and identical on 0..c. completion_ids, mask: (B, C); group_ids: (B,)."""
    shared = torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)
    completion_ids = completion_ids.to(mask.device)
    group_ids = group_ids.to(mask.device)
    for group in group_ids.unique().tolist():
        rows = (group_ids == group).nonzero().squeeze(-1)
        if rows.numel() < 2:
            continue  # a single completion shares nothing (and its advantage is 0)
        ids, valid = completion_ids[rows], mask[rows].bool()
        same = valid.all(0) & (ids == ids[:1]).all(0)  # (C,) equal and valid at c
        shared[rows] = same.long().cumprod(0).bool()[None]  # ... and at every position before c
    return shared


def position_bins(mask: torch.Tensor, bins: int = 10) -> torch.Tensor:
    """(B, C) long bin of relative position r = c / L (``types.relative_position``) in ``bins`` equal bins."""
    return (relative_position(mask) * bins).floor().long().clamp(0, bins - 1)


def quantile_bins(values: torch.Tensor, mask: torch.Tensor, bins: int = 10) -> torch.Tensor:
    """(B, C) long quantile bin (deciles for 10) of ``values`` over the tokens of ``mask``; 0 off the mask.

    Bin k holds the values in [q_k, q_{k+1}) of the masked values' quantiles (ties at an edge go up)."""
    if not mask.any():
        return torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    inside = values[mask].double()
    edges = torch.quantile(inside, torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=inside.device)[1:-1])
    return torch.where(mask, torch.bucketize(values.double(), edges, right=True), 0)


def matched_random(target: torch.Tensor, universe: torch.Tensor, bins: torch.Tensor, seed: int = 0,
                   step: int = 0, run_seed: int = 0) -> torch.Tensor:
    """(B, C) bool: |target ∩ universe| random tokens of ``universe`` with the target's histogram over ``bins``
    ((B, C) long >= 0 on the universe), seeded by (seed, step, run_seed): deterministic on any device."""
    target = target.bool() & universe
    selected = torch.zeros_like(universe, dtype=torch.bool)
    if not target.any():
        return selected
    take = torch.bincount(bins[target])  # the target is inside the universe: every bin has enough tokens
    noise = seeded_uniform(universe.shape, seed, step, universe.device, run_seed=run_seed)
    for b in (take > 0).nonzero().flatten().tolist():
        rows, cols = (universe & (bins == b)).nonzero(as_tuple=True)
        order = torch.argsort(noise[rows, cols])[: int(take[b])]
        selected[rows[order], cols[order]] = True
    return selected
