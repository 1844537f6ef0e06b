"""Token-weighted DPO and the TAB-PO barrier (RL_TOKEN_CREDIT.md §7, §8): pure functions on per-token log-probs.

Layout (TRL's DPOTrainer, INTEGRATION_NOTES.md §3.1): rows ``[chosen; rejected]`` (2B rows), per-token tensors of
width T in the *shifted* layout, column j scoring token j + 1; ``mask`` is ``completion_mask[:, 1:]`` and
``weights`` is the per-input-position weight shifted the same way (``weights[:, 1:]``).

    x_b  = sum_t w (log pi - log pi_ref)(y+_t) - sum_t w (log pi - log pi_ref)(y-_t)      (mode logratio_weight)
    loss = mean_b [ -(1 - eps) log sigmoid(beta x_b) - eps log sigmoid(-beta x_b) ]

With w = 1 and eps = 0 this is TRL's ``loss_type="sigmoid"`` DPO loss (tested against TRL). The weights are
detached inputs: no gradient flows through them.

TAB-PO's barrier, on the preferred (chosen) rows only, with the gate a stop-gradient mask:

    g_t = 1{ p_theta(y+_t) < tau },   barrier_b = sum_t g_t (-log p_theta(y+_t)) / max(1, sum_t g_t)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PreferenceTerms:
    """Per pair (B,): the loss, the margin x (weighted log-ratio difference), and the weighted log-ratios and
    log-probs of each side (the log-probs unweighted, as TRL logs them)."""

    loss: torch.Tensor
    margin: torch.Tensor
    chosen_logratio: torch.Tensor
    rejected_logratio: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor


def _check_layout(logps: torch.Tensor, *others: torch.Tensor) -> None:
    if logps.dim() != 2 or logps.size(0) % 2:
        raise ValueError(f"expected (2B, T) per-token log-probs with the chosen rows first, got {tuple(logps.shape)}")
    for other in others:
        if other.shape != logps.shape:
            raise ValueError(f"per-token tensors must share one shape: {tuple(logps.shape)} vs {tuple(other.shape)}")


def token_weighted_dpo(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None
                       = None, *, beta: float = 0.1, label_smoothing: float = 0.0) -> PreferenceTerms:
    """DPO on token-weighted sequence log-ratios (module docstring); ``weights`` None means 1 on every token."""
    weights = torch.ones_like(logps) if weights is None else weights
    _check_layout(logps, ref_logps, mask, weights)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    valid = mask.to(logps.dtype)
    w = weights.detach().to(logps.dtype) * valid
    logratio = ((logps - ref_logps.detach()) * w).sum(-1)
    chosen, rejected = logratio.chunk(2)
    margin = chosen - rejected
    loss = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    plain = (logps * valid).sum(-1)
    chosen_logps, rejected_logps = plain.chunk(2)
    return PreferenceTerms(loss, margin, chosen, rejected, chosen_logps, rejected_logps)


def barrier_gate(logps: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    """TAB-PO's gate 1{p < tau} on valid tokens, from detached log-probs (a fixed mask, no gradient)."""
    if not 0 < tau <= 1:
        raise ValueError(f"tau is a probability threshold in (0, 1], got {tau}")
    return (logps.detach() < torch.log(torch.tensor(tau, dtype=logps.dtype))) & mask.bool()


def tab_barrier(chosen_logps: torch.Tensor, chosen_mask: torch.Tensor, tau: float = 0.5) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(per-sequence barrier (B,), gate (B, T)) on the chosen rows: the mean NLL of the gated tokens."""
    gate = barrier_gate(chosen_logps, chosen_mask, tau)
    gated = gate.to(chosen_logps.dtype)
    per_sequence = (-chosen_logps * gated).sum(-1) / gated.sum(-1).clamp_min(1)
    return per_sequence, gate
