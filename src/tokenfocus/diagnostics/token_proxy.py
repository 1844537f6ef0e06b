"""Per-token gradient size in logit space: the diagnostics' mean per-token gradient norm (RL_TOKEN_CREDIT.md §1.7).

Exact per-token parameter gradients cost one backward per token. The clipped surrogate of token t at ratio 1,
ℓ_t = −r_t·A_t with r_t = π(y_t) / π_old(y_t), has the gradient with respect to its (temperature-scaled) logits z_t

    ∂ℓ_t/∂z_t = −A_t·(e_{y_t} − softmax(z_t)),      ‖∂ℓ_t/∂z_t‖₂ = |A_t|·‖e_y − p‖₂,

the signal that enters the backward pass at that token (the parameter gradient is it pulled back through the
network). ‖e_y − p‖² = 1 − 2p_y + Σ_v p_v² is evaluated as (1 − p_y)² + Σ_{v≠y} p_v² with 1 − p_y = Σ_{v≠y} p_v,
so a confident token (p_y → 1) keeps its small value instead of losing it to cancellation.

Memory: the logits come from the model's own forward, ``rows_per_forward`` rows at a time with
``logits_to_keep`` (only the completion's positions); the float32 softmax is taken ``chunk_size`` positions at a
time, so the extra copy is chunk_size × V floats, never (B, T, V).
"""

from __future__ import annotations

import torch


def completion_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int) -> torch.Tensor:
    """(b, width, V) logits that predict the last ``width`` tokens of each row: column j is the row at position
    T − width + j − 1, so for a rollout [prompt of width P_pad | completion of width C] with width = C, column c
    is q(c) = P_pad + c − 1 (the predictor of completion token c; DESIGN.md alignment). No temperature."""
    if not 0 < width < input_ids.shape[1]:
        raise ValueError(f"width must be in [1, T - 1] (token 0 has no predictor); got {width}, T={input_ids.shape[1]}")
    device = next(model.parameters()).device
    attention_mask = attention_mask.to(device).long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # left padding: real tokens count from 0
    out = model(input_ids=input_ids.to(device), attention_mask=attention_mask, position_ids=position_ids,
                logits_to_keep=width + 1, use_cache=False)
    return out.logits[:, -(width + 1):-1]


@torch.no_grad()
def logit_gradient_norm(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                        chunk_size: int = 256) -> torch.Tensor:
    """‖e_y − softmax(logits / temperature)‖₂ per position, float32 of ``labels``' shape. logits: (..., V)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    flat = logits.reshape(-1, logits.shape[-1])
    targets = labels.reshape(-1, 1).to(flat.device)
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[0], chunk_size):
        stop = start + chunk_size
        p = torch.softmax(flat[start:stop].float() / temperature, dim=-1)  # (chunk, V): the one float copy
        p.scatter_(-1, targets[start:stop], 0.0)  # keep the other tokens' probabilities only
        out[start:stop] = (p.sum(-1).square() + p.square().sum(-1)).sqrt()
    return out.view(labels.shape)


@torch.no_grad()
def completion_logit_gradient_norm(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int,
                                   temperature: float = 1.0, rows_per_forward: int = 2,
                                   chunk_size: int = 256) -> torch.Tensor:
    """(B, width) float32 ‖e_y − p‖₂ of each of the last ``width`` tokens (the completion) under ``model`` at
    ``temperature``; one no-grad forward per ``rows_per_forward`` rows. Multiply by |A| for the token's
    ‖∂ℓ/∂z‖ at ratio 1 (module docstring). Padding columns hold a value too: mask them."""
    parts = []
    for start in range(0, input_ids.shape[0], rows_per_forward):
        rows = slice(start, start + rows_per_forward)
        logits = completion_logits(model, input_ids[rows], attention_mask[rows], width)
        parts.append(logit_gradient_norm(logits, input_ids[rows, -width:], temperature, chunk_size))
    return torch.cat(parts)
