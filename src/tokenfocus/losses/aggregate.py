"""One reduction for every per-token objective: ``aggregate(per_token, weights, mask, norm, normalizer)``.

    norm="token_mean"          sum_{b,t} w l / Z                       (DAPO, TRL dapo/bnpo)
    norm="seq_mean_token_mean" mean_b [ sum_t w l / Z_b ]              (GRPO, TRL grpo; Video-KTR)
    norm="seq_sum_const"       sum_{b,t} w l / (B * max_length)        (Dr. GRPO, TRL dr_grpo)
    norm="seq_sum"             mean_b sum_t w l                        (sequence-sum, TRL luspo)

The denominator Z counts valid tokens (normalizer="all": masking does not change it, TRL's convention) or
the weight mass sum w (normalizer="selected": the number of selected tokens for a 0/1 mask, as in the 80/20
reference code; a 20 % subset then gets ~5x per-token weight). For multi-process or accumulated runs the
caller passes ``global_count`` (the token count or mass of the whole generation batch across ranks and
accumulation steps), so that summing the per-process losses gives one global token mean.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ..options import check_choice

Norm = Literal["token_mean", "seq_mean_token_mean", "seq_sum_const", "seq_sum"]
Normalizer = Literal["all", "selected"]
NORMS, NORMALIZERS = get_args(Norm), get_args(Normalizer)


def aggregate(
    per_token: torch.Tensor,
    weights: torch.Tensor | None,
    mask: torch.Tensor,
    norm: Norm = "token_mean",
    normalizer: Normalizer = "all",
    *,
    max_length: int | None = None,
    global_count: float | torch.Tensor | None = None,
    num_sequences: int | None = None,
) -> torch.Tensor:
    """Reduce per-token terms (B, T) (or (B, 1), broadcast) to a scalar loss.

    weights: (B, T) >= 0, detached (None = 1 on every valid token). mask: (B, T) bool, valid tokens.
    Masked positions never contribute, even when ``per_token`` holds NaN or inf there.
    """
    check_choice("norm", norm, Norm)
    check_choice("normalizer", normalizer, Normalizer)
    mask = mask.bool()
    w = mask.to(per_token.dtype) if weights is None else torch.where(mask, weights.to(per_token.dtype), 0.0)
    w = w.detach()
    per_token = per_token.expand_as(w)
    terms = torch.where(mask, per_token * w, torch.zeros_like(w))
    count = mask.to(per_token.dtype) if normalizer == "all" else w
    if norm == "token_mean":
        z = count.sum() if global_count is None else torch.as_tensor(global_count, dtype=w.dtype, device=w.device)
        return terms.sum() / z.clamp(min=1.0)
    if norm == "seq_mean_token_mean":
        per_sequence = terms.sum(-1) / count.sum(-1).clamp(min=1.0)
        return per_sequence.sum() / (num_sequences or per_sequence.numel())
    if norm == "seq_sum_const":
        if max_length is None:
            raise ValueError("norm='seq_sum_const' (Dr. GRPO) needs max_length (the max completion length)")
        return terms.sum() / ((num_sequences or terms.shape[0]) * max_length)
    return terms.sum(-1).sum() / (num_sequences or terms.shape[0])


def aggregate_coefficients(mask: torch.Tensor, norm: Norm = "token_mean", normalizer: Normalizer = "all",
                           **kwargs) -> torch.Tensor:
    """(B, T) coefficients c, detached, with ``aggregate(x, None, mask, norm, normalizer, **kwargs) == (c * x).sum()``
    for every per-token x (the reduction is linear in its terms): for a term whose gradient is formed in its
    forward pass (``signals.teacher.weighted_reverse_kl``)."""
    with torch.enable_grad():
        probe = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device, requires_grad=True)
        (coefficients,) = torch.autograd.grad(aggregate(probe, None, mask, norm, normalizer, **kwargs), probe)
    return coefficients
