"""One-Token Rollout (OTR, arXiv 2509.26313; RL_TOKEN_CREDIT.md §9): SFT as a one-step policy gradient per token.

At each supervised position t (context c_t, gold token y_t, logits z_t at the predicting position, detached for
sampling; no extra forward):

    a_1..a_K ~ softmax(z_t / T_s)                  (a_K := y_t when always_include_gt)
    r_k = 1 if a_k = y_t else -beta_neg;   b = mean_k r_k (baseline "mean") or 0
    L_t = -(1/K) sum_k (r_k - b) log pi_theta(a_k | c_t)          (log pi at temperature 1)

The caller divides ``sum_t L_t`` by its token count (TRL's SFT normalizer). With K = 1, always_include_gt, no
baseline this is the SFT loss exactly. Positions are processed in chunks, each through ``torch.utils.checkpoint``,
so no (N, V) logits tensor is kept for the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

Baseline = Literal["none", "mean"]


@dataclass(frozen=True)
class OTRConfig:
    """OTR's knobs (the spec's defaults; none recovered from the paper). ``chunk``: positions per LM-head tile."""

    k: int = 8
    temperature: float = 1.0
    beta_neg: float = 0.1
    always_include_gt: bool = False
    baseline: str = "none"
    chunk: int = 256

    def problems(self) -> list[str]:
        found = []
        if self.k < 1:
            found.append(f"k (samples per position) must be >= 1, got {self.k}")
        if self.temperature <= 0:
            found.append(f"temperature must be > 0, got {self.temperature}")
        if self.beta_neg < 0:
            found.append(f"beta_neg must be >= 0, got {self.beta_neg}")
        if self.baseline not in ("none", "mean"):
            found.append(f"baseline must be 'none' or 'mean', got {self.baseline!r}")
        if self.chunk < 1:
            found.append(f"chunk must be >= 1, got {self.chunk}")
        return found


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = hidden @ weight.t()
    return out if bias is None else out + bias


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16/fp16 logits are summed in float32), float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


def _sampled_logprobs(hidden, weight, bias, samples):
    return torch.log_softmax(_wide(_logits(hidden, weight, bias)), dim=-1).gather(-1, samples)


def otr_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                 config: OTRConfig, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """(sum over positions of L_t, stats) for ``hidden`` (N, H) at the predicting positions of ``targets`` (N,),
    projected by the LM head ``weight`` (V, H) (+ ``bias``)."""
    total = _wide(hidden.new_zeros(()))
    hits, rewards = 0.0, 0.0
    for start in range(0, hidden.size(0), config.chunk):
        h, y = hidden[start:start + config.chunk], targets[start:start + config.chunk]
        with torch.no_grad():
            probs = torch.softmax(_wide(_logits(h, weight, bias)) / config.temperature, dim=-1)
            samples = torch.multinomial(probs, config.k, replacement=True, generator=generator)
        if config.always_include_gt:
            samples[:, -1] = y
        reward = torch.where(samples == y[:, None], 1.0, -config.beta_neg)
        if config.baseline == "mean":
            reward = reward - reward.mean(-1, keepdim=True)
        if torch.is_grad_enabled() and h.requires_grad:
            logp = checkpoint(_sampled_logprobs, h, weight, bias, samples, use_reentrant=False)
        else:
            logp = _sampled_logprobs(h, weight, bias, samples)
        total = total - (reward * logp).mean(-1).sum()
        hits += float((samples == y[:, None]).float().sum())
        rewards += float(torch.where(samples == y[:, None], 1.0, -config.beta_neg).sum())
    count = max(1, hidden.size(0) * config.k)
    return total, {"otr/gt_sample_frac": hits / count, "otr/mean_reward": rewards / count}
