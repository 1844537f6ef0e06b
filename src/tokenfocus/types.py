"""Data contracts shared by every part of tokenfocus. Nothing else lives here.

Shapes: ``B`` sequences, ``T`` positions, ``H`` heads, ``L`` layers, ``V`` vocabulary.

Masks are ``bool`` with True = the position counts. Anything computed per token returns exact zeros
(never NaN) where its mask is False; an all-masked row is legal.

Alignment: ``logprobs[:, t]`` is log p(input_ids[:, t] | input_ids[:, :t]). The hidden state, logits and
attention row that *predict* token t sit at position t-1. Every per-token signal of a response token is
stored at the token's own index t, whichever position it was computed from. Position 0 has no
predicting row, so a predicting-row signal is 0 there.

Rollout layout (TRL GRPO, verl): each row is ``[left-padded prompt | right-padded completion]``; the
completion tensors of shape (B, C) used by trainers are the last C columns of the (B, T) tensors here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of token sequences and the positions whose signals are wanted.

    input_ids:      (B, T) long.
    attention_mask: (B, T) bool, True = a real token (left or right padding both allowed).
    response_mask:  (B, T) bool, True = a response token to score; always a subset of attention_mask.
                    Derive it from lengths, never from ``input_ids != pad_id`` (pad = EOS in SmolLM2).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(self.input_ids.shape)}")
        for name in ("attention_mask", "response_mask"):
            value = getattr(self, name)
            if value.shape != self.input_ids.shape:
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)} but input_ids has {tuple(self.input_ids.shape)}"
                )
            if value.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor (True = counts); got {value.dtype}. Use .bool().")
        if (self.response_mask & ~self.attention_mask).any():
            raise ValueError("response_mask marks positions that attention_mask marks as padding")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))

    def rows(self, start: int, stop: int) -> "TokenBatch":
        return TokenBatch(
            self.input_ids[start:stop], self.attention_mask[start:stop], self.response_mask[start:stop]
        )


@dataclass
class AttentionRecord:
    """What the entropy recorder keeps for one decoder layer: per-query quantities, never T x T.

    entropy:   (B, H, T) float32, Shannon entropy (nats) of each query row's attention distribution.
    n_keys:    (B, T) float32, number of keys each query row may attend to (after padding, causal and
               sliding-window masking). Rows of padding queries hold 0.
    sink_prob: (B, H, T) float32 or None, attention probability on the first valid key of the row
               (the BOS / sink column); recorded only when asked for.
    key_mass:  (B, H, T) float32 or None, attention probability of each row on the keys marked for this
               forward (``recorder.key_marks``, e.g. the prompt); recorded only when marks were given.
    received:  (B, H, T) float32 or None, attention each KEY receives, summed over the real query rows that may
               see it (a column sum: the sink diagnostics); recorded only when asked for.
    """

    entropy: torch.Tensor
    n_keys: torch.Tensor
    sink_prob: torch.Tensor | None = None
    key_mass: torch.Tensor | None = None
    received: torch.Tensor | None = None


@dataclass
class CounterfactualRecord:
    """What a counterfactual forward (the same response, scored with part of the prompt hidden or changed) keeps.

    logprobs: (B, T) float32 log-probs of the response tokens under the counterfactual context, at each token's
              own index (alignment rule above); 0 outside the response.
    kl:       (B, T) float32 exact KL(pi(.|full context) || pi(.|counterfactual)) of the next-token
              distributions that predict each response token, or None when not computed.
    """

    logprobs: torch.Tensor
    kl: torch.Tensor | None = None


@dataclass
class TeacherRecord:
    """A teacher's scores of the response tokens (``signals.teacher``), in the token layout (alignment rule above).

    logprobs: (B, T) float32 log pi_T of each response token at its own index; 0 outside the response.
    kl:       "full" or "topk:<k>" -> (B, T) float32 KL(pi_student || pi_teacher) of the distributions that
              predict each response token (the vocabulary estimators; the sampled ones need only the log-probs).
    """

    logprobs: torch.Tensor
    kl: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ForwardCapture:
    """Tensors captured during one scoring forward pass; what signal functions may read.

    attention: layer index -> AttentionRecord (only the layers that were recorded).
    logprobs:  (B, T) float32 token log-probs (alignment rule above), or None if not computed.
    predictive_entropy: (B, T) float32 entropy of the next-token distribution that predicts token t.
    key_marks: (B, T) bool keys whose attention mass the records' ``key_mass`` holds, or None.
    counterfactual: counterfactual kind ("evidence_masked", "steps_shuffled") -> its record.
    teacher: the teacher's scores of the same tokens (teacher signals), or None.
    """

    batch: TokenBatch
    num_layers: int
    attention: dict[int, AttentionRecord] = field(default_factory=dict)
    logprobs: torch.Tensor | None = None
    predictive_entropy: torch.Tensor | None = None
    key_marks: torch.Tensor | None = None
    counterfactual: dict[str, CounterfactualRecord] = field(default_factory=dict)
    teacher: TeacherRecord | None = None


def prompt_keys(batch: TokenBatch) -> torch.Tensor:
    """(B, T) bool: the real tokens before each row's first response token (the prompt, padding excluded)."""
    before_response = batch.response_mask.long().cumsum(-1) == 0
    return batch.attention_mask & before_response


