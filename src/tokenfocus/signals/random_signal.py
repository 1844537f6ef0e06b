"""Seeded uniform noise per response token: the random-subset control as a signal.

Ranking by this signal gives a uniformly random subset; the same seed gives the same values for the same
batch shape, whatever device or process computes them (the generator runs on the CPU).
"""

from __future__ import annotations

import torch

from ..types import ForwardCapture
from .registry import register_signal


@register_signal("random", cost="free")
def random(capture: ForwardCapture, seed: int = 0) -> torch.Tensor:
    """U(0, 1) per response token, deterministic in ``seed``."""
    batch = capture.batch
    generator = torch.Generator().manual_seed(int(seed))
    values = torch.rand(batch.shape, generator=generator).to(batch.input_ids.device)
    return torch.where(batch.response_mask, values, torch.zeros_like(values))
