"""Video-KTR key-token attribution: union of per-signal top-ratio masks (RL_TOKEN_CREDIT.md §3).

Paper: "Video-KTR: Reinforcing Video Reasoning via Key Token Attribution", arXiv 2601.19686 (ICLR 2026);
code zywang0104/Video-KTR (``keep_token_by_ratio``). For each signal, keep the top ``ratio`` of valid
tokens of the scope; the final mask is the union (20-60 % of tokens for three signals at 20 %).
Paper parity: signals = entropy, visual and temporal log-prob differences (signed), ratio=0.2,
scope="group", selection="quantile" (``torch.quantile`` threshold with ">=", which can exceed the ratio on
ties); loss = seq_mean_token_mean over selected tokens. selection="exact" is the exact-k variant.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice
from ..types import PolicyInputs, PolicyOutput, Scope
from .registry import register_policy
from .scope import check_ratio, select_exact, unit_ids

Selection = Literal["quantile", "exact"]


def quantile_threshold_mask(values: torch.Tensor, inputs: PolicyInputs, ratio: float, scope: str) -> torch.Tensor:
    """values >= the (1 - ratio) quantile of the unit's valid values (torch.quantile, linear interpolation)."""
    mask = inputs.mask
    units = unit_ids(inputs, scope)
    selected = torch.zeros_like(mask)
    for unit in units.unique().tolist():
        rows = units == unit
        valid = mask & rows[:, None]
        if not valid.any():
            continue
        threshold = torch.quantile(values[valid].double(), 1 - ratio)
        selected |= valid & (values.double() >= threshold)
    return selected


@register_policy("video_ktr")
def video_ktr(
    inputs: PolicyInputs,
    signals: tuple = ("predictive_entropy",),
    ratio: float = 0.2,
    scope: Scope = "group",
    selection: Selection = "quantile",
    signed: bool = True,
    seed: int = 0,
) -> PolicyOutput:
    """Union over signals of each signal's top-ratio tokens per scope unit."""
    check_choice("selection", selection, Selection, owner="video_ktr")
    check_ratio(ratio)
    if isinstance(signals, str) or not signals:
        raise ValueError("video_ktr: signals must be a non-empty list of signal names")
    union = torch.zeros_like(inputs.mask)
    stats = {}
    for name in signals:
        values = inputs.signal(name)
        values = values if signed else values.abs()
        if selection == "quantile":
            chosen = quantile_threshold_mask(values, inputs, ratio, scope)
        else:
            chosen = select_exact(values, inputs, ratio, "high", scope, seed)
        stats[f"ratio/{name}"] = float(chosen.sum()) / max(1, int(inputs.mask.sum()))
        union |= chosen
    stats["ratio/union"] = float(union.sum()) / max(1, int(inputs.mask.sum()))
    return PolicyOutput(union.float(), stats)
