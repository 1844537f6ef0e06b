"""Hard subsets (policies/subsets.py): full, random, quantile, and the flagship's anchor/explorer partition."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from helpers import policy_inputs
from tokenfocus.policies import anchor_explorer_subsets, apply_policy, random_subset
from tokenfocus.types import PolicyInputs


def test_quantile_low_high_middle_partition_on_a_hand_example():
    """Values 0.1..1.0 on 10 tokens, ratio 0.2: anchors = the two smallest, explorers = the two largest."""
    values = torch.linspace(0.1, 1.0, 10)[None]
    inputs = PolicyInputs(torch.ones(1, 10, dtype=torch.bool), {"attention_entropy": values})
    low = apply_policy({"name": "quantile", "side": "low"}, inputs).weights
    high = apply_policy({"name": "quantile", "side": "high"}, inputs).weights
    middle = apply_policy({"name": "quantile", "side": "middle"}, inputs).weights
    assert low[0].tolist() == [1, 1] + [0] * 8
    assert high[0].tolist() == [0] * 8 + [1, 1]
    assert torch.equal(low + middle + high, torch.ones(1, 10))


@pytest.mark.parametrize("scope", ["sequence", "group", "batch"])
@pytest.mark.parametrize("ratio, seed", [(0.2, 0), (0.35, 5)])
def test_anchor_explorer_subsets_partition_the_mask_and_equal_the_quantile_policies(scope, ratio, seed):
    """Anchors, middle and explorers are disjoint and cover exactly the valid tokens; anchors / explorers are
    the quantile policy's low / high selections with the same signal, ratio, scope and seed (the presets)."""
    inputs = policy_inputs(b=6, t=15, seed=11, step=2)
    subsets = anchor_explorer_subsets(inputs, "attention_entropy", ratio, scope, seed)
    assert set(subsets) == {"anchors", "middle", "explorers"}
    anchors, middle, explorers = subsets["anchors"], subsets["middle"], subsets["explorers"]
    assert anchors.dtype == torch.bool and anchors.shape == inputs.mask.shape
    assert not (anchors & middle).any() and not (anchors & explorers).any() and not (middle & explorers).any()
    assert torch.equal(anchors | middle | explorers, inputs.mask)
    options = {"signal": "attention_entropy", "ratio": ratio, "scope": scope, "seed": seed}
    low = apply_policy({"name": "quantile", "side": "low", **options}, inputs).weights
    high = apply_policy({"name": "quantile", "side": "high", **options}, inputs).weights
    assert torch.equal(anchors, low > 0) and torch.equal(explorers, high > 0)
    assert anchors.any() and explorers.any()


def test_anchor_explorer_subsets_of_another_signal_and_the_tie_breaking_seed():
    """The subsets read the named signal; on a constant signal the seed alone decides (ties by seeded jitter)."""
    inputs = policy_inputs(b=4, t=10, seed=3)
    by_pred = anchor_explorer_subsets(inputs, "predictive_entropy")
    quantile = apply_policy({"name": "quantile", "signal": "predictive_entropy", "side": "low"}, inputs).weights
    assert torch.equal(by_pred["anchors"], quantile > 0)
    constant = policy_inputs(b=4, t=10, seed=3, constant=True)
    a, b = anchor_explorer_subsets(constant, seed=1), anchor_explorer_subsets(constant, seed=2)
    assert not torch.equal(a["anchors"], b["anchors"])
    assert torch.equal(a["anchors"], anchor_explorer_subsets(constant, seed=1)["anchors"])


@pytest.mark.parametrize("scope", ["sequence", "group", "batch"])
@pytest.mark.parametrize("step", [0, 3])
def test_random_subset_is_the_random_policy(scope, step):
    inputs = policy_inputs(b=6, t=12, seed=4, step=step)
    subset = random_subset(inputs, 0.3, scope, seed=7)
    assert subset.dtype == torch.bool and not (subset & ~inputs.mask).any()
    weights = apply_policy({"name": "random", "ratio": 0.3, "scope": scope, "seed": 7}, inputs).weights
    assert torch.equal(subset, weights > 0)


def test_random_subset_and_the_tie_breaking_follow_the_run_seed():
    """``random_subset`` and ``anchor_explorer_subsets`` (the diagnostics' and evidence's subsets) draw their noise
    from the run seed too: the same run seed gives the same subset, another run seed another."""
    inputs = policy_inputs(b=6, t=12, seed=4, step=3, constant=True)
    run = {s: replace(inputs, seed=s) for s in (5, 6)}
    assert torch.equal(random_subset(run[5], 0.3), random_subset(replace(inputs, seed=5), 0.3))
    assert not torch.equal(random_subset(run[5], 0.3), random_subset(run[6], 0.3))
    anchors = {s: anchor_explorer_subsets(run[s])["anchors"] for s in run}
    assert torch.equal(anchors[5], anchor_explorer_subsets(replace(inputs, seed=5))["anchors"])
    assert not torch.equal(anchors[5], anchors[6])
