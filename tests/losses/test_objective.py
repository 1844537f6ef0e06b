"""compute_loss and LossConfig (losses/objective.py): weights carry no gradient; bad configs list every problem."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.losses import LossConfig, compute_loss


def test_weights_carry_no_gradient_and_loss_gradient_flows_to_logprobs():
    logp = torch.randn(2, 6, requires_grad=True)
    weights = torch.rand(2, 6, requires_grad=True)
    loss, _ = compute_loss(LossConfig(), logp, logp.detach(), torch.tensor([1.0, -1.0]),
                           torch.ones(2, 6, dtype=torch.bool), weights)
    loss.backward()
    assert weights.grad is None and logp.grad is not None and logp.grad.abs().sum() > 0


def test_bad_loss_config_lists_every_problem():
    with pytest.raises(ValueError, match="norm='mean'.*normalizer='some'"):
        LossConfig(norm="mean", normalizer="some")
