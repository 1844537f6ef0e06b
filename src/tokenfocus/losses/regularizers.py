"""Terms added to the policy loss: k3 KL to a reference policy and the entropy bonus.

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
