"""D3S (policies/d3s.py): max-variance sample subset against brute force; cross-group selection."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch

from tokenfocus.policies import apply_policy
from tokenfocus.policies.d3s import max_variance_subset
from tokenfocus.types import PolicyInputs


def test_d3s_max_variance_subset_matches_brute_force():
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        n_total = int(torch.randint(2, 9, (1,), generator=g))
        values = torch.randn(n_total, generator=g).round(decimals=1)
        for n in range(1, n_total + 1):
            chosen = max_variance_subset(values, n)
            best = max(values[list(c)].var(unbiased=False).item() for c in combinations(range(n_total), n))
            assert int(chosen.sum()) == n
            assert values[chosen].var(unbiased=False).item() == pytest.approx(best, abs=1e-9)


def test_d3s_cross_group_does_not_renormalize_and_drops_zero_groups():
    mask = torch.ones(8, 3, dtype=torch.bool)
    advantages = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.5, -0.5])  # group 0 has no signal
    inputs = PolicyInputs(mask, group_ids=torch.arange(8) // 4, advantages=advantages, progress=0.0)
    kept = apply_policy({"name": "d3s_samples", "n_init": 0.5}, inputs).weights[:, 0]
    assert kept.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    tokens = apply_policy({"name": "d3s_tokens", "k_init": 0.5}, PolicyInputs(
        mask, {"predictive_entropy": torch.ones(8, 3)}, advantages=advantages)).weights
    assert tokens[:4].sum() == 0 and tokens.sum() == 12  # key |A| H is 0 for zero-advantage rows
