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
    """

    entropy: torch.Tensor
    n_keys: torch.Tensor
    sink_prob: torch.Tensor | None = None


@dataclass
class ForwardCapture:
    """Tensors captured during one scoring forward pass; what signal functions may read.

    attention: layer index -> AttentionRecord (only the layers that were recorded).
    logprobs:  (B, T) float32 token log-probs (alignment rule above), or None if not computed.
    predictive_entropy: (B, T) float32 entropy of the next-token distribution that predicts token t.
    """

    batch: TokenBatch
    num_layers: int
    attention: dict[int, AttentionRecord] = field(default_factory=dict)
    logprobs: torch.Tensor | None = None
    predictive_entropy: torch.Tensor | None = None
