"""Position controls for subset experiments (RL_TOKEN_CREDIT.md §1.5, C1-C3).

position_matched: a random subset with the same position histogram as a reference subset (C1: relative
position r = c / L in 10 bins; C3: absolute index c in bins of 4 tokens). Per scope unit and bin, sample as
many tokens as the reference has there; a bin with too few takes all it has and moves the remainder to the
nearest bins with spare tokens.
front / back: the first / last ceil(ratio * L) tokens of each completion (C2).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice
from ..types import PolicyInputs, PolicyOutput, Scope, relative_position
from .registry import register_policy
from .scope import Side, check_ratio, exact_count, noise, select_exact, unit_ids

PositionKind = Literal["relative", "absolute"]


def _position_bins(mask: torch.Tensor, kind: str, bins: int, bin_width: int) -> torch.Tensor:
    if kind == "relative":
        return (relative_position(mask) * bins).floor().long().clamp(0, bins - 1)
    return (mask.long().cumsum(-1) - 1) // bin_width  # 0-based index within the response


@register_policy("position_matched")
def position_matched(
    inputs: PolicyInputs,
    signal: str = "attention_entropy",
    ratio: float = 0.2,
    side: Side = "low",
    scope: Scope = "batch",
    kind: PositionKind = "relative",
    bins: int = 10,
    bin_width: int = 4,
    seed: int = 0,
) -> PolicyOutput:
    """Random tokens matching the position histogram of the quantile subset (signal, ratio, side, scope)."""
    check_choice("kind", kind, PositionKind, owner="position_matched")
    mask = inputs.mask
    reference = select_exact(inputs.signal(signal), inputs, ratio, side, scope, seed)
    position_bin = _position_bins(mask, kind, bins, bin_width)
    units = unit_ids(inputs, scope)[:, None].expand_as(mask)
    draws = noise(inputs, seed + 104729)
    selected = torch.zeros_like(mask)
    for unit in units[mask].unique().tolist():
        in_unit = mask & (units == unit)
        n_bins = int(position_bin[in_unit].max()) + 1
        want = torch.bincount(position_bin[reference & in_unit], minlength=n_bins)
        have = torch.bincount(position_bin[in_unit], minlength=n_bins)
        take = _redistribute(want, have)
        for b in (take > 0).nonzero().flatten().tolist():
            candidates = (in_unit & (position_bin == b)).nonzero(as_tuple=True)
            order = torch.argsort(draws[candidates])[: int(take[b])]
            selected[candidates[0][order], candidates[1][order]] = True
    overlap = (selected & reference).sum().item() / max(1, int(reference.sum()))
    return PolicyOutput(selected.float(), {"overlap_with_reference": overlap})


def _redistribute(want: torch.Tensor, have: torch.Tensor) -> torch.Tensor:
    """Per bin, min(want, have); each bin's shortfall goes to the nearest bins (left first on ties) with spare."""
    take = torch.minimum(want, have)
    spare = have - take
    for b in range(len(want)):
        short = int(want[b] - take[b])
        distance = 1
        while short > 0 and distance < len(want):
            for neighbour in (b - distance, b + distance):
                if 0 <= neighbour < len(want) and short > 0 and spare[neighbour] > 0:
                    moved = min(short, int(spare[neighbour]))
                    take[neighbour] += moved
                    spare[neighbour] -= moved
                    short -= moved
            distance += 1
    return take


def _ends(inputs: PolicyInputs, ratio: float, front: bool) -> PolicyOutput:
    check_ratio(ratio)
    mask = inputs.mask
    index = mask.long().cumsum(-1) - 1
    length = mask.sum(-1, keepdim=True)
    k = exact_count(ratio, length, at_least_one=True)
    chosen = index < k if front else index >= length - k
    return PolicyOutput((mask & chosen).float())


@register_policy("front")
def front(inputs: PolicyInputs, ratio: float = 0.2) -> PolicyOutput:
    """The first ceil(ratio * L) tokens of each completion."""
    return _ends(inputs, ratio, front=True)


@register_policy("back")
def back(inputs: PolicyInputs, ratio: float = 0.2) -> PolicyOutput:
    """The last ceil(ratio * L) tokens of each completion."""
    return _ends(inputs, ratio, front=False)
