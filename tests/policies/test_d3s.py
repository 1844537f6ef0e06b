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


@pytest.mark.parametrize("spec", [{"name": "d3s_samples"}, {"name": "d3s", "k_init": 0.3},
                                  {"name": "d3s", "n_init": 0.25, "cross_group": False}])
def test_rows_before_forward_are_the_rows_d3s_can_weight_known_from_advantages_alone(spec):
    """The rollout level needs no signal: the rows it returns without any signal are exactly the rows that hold
    the policy's weight (a row outside them never gets weight, so a trainer may skip its forward)."""
    from tokenfocus.policies import parse_policy_spec, rows_before_forward

    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        mask = torch.rand(16, 6, generator=g) < 0.9
        mask[:, 0] = True
        advantages = torch.randn(16, generator=g)
        groups = torch.arange(16) // 4
        signal = {"predictive_entropy": torch.rand(16, 6, generator=g) * mask}
        parsed = parse_policy_spec(spec)
        rows = rows_before_forward(parsed, PolicyInputs(mask, {}, groups, advantages, progress=0.2, step=1))
        weights = apply_policy(spec, PolicyInputs(mask, signal, groups, advantages, progress=0.2, step=1)).weights
        assert rows is not None and 0 < int(rows.sum()) < 16
        assert not weights[~rows].any()  # no weight outside
        if spec["name"] == "d3s_samples":
            assert torch.equal(rows, weights.sum(-1) > 0)


def test_policies_without_a_rollout_level_have_no_rows_before_forward():
    from tokenfocus.policies import parse_policy_spec, rows_before_forward

    inputs = PolicyInputs(torch.ones(4, 3, dtype=torch.bool), advantages=torch.randn(4))
    assert rows_before_forward(parse_policy_spec({"name": "full"}), inputs) is None
    assert rows_before_forward(parse_policy_spec({"name": "d3s_tokens"}), inputs) is None
