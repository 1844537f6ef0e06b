"""Position of each response token: a control signal (the flagship paper's position controls, C1-C3).

kind="response": 0-based index c of the token within its response (0, 1, 2, ...).
kind="relative": c / L for a response of L tokens, in [0, 1) (``types.relative_position``, the one definition
                 shared with the position controls and the diagnostics): 0, .25, .5, .75 for L = 4.
kind="absolute": 0-based index among the real tokens of the whole sequence (the position the model saw,
                 padding not counted).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice
from ..types import ForwardCapture, relative_position
from .registry import register_signal

Kind = Literal["response", "relative", "absolute"]


@register_signal("position", cost="free")
def position(capture: ForwardCapture, kind: Kind = "response") -> torch.Tensor:
    """Index of each response token (within the response, relative, or in the sequence)."""
    check_choice("kind", kind, Kind, owner="position")
    batch = capture.batch
    mask = batch.response_mask
    if kind == "absolute":
        values = batch.attention_mask.long().cumsum(-1) - 1
    elif kind == "relative":
        values = relative_position(mask)
    else:
        values = mask.long().cumsum(-1) - 1
    values = values.float()
    return torch.where(mask, values, torch.zeros_like(values))