def relative_position(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) float64 relative position r = c / L of each token of ``mask`` in its row, 0 elsewhere.

    c is the 0-based index among the row's True positions and L their count, so r is in [0, 1): the first
    token has r = 0 and r < 1 always (RL_TOKEN_CREDIT.md §1.5, C1). The one definition used by the
    ``position`` signal, the position controls and the diagnostics.
    """
    index = (mask.long().cumsum(-1) - 1).double()
    length = mask.sum(-1, keepdim=True).clamp(min=1).double()
    return torch.where(mask, index / length, torch.zeros_like(index))


Scope = Literal["sequence", "group", "batch", "global"]
SCOPES = get_args(Scope)


@dataclass
class PolicyInputs:
    """What a token policy may read. Tensors only; no trainer, no config object.

    mask:       (B, T) bool, the valid (response) tokens: the universe a policy selects from.
    signals:    label -> (B, T) float, zero where mask is False (e.g. from ``signals.compute_signals``).
    group_ids:  (B,) long, rows with equal ids are the completions of one prompt (needed by scope="group").
    advantages: (B,) or (B, T) float, when a policy uses them (D3S).
    progress:   training progress p in [0, 1]: 0 on the run's first weighted batch, 1 on its last (the batch's
                optimizer step over the last batch's, taken at generation time).
    step:       generation-batch index; random policies seed with (seed, step), so they resample per batch.
    seed:       the run's seed (a trainer passes its own); the noise of random subsets and tie-breaking jitter
                mixes it with the policy's ``seed`` option, so runs of different seeds draw different noise.
    """

    mask: torch.Tensor
    signals: dict[str, torch.Tensor] = field(default_factory=dict)
    group_ids: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    progress: float = 0.0
    step: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool or self.mask.dim() != 2:
            raise ValueError(f"mask must be a (B, T) bool tensor, got {self.mask.dtype} {tuple(self.mask.shape)}")
        for name, value in self.signals.items():
            if value.shape != self.mask.shape:
                raise ValueError(f"signal {name!r} has shape {tuple(value.shape)}, mask {tuple(self.mask.shape)}")
        if self.group_ids is not None and self.group_ids.shape != self.mask.shape[:1]:
            raise ValueError(f"group_ids must be (B,) = {self.mask.shape[:1]}, got {tuple(self.group_ids.shape)}")
        if not 0.0 <= float(self.progress) <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {self.progress}")

    def signal(self, name: str) -> torch.Tensor:
        if name not in self.signals:
            raise ValueError(f"this policy needs signal {name!r}; available: {sorted(self.signals) or 'none'}")
        return self.signals[name]


@dataclass
class PolicyOutput:
    """weights: (B, T) float >= 0, detached, exactly 0 where the mask is False. stats: namespaced floats."""

    weights: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class LossTerms:
    """Per-token loss terms (B, T) (or (B, 1) broadcastable) before aggregation, and detached metrics."""

    per_token: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
