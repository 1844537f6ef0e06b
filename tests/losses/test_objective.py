"""Per-token objectives and the one aggregate: hand-derived cases, naive references, and TRL itself."""

from __future__ import annotations

import math

import pytest
import torch

from tokenfocus.losses import LossConfig, aggregate, clipped_surrogate, compute_loss, get_preset, kl_k3


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


def test_aggregate_against_naive_formulas():
    torch.manual_seed(0)
    per_token = torch.randn(5, 7)
    mask = torch.rand(5, 7) > 0.3
    mask[2] = False  # an all-masked row is legal
    weights = torch.rand(5, 7) * mask
    per_token_nan = per_token.masked_fill(~mask, float("nan"))  # garbage where masked must not leak
    w = weights.tolist()
    m = mask.tolist()
    x = per_token.tolist()
    rows = range(5)
    total = sum(x[b][t] * w[b][t] for b in rows for t in range(7) if m[b][t])
    n_valid = sum(map(sum, m))
    mass = sum(w[b][t] for b in rows for t in range(7) if m[b][t])
    assert aggregate(per_token_nan, weights, mask, "token_mean", "all").item() == pytest.approx(total / n_valid, rel=1e-5)
    assert aggregate(per_token_nan, weights, mask, "token_mean", "selected").item() == pytest.approx(total / mass, rel=1e-5)
    per_seq = [sum(x[b][t] * w[b][t] for t in range(7) if m[b][t]) / max(1, sum(m[b])) for b in rows]
    assert aggregate(per_token_nan, weights, mask, "seq_mean_token_mean").item() == pytest.approx(sum(per_seq) / 5, rel=1e-5)
    assert aggregate(per_token_nan, weights, mask, "seq_sum_const", max_length=9).item() == pytest.approx(total / 45, rel=1e-5)
    assert aggregate(per_token_nan, weights, mask, "seq_sum").item() == pytest.approx(total / 5, rel=1e-5)
    assert aggregate(per_token, weights, mask, "token_mean", global_count=100.0).item() == pytest.approx(total / 100, rel=1e-5)


def test_selected_normalizer_scales_a_subset_by_all_over_selected():
    """80/20 parity: the same subset loss under 'selected' vs 'all' differs by exactly |U| / |S|."""
    torch.manual_seed(1)
    per_token = torch.randn(4, 10)
    mask = torch.ones(4, 10, dtype=torch.bool)
    subset = (torch.rand(4, 10) < 0.2).float()
    selected = aggregate(per_token, subset, mask, "token_mean", "selected")
    everything = aggregate(per_token, subset, mask, "token_mean", "all")
    assert (selected / everything).item() == pytest.approx(40 / subset.sum().item(), rel=1e-5)


def test_all_masked_batch_gives_zero_not_nan():
    mask = torch.zeros(3, 4, dtype=torch.bool)
    for norm in ("token_mean", "seq_mean_token_mean", "seq_sum_const", "seq_sum"):
        for normalizer in ("all", "selected"):
            value = aggregate(torch.full((3, 4), float("nan")), None, mask, norm, normalizer, max_length=4)
            assert value.item() == 0.0


def test_k3_is_nonnegative_and_zero_at_equality():
    logp = torch.randn(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    assert kl_k3(logp, logp, mask).per_token.abs().max() == 0
    assert (kl_k3(logp, torch.randn(3, 5), mask).per_token >= 0).all()


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
    with pytest.raises(ValueError, match="Unknown loss preset 'daapo'. Presets:"):
        get_preset("daapo")
