"""Token log-probabilities log p(y_t | y_<t) of the scored model (alignment rule of types.py)."""

from __future__ import annotations

import torch

from ..types import ForwardCapture
from .registry import register_signal


@register_signal("logprobs", requires=("logits",), cost="forward")
def logprobs(capture: ForwardCapture) -> torch.Tensor:
    """log p(input_ids[:, t] | input_ids[:, :t]); 0 outside the response."""
    if capture.logprobs is None:
        raise ValueError("logprobs needs the logits pass of the scoring forward")
    mask = capture.batch.response_mask
    return torch.where(mask, capture.logprobs, torch.zeros_like(capture.logprobs))
