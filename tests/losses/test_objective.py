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


@pytest.mark.parametrize("objective", ["clipped", "cispo"])
def test_importance_ratio_scales_the_policy_term_only(objective):
    """``importance_ratio`` r (TRL's vLLM sampler correction) multiplies the policy term per token, like a token
    weight: loss(weights=w, r) = loss(weights=w * r) for the all-token normalizer; r = 1 changes nothing; the KL
    and entropy terms are not scaled; NaN where the mask is False never leaks; a (B, 1) ratio broadcasts."""
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 6, generator=g) < 0.7
    logp, old, ref = (torch.randn(3, 6, generator=g) * 0.3 - 1 for _ in range(3))
    advantages, weights = torch.randn(3, generator=g), torch.rand(3, 6, generator=g)
    ratio = torch.rand(3, 6, generator=g) * 2
    config = LossConfig(objective=objective)

    def loss(weights, ratio=None, config=config):
        return compute_loss(config, logp, old, advantages, mask, weights, importance_ratio=ratio, ref_logprobs=ref,
                            entropies=torch.rand(3, 6, generator=torch.Generator().manual_seed(1)))[0]

    assert torch.allclose(loss(weights, ratio), loss(weights * ratio))
    assert torch.equal(loss(weights, torch.ones(3, 6)), loss(weights))
    nan_outside = torch.where(mask, ratio, torch.full_like(ratio, float("nan")))
    assert torch.equal(loss(weights, nan_outside), loss(weights, ratio))
    logp.requires_grad_(True)
    loss(weights, nan_outside).backward()
    assert torch.isfinite(logp.grad).all()
    logp.requires_grad_(False)
    per_row = ratio[:, :1]
    assert torch.allclose(loss(weights, per_row), loss(weights * per_row))
    regularized = LossConfig(objective=objective, beta=0.1, entropy_coef=0.01)
    extra = loss(weights, config=regularized) - loss(weights)
    assert torch.allclose(loss(weights, ratio, regularized) - loss(weights, ratio), extra)
