"""A policy loss = objective per token -> token weights -> one aggregate, plus KL and entropy terms.

``LossConfig`` is data (validated on construction); ``compute_loss`` is a pure function of tensors.
Paper variants that differ only in aggregation or clipping are presets (``presets.py``), not code paths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from ..options import check_choice
from ..types import LossTerms
from .aggregate import Norm, Normalizer, aggregate
from .regularizers import entropy_bonus, kl_k3
from .surrogate import RatioLevel, cispo, clipped_surrogate, log_ratio

Objective = Literal["clipped", "cispo"]
TokenCount = Literal["global", "local"]


@dataclass(frozen=True)
class LossConfig:
    objective: Objective = "clipped"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.28
    ratio_level: RatioLevel = "token"
    dual_clip: float | None = None
    delta: float | None = None
    norm: Norm = "token_mean"
    normalizer: Normalizer = "all"
    token_count: TokenCount = "global"  # token_mean over the generation batch on all ranks (DAPO) or this micro-batch (BNPO)
    beta: float = 0.0  # k3 KL coefficient (0: no reference model, as in DAPO)
    kl_ratio_correction: bool = True  # multiply the KL by the importance ratio (TRL use_bias_correction_kl)
    entropy_coef: float = 0.0
    # lambda of the sink decorrelation term on the prompt's hidden states (arXiv 2510.22603; the paper uses 1e4);
    # the trainer adds lambda * mean cos^2(h_first, h_i) over prompt positions and every layer output but the last
    sink_decorrelation: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        for name, kind in (("objective", Objective), ("ratio_level", RatioLevel), ("norm", Norm),
                           ("normalizer", Normalizer), ("token_count", TokenCount)):
            try:
                check_choice(name, getattr(self, name), kind)
            except ValueError as error:
                problems.append(str(error))
        if not (0 <= self.epsilon_low < 1 and self.epsilon_high >= 0):
            problems.append(f"need 0 <= epsilon_low < 1 and epsilon_high >= 0, got {self.epsilon_low}, {self.epsilon_high}")
        if self.beta < 0 or self.entropy_coef < 0:
            problems.append("beta and entropy_coef must be >= 0")
        if self.sink_decorrelation < 0:
            problems.append(f"sink_decorrelation is a loss coefficient >= 0, got {self.sink_decorrelation}")
        if problems:
            raise ValueError("Invalid loss config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


def compute_loss(
    config: LossConfig,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    ref_logprobs: torch.Tensor | None = None,
    entropies: torch.Tensor | None = None,
    max_length: int | None = None,
    global_count: float | torch.Tensor | None = None,
    global_valid_count: float | torch.Tensor | None = None,
    num_sequences: int | None = None,
    importance_ratio: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss and metrics for one (micro-)batch.

    weights: token-policy weights (detached; None = uniform). global_count: the denominator for the policy
    term (all valid tokens, or the selected mass for normalizer="selected") across ranks and accumulation;
    global_valid_count: the same for the KL term, which always averages over valid tokens.
    importance_ratio: (B, T) or (B, 1) detached correction pi_old / pi_sampler for samples drawn by another engine
    (TRL's ``importance_sampling_ratio`` with vLLM, already truncated or masked by TRL): it multiplies the policy
    term per token, as TRL 1.16 ``GRPOTrainer._compute_loss`` does, and neither the denominators, the KL term nor
    the entropy bonus. None = no correction.
    """
    mask = mask.bool()
    if config.objective == "clipped":
        terms = clipped_surrogate(
            logprobs, old_logprobs, advantages, mask, epsilon_low=config.epsilon_low,
            epsilon_high=config.epsilon_high, ratio_level=config.ratio_level, dual_clip=config.dual_clip,
            delta=config.delta,
        )
    else:
        terms = cispo(logprobs, old_logprobs, advantages, mask, epsilon_high=config.epsilon_high,
                      ratio_level=config.ratio_level)
    per_token = terms.per_token
    if importance_ratio is not None:  # 1 where masked, so a NaN there cannot reach the gradient through the product
        correction = torch.where(mask, importance_ratio.detach().to(per_token.dtype).expand_as(mask), 1.0)
        per_token = per_token * correction
    shared = dict(norm=config.norm, max_length=max_length, num_sequences=num_sequences)
    loss = aggregate(per_token, weights, mask, normalizer=config.normalizer, global_count=global_count, **shared)
    metrics = dict(terms.metrics)
    metrics["loss/policy"] = float(loss.detach())
    if config.beta > 0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs (a reference model's log-probs)")
        ratio = torch.exp(log_ratio(logprobs, old_logprobs, mask, config.ratio_level))
        kl: LossTerms = kl_k3(logprobs, ref_logprobs, mask, ratio if config.kl_ratio_correction else None)
        count = global_valid_count if global_valid_count is not None else (
            global_count if config.normalizer == "all" else None)
        loss = loss + config.beta * aggregate(kl.per_token, None, mask, normalizer="all", global_count=count, **shared)
        metrics.update(kl.metrics)
    if config.entropy_coef > 0:
        if entropies is None:
            raise ValueError("entropy_coef > 0 needs per-token entropies")
        bonus = entropy_bonus(entropies, mask)
        loss = loss + config.entropy_coef * aggregate(bonus.per_token, None, mask, norm="token_mean")
        metrics.update(bonus.metrics)
    metrics["loss/total"] = float(loss.detach())
    return loss, metrics
