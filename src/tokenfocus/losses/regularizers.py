"""Terms added to the policy loss: k3 KL to a reference policy, the entropy bonus, the sink decorrelation term.

k3 (Schulman's estimator): KL_t = exp(ref - logp) - (ref - logp) - 1 >= 0, an unbiased estimate of
KL(pi_theta || pi_ref) on samples from pi_theta; TRL multiplies it by the importance ratio when the samples
came from pi_old (``use_bias_correction_kl``). Both terms are masked by the valid mask, never by a token
policy's weights (RL_TOKEN_CREDIT.md §1.4).
"""

from __future__ import annotations

import torch

from ..types import LossTerms


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
          ratio: torch.Tensor | None = None) -> LossTerms:
    mask = mask.bool()
    diff = torch.where(mask, ref_logprobs - logprobs, torch.zeros_like(logprobs))
    per_token = torch.exp(diff) - diff - 1
    if ratio is not None:
        per_token = per_token * ratio
    with torch.no_grad():
        kl = float(per_token[mask].double().mean()) if mask.any() else 0.0
    return LossTerms(per_token, {"loss/kl": kl})


def entropy_bonus(entropies: torch.Tensor, mask: torch.Tensor) -> LossTerms:
    """Per-token term -H (minimizing it raises entropy); aggregate it with its own coefficient."""
    mask = mask.bool()
    with torch.no_grad():
        mean = float(entropies[mask].double().mean()) if mask.any() else 0.0
    return LossTerms(-entropies, {"loss/entropy": mean})


def sink_decorrelation(hidden: list[torch.Tensor], mask: torch.Tensor, first: torch.Tensor) -> LossTerms:
    """Per-token cos^2 between each position's hidden state and the first token's, averaged over layers.

    arXiv 2510.22603 (Llama-AVSR, ``add_sink_loss`` / ``--sink-loss-factor``): for layers l = 1..L-1 (every layer
    output but the last) and input positions i > 0,

        L_dec = mean_l mean_i cos(h_{l,BOS}, h_{l,i})^2,        L = CE + lambda * L_dec   (lambda = 1e4 in the paper)

    which pushes intermediate tokens away from the BOS direction, where intermediate sinks and their massive
    activations sit. hidden: the layer outputs (B, T, d), in the graph; mask: (B, T) bool positions that count
    (the caller excludes outputs and padding; the first token is excluded here); first: (B,) the BOS / first real
    token of each row. Returns per-token mean_l cos^2 (0 where not counted); the metric is its masked mean.
    """
    if not hidden:
        raise ValueError("sink_decorrelation needs at least one layer output (a model with >= 2 layers)")
    rows = torch.arange(mask.shape[0], device=mask.device)
    counted = mask.bool().clone()
    counted[rows, first] = False
    per_layer = []
    for h in hidden:
        anchor = h[rows, first]  # (B, d)
        cos = torch.nn.functional.cosine_similarity(h.float(), anchor.float()[:, None, :], dim=-1, eps=1e-6)
        per_layer.append(cos.square())
    per_token = torch.stack(per_layer).mean(0)  # (B, T)
    per_token = torch.where(counted, per_token, torch.zeros_like(per_token))
    with torch.no_grad():
        value = float(per_token[counted].double().mean()) if counted.any() else 0.0
    return LossTerms(per_token, {"loss/sink_decorrelation": value})
