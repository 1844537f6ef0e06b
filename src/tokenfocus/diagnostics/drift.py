"""How far training moved a model from where it started: parameter distance and per-token KL.

parameter_distance: ‖θ − θ₀‖₂ over all parameters (trainable or not; a tied embedding / LM head is one tensor,
counted once) and its ratio to ‖θ₀‖₂.
token_kl: the mean over completion tokens of the exact full-vocabulary KL(π_θ(·|x_<t) ‖ π_θ₀(·|x_<t)), read at the
position that predicts each token (DESIGN.md alignment), no gradient, a few rows per forward and ``chunk_size``
positions per float32 softmax.
"""

from __future__ import annotations

import math

import torch

from .token_proxy import completion_logits


@torch.no_grad()
def parameter_distance(model: torch.nn.Module, start_model: torch.nn.Module) -> dict[str, float]:
    """{"l2": ‖θ − θ₀‖₂, "relative": ‖θ − θ₀‖₂ / ‖θ₀‖₂}; parameters matched by name (``named_parameters`` lists a
    shared tensor once). Raises if the two models' parameter names or shapes differ."""
    start = dict(start_model.named_parameters())
    current = dict(model.named_parameters())
    if set(start) != set(current):
        raise ValueError(f"the models' parameters differ: only in model {sorted(set(current) - set(start))[:5]}, "
                         f"only in start_model {sorted(set(start) - set(current))[:5]}")
    diff_sq = norm_sq = 0.0
    for name, p in current.items():
        p0 = start[name]
        if p.shape != p0.shape:
            raise ValueError(f"parameter {name}: shape {tuple(p.shape)} vs {tuple(p0.shape)} in start_model")
        diff = p.float() - p0.to(p.device).float()
        diff_sq += float(torch.linalg.vector_norm(diff, dtype=torch.float64)) ** 2
        norm_sq += float(torch.linalg.vector_norm(p0, dtype=torch.float64)) ** 2
    l2, norm = math.sqrt(diff_sq), math.sqrt(norm_sq)
    return {"l2": l2, "relative": l2 / norm if norm > 0 else (0.0 if l2 == 0 else math.inf)}


@torch.no_grad()
def token_kl(model: torch.nn.Module, start_model: torch.nn.Module, input_ids: torch.Tensor,
             attention_mask: torch.Tensor, completion_mask: torch.Tensor, *, temperature: float = 1.0,
             rows_per_forward: int = 4, chunk_size: int = 256) -> float:
    """Mean over the tokens of ``completion_mask`` of KL(π_model ‖ π_start) in nats (NaN if it marks none).

    input_ids, attention_mask: (B, T); completion_mask: (B, T) aligned with input_ids (e.g. ``TokenBatch.
    response_mask``) or (B, C) for the last C columns (TRL's layout). Token 0 of a row has no predictor and
    must not be marked. Both models see the same inputs (put them in eval mode: no dropout); the logits are divided
    by ``temperature``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, t = input_ids.shape
    mask = completion_mask.bool()
    if mask.shape[1] != t:  # the last C columns
        mask = torch.cat([torch.zeros(b, t - mask.shape[1], dtype=torch.bool, device=mask.device), mask], 1)
    total, count = 0.0, 0
    for start in range(0, b, rows_per_forward):
        rows = slice(start, start + rows_per_forward)
        marked = mask[rows]
        columns = marked.any(0).nonzero()
        if columns.numel() == 0:
            continue
        width = t - int(columns[0])
        if width >= t:
            raise ValueError("completion_mask marks token 0 of a row, which has no predicting position")
        logits_p = completion_logits(model, input_ids[rows], attention_mask[rows], width)
        logits_q = completion_logits(start_model, input_ids[rows], attention_mask[rows], width)
        keep = marked[:, -width:].to(logits_p.device)
        logits_p, logits_q = logits_p[keep], logits_q.to(logits_p.device)[keep]  # (n, V), the marked tokens only
        for i in range(0, logits_p.shape[0], chunk_size):
            log_p = torch.log_softmax(logits_p[i:i + chunk_size].float() / temperature, dim=-1)
            log_q = torch.log_softmax(logits_q[i:i + chunk_size].float() / temperature, dim=-1)
            total += float((log_p.exp() * (log_p - log_q)).sum(-1).double().sum())
        count += int(keep.sum())
    return total / count if count else float("nan")
