"""Position of each response token: a control signal (the flagship paper's position controls, C1-C3).

kind="response": 0-based index of the token within its response (0, 1, 2, ...).
kind="relative": that index / (L - 1) for a response of L tokens, in [0, 1] (0 for L = 1).
kind="absolute": 0-based index among the real tokens of the whole sequence (the position the model saw,
                 padding not counted).
"""

from __future__ import annotations

import torch

from ..types import ForwardCapture
from .registry import register_signal

KINDS = ("response", "relative", "absolute")


@register_signal("position", cost="free")
def position(capture: ForwardCapture, kind: str = "response") -> torch.Tensor:
    """Index of each response token (within the response, relative, or in the sequence)."""
    if kind not in KINDS:
        raise ValueError(f"position: kind={kind!r} is not one of {KINDS}")
    batch = capture.batch
    mask = batch.response_mask
    if kind == "absolute":
        values = batch.attention_mask.long().cumsum(-1) - 1
    else:
        values = mask.long().cumsum(-1) - 1
        if kind == "relative":
            length = mask.sum(-1, keepdim=True)
            values = values.float() / (length - 1).clamp_min(1)
    values = values.float()
    return torch.where(mask, values, torch.zeros_like(values))
