"""The one aggregate (losses/aggregate.py): every norm against naive formulas, the selected normalizer, all-masked."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.losses import aggregate


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
