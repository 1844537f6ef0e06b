"""Low2High soft reweighting (policies/low2high.py): the kappa schedule, mean one, bounds."""

from __future__ import annotations

import pytest
import torch

from helpers import policy_inputs
from tokenfocus.policies import apply_policy
from tokenfocus.policies.low2high import kappa
from tokenfocus.types import PolicyInputs


def test_low2high_moves_weight_from_anchors_to_explorers():
    """kappa(p) = 0.5 (2p - 1): negative early (anchors heavier), zero at p = 0.5 (uniform), positive late."""
    assert kappa("linear", 0.5, 0.0) == -0.5 and kappa("linear", 0.5, 1.0) == 0.5
    assert kappa("high2low", 0.5, 0.0) == 0.5 and kappa("step", 0.5, 0.49) == -0.5
    assert kappa("cosine", 0.5, 0.0) == pytest.approx(-0.5)
    values = torch.linspace(0, 1, 20)[None]
    mask = torch.ones(1, 20, dtype=torch.bool)
    for progress, sign in ((0.0, -1), (0.5, 0), (1.0, 1)):
        w = apply_policy({"name": "low2high"}, PolicyInputs(mask, {"attention_entropy": values}, progress=progress)).weights
        assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
        slope = (w[0, -1] - w[0, 0]).item()
        assert (slope > 1e-3) if sign > 0 else (slope < -1e-3) if sign < 0 else abs(slope) < 1e-6


def test_low2high_mean_one_and_bounds_under_heavy_clipping():
    """RL_TOKEN_CREDIT §1.11 pitfall 7: mean w = 1 +- 1e-6 and bounds respected for random z, kappa in [-3, 3]."""
    for seed in range(20):
        inputs = policy_inputs(b=4, t=30, seed=seed, progress=seed / 19)
        spec = {"name": "low2high", "kappa0": 3.0 * (seed % 4) / 3, "w_min": 0.5, "w_max": 2.0, "scope": "group"}
        w = apply_policy(spec, inputs).weights.double()
        for group in inputs.group_ids.unique():
            rows = inputs.group_ids == group
            valid = inputs.mask & rows[:, None]
            if valid.any():
                assert w[valid].mean().item() == pytest.approx(1.0, abs=1e-6)
        assert w[inputs.mask].min() >= 0.5 - 1e-6 and w[inputs.mask].max() <= 2.0 + 1e-6


def test_low2high_mass_conservation():
    inputs = policy_inputs(b=6, t=20, seed=4)
    for scope in ("sequence", "group", "batch"):
        for form in ("exp", "linear"):
            w = apply_policy({"name": "low2high", "scope": scope, "form": form}, inputs).weights
            assert w[inputs.mask].mean().item() == pytest.approx(1.0, abs=1e-5)
