"""Token log-probs and predictive entropy from final hidden states, a few rows at a time.

The full (B, T, V) float tensor is never built: the LM head runs on ``chunk_size`` positions at a time,
so peak extra memory is chunk_size * V floats (256 * 49,152 * 4 B = 50 MB for SmolLM2).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def chunked_logprobs_entropy(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    input_ids: torch.Tensor,
    *,
    chunk_size: int = 256,
    temperature: float = 1.0,
    final_softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logprobs, entropy)``, both (B, T) float32 and aligned to the scored token.

    logprobs[:, t] = log p(input_ids[:, t] | input_ids[:, :t]) from the logits at t-1;
    entropy[:, t]  = entropy (nats) of that same next-token distribution. Column 0 is 0 (no predictor).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, t, d = hidden.shape
    flat = hidden[:, :-1].reshape(-1, d)  # row (b, t-1) predicts token (b, t)
    targets = input_ids[:, 1:].reshape(-1)
    logprobs = torch.empty(flat.shape[0], dtype=torch.float32, device=hidden.device)
    entropy = torch.empty_like(logprobs)
    for start in range(0, flat.shape[0], chunk_size):
        stop = start + chunk_size
        logits = head(flat[start:stop]).float()  # (chunk, V)
        if final_softcap is not None:
            logits = final_softcap * torch.tanh(logits / final_softcap)
        logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1)
        logprobs[start:stop] = logp.gather(-1, targets[start:stop, None]).squeeze(-1)
        p = logp.exp()
        entropy[start:stop] = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    zeros = torch.zeros(b, 1, dtype=torch.float32, device=hidden.device)
    return (
        torch.cat([zeros, logprobs.view(b, t - 1)], dim=1),
        torch.cat([zeros, entropy.view(b, t - 1)], dim=1),
    )
