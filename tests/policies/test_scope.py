"""Scopes and exact-k selection (policies/scope.py), seen through the policies that use them."""

from __future__ import annotations

import math

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
