"""Per-token policy-gradient objectives (losses/surrogate.py): the clipped surrogate by hand, GSPO's sequence ratio."""

from __future__ import annotations

import math

import pytest
import torch

from tokenfocus.losses import clipped_surrogate


def test_clipped_surrogate_hand_derived():
    """A = +1: r = 1.5 clips at 1 + 0.28 -> loss -1.28; r = 0.5 stays -0.5 (min picks the unclipped).
    A = -1: r = 0.5 clips at 0.8 -> loss +0.8 (the pessimistic max); r = 1.5 -> +1.5;
    dual clip c = 1.2 caps that at 1.2."""
    logp = torch.log(torch.tensor([[1.5, 0.5, 0.5, 1.5]]))
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    out = clipped_surrogate(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28)
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.28, -0.5, 0.8, 1.5]]))
    assert out.metrics["loss/clip_ratio_high"] == 0.25 and out.metrics["loss/clip_ratio_low"] == 0.25
    dual = clipped_surrogate(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28, dual_clip=1.2)
    torch.testing.assert_close(dual.per_token, torch.tensor([[-1.28, -0.5, 0.8, 1.2]]))


def test_sequence_level_ratio_is_the_masked_mean_log_ratio():
    """GSPO: s = exp(mean_t (logp - old)) over valid tokens only; log-ratios 0.2, 0.4, (pad) -> exp(0.3)."""
    logp = torch.tensor([[0.2, 0.4, 9.0]])
    mask = torch.tensor([[True, True, False]])
    out = clipped_surrogate(logp, torch.zeros(1, 3), torch.tensor([1.0]), mask, epsilon_low=1.0,
                            epsilon_high=1.0, ratio_level="sequence")
    assert out.per_token.shape == (1, 1)
    assert out.per_token.item() == pytest.approx(-math.exp(0.3))
