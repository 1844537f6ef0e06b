"""KL and entropy terms (losses/regularizers.py)."""

from __future__ import annotations

import torch

from tokenfocus.losses import kl_k3


def test_k3_is_nonnegative_and_zero_at_equality():
    logp = torch.randn(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert kl_k3(logp, logp, mask).per_token.abs().max() == 0
    assert (kl_k3(logp, torch.randn(3, 5), mask).per_token >= 0).all()
