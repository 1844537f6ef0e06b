"""Predictive (next-token) entropy of the distribution that generated each response token.

The "forking token" signal of "Beyond the 80/20 Rule" (arXiv 2506.01939): H_t = -sum_v p_v log p_v of
softmax(logits_{t-1} / temperature). Unlike attention entropy it depends on the sampling temperature;
the scoring pass computes it at the ``temperature`` given to ``compute_signals`` (default 1.0).
"""

from __future__ import annotations

import torch

from ..types import ForwardCapture
from .registry import register_signal


@register_signal("predictive_entropy", requires=("logits",), cost="forward")
def predictive_entropy(capture: ForwardCapture) -> torch.Tensor:
    """Entropy (nats) of the next-token distribution that predicts each response token."""
    if capture.predictive_entropy is None:
        raise ValueError("predictive_entropy needs the logits pass of the scoring forward")
    mask = capture.batch.response_mask
    return torch.where(mask, capture.predictive_entropy, torch.zeros_like(capture.predictive_entropy))
