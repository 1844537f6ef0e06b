"""Entropy dynamics and the flagship's confound controls (RL_TOKEN_CREDIT.md §1.5, §1.8), as plain numbers.

Per generation batch: mean attention entropy over all valid tokens, anchors and explorers; split by correct
and incorrect responses; Spearman correlation of attention entropy with predictive entropy and with
position; Jaccard overlap of anchors / explorers with the predictive-entropy bottom / top sets (C4).
Evidence gathering (§1.8), when a per-token attention mass is given (``signals.attention_mass``): the mass
on the prompt (or an evidence span) for all tokens, anchors, explorers, correct and incorrect responses,
and its Spearman correlation with attention entropy. ``1 - prompt mass`` is the share on earlier response
tokens.
"""

from __future__ import annotations

import torch


def rank_average(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank (for Spearman)."""
    values = values.double()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    unique, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    if x.numel() < 3:
        return float("nan")
    rx, ry = rank_average(x), rank_average(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denominator) if denominator > 0 else float("nan")


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else float("nan")


def _mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].double().mean()) if mask.any() else float("nan")


def entropy_dynamics(attention: torch.Tensor, mask: torch.Tensor, anchors: torch.Tensor, explorers: torch.Tensor,
                     predictive: torch.Tensor | None = None, correct: torch.Tensor | None = None,
                     pred_bottom: torch.Tensor | None = None, pred_top: torch.Tensor | None = None,
                     mass: torch.Tensor | None = None, mass_name: str = "prompt_mass") -> dict[str, float]:
    """All inputs (B, C) over completion tokens (masks bool); ``correct`` is (B,) bool; ``mass`` the attention
    mass on the prompt or an evidence span, reported under ``diag/<mass_name>/...``."""
    out = {
        "diag/attention_entropy/all": _mean(attention, mask),
        "diag/attention_entropy/anchors": _mean(attention, anchors & mask),
        "diag/attention_entropy/explorers": _mean(attention, explorers & mask),
    }
    position = (mask.long().cumsum(-1) - 1).double() / mask.sum(-1, keepdim=True).clamp(min=1).double()
    out["diag/corr/attention_vs_relative_position"] = spearman(attention[mask], position[mask])
    if predictive is not None:
        out["diag/corr/attention_vs_predictive_entropy"] = spearman(attention[mask], predictive[mask])
    if correct is not None:
        rows = correct.bool()[:, None].expand_as(mask)
        out["diag/attention_entropy/correct"] = _mean(attention, mask & rows)
        out["diag/attention_entropy/incorrect"] = _mean(attention, mask & ~rows)
    if mass is not None:
        out[f"diag/{mass_name}/all"] = _mean(mass, mask)
        out[f"diag/{mass_name}/anchors"] = _mean(mass, anchors & mask)
        out[f"diag/{mass_name}/explorers"] = _mean(mass, explorers & mask)
        out[f"diag/corr/attention_vs_{mass_name}"] = spearman(attention[mask], mass[mask])
        if correct is not None:
            out[f"diag/{mass_name}/correct"] = _mean(mass, mask & rows)
            out[f"diag/{mass_name}/incorrect"] = _mean(mass, mask & ~rows)
    if pred_bottom is not None and pred_top is not None:
        out["diag/jaccard/anchors_vs_pred_entropy_bottom"] = jaccard(anchors & mask, pred_bottom & mask)
        out["diag/jaccard/explorers_vs_pred_entropy_top"] = jaccard(explorers & mask, pred_top & mask)
    return out
