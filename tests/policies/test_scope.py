"""Scopes and exact-k selection (policies/scope.py), seen through the policies that use them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import policy_inputs
from tokenfocus.policies import apply_policy


def test_exact_k_with_constant_signal_ties():
    """A constant signal still gives exactly ceil(0.2 N) tokens, and the same ones for the same seed."""
    inputs = policy_inputs(constant=True)
    n = int(inputs.mask.sum())
    a = apply_policy({"name": "quantile", "side": "high", "seed": 3}, inputs).weights
    b = apply_policy({"name": "quantile", "side": "high", "seed": 3}, inputs).weights
    assert int(a.sum()) == math.ceil(0.2 * n - 1e-9)
    assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.floats(0.01, 1.0), scope=st.sampled_from(["sequence", "group", "batch"]),
       name=st.sampled_from(["random", "quantile"]))
def test_selected_count_within_one_token_of_ratio_per_unit(seed, ratio, scope, name):
    inputs = policy_inputs(b=6, t=15, seed=seed)
    w = apply_policy({"name": name, "ratio": ratio, "scope": scope}, inputs).weights > 0
    units = {"sequence": torch.arange(6), "group": inputs.group_ids, "batch": torch.zeros(6, dtype=torch.long)}[scope]
    for unit in units.unique():
        rows = units == unit
        n = int(inputs.mask[rows].sum())
        if n:
            assert abs(int(w[rows].sum()) - ratio * n) < 1 + 1e-9


NOISY = [
    {"name": "random"},
    {"name": "quantile", "side": "high"},  # ties on a constant signal: the jitter decides
    {"name": "position_matched", "signal": "attention_entropy"},
    {"name": "low2high", "transform_kind": "rank"},  # rank ties broken by the jitter
]


@pytest.mark.parametrize("spec", NOISY, ids=lambda s: s["name"])
def test_the_run_seed_and_the_policy_seed_both_enter_the_noise(spec):
    """The noise (random subsets, tie-breaking jitter) depends on the run's seed (PolicyInputs.seed) as well as
    the policy's own ``seed`` option: one run seed gives one selection, another run seed another."""
    base = policy_inputs(b=6, t=15, seed=2, step=1, constant=True, progress=1.0)

    def weights(run_seed, policy_seed=0):
        return apply_policy({**spec, "seed": policy_seed}, replace(base, seed=run_seed)).weights

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))
    assert not torch.equal(weights(3, policy_seed=0), weights(3, policy_seed=1))
