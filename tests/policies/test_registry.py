"""The policy registry (policies/registry.py): the apply_policy contract for every registered policy, spec
validation with the valid choices named, weight_stats and weight_histogram."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import POLICY_SIGNALS, all_policy_specs, policy_inputs
from tokenfocus.policies import apply_policy, parse_policy_spec, weight_histogram, weight_stats
from tokenfocus.types import PolicyInputs


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 7), t=st.integers(1, 16), step=st.integers(0, 5),
       progress=st.floats(0, 1), p_valid=st.floats(0, 1))
def test_contract_properties_for_every_policy(seed, b, t, step, progress, p_valid):
    inputs = policy_inputs(b, t, seed, p_valid, progress, step, groups=max(1, b // 2))
    for spec in all_policy_specs():
        out = apply_policy(spec, inputs)
        w = out.weights
        assert w.shape == inputs.mask.shape and not w.requires_grad
        assert torch.isfinite(w).all() and (w >= 0).all(), spec
        assert (w[~inputs.mask] == 0).all(), spec
        again = apply_policy(spec, inputs).weights
        assert torch.equal(w, again), spec  # same seed, same inputs -> same weights


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_batch_permutation_permutes_outputs(seed):
    inputs = policy_inputs(b=6, t=10, seed=seed)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    permuted = PolicyInputs(inputs.mask[perm], {k: v[perm] for k, v in inputs.signals.items()},
                            inputs.group_ids[perm], inputs.advantages[perm], inputs.progress, inputs.step)
    for spec in ({"name": "quantile", "scope": "group"}, {"name": "low2high", "scope": "batch"}, {"name": "pgpo"},
                 {"name": "front"}, {"name": "d3s_tokens"}):
        a = apply_policy(spec, inputs).weights[perm]
        b = apply_policy(spec, permuted).weights
        # Exact-k ties are broken by position-seeded jitter, so compare where the signal has no ties.
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_all_masked_rows_and_zero_variance_groups_are_finite():
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[2:] = True
    signals = {name: torch.full((4, 6), 0.7) * mask for name in POLICY_SIGNALS}
    inputs = PolicyInputs(mask, signals, torch.tensor([0, 0, 1, 1]), torch.zeros(4), 0.5)
    for spec in all_policy_specs():
        w = apply_policy(spec, inputs).weights
        assert torch.isfinite(w).all() and (w[:2] == 0).all(), spec


def test_specs_are_validated_with_the_valid_choices_named():
    with pytest.raises(ValueError, match="Unknown policy 'quantil'. Registered: .*quantile"):
        parse_policy_spec("quantil")
    with pytest.raises(ValueError, match="unknown option.*'rate'.*Valid options: signal"):
        parse_policy_spec({"name": "quantile", "rate": 0.2})
    inputs = policy_inputs()
    with pytest.raises(ValueError, match="scope='global_batch' is not one of"):
        apply_policy({"name": "quantile", "scope": "global_batch"}, inputs)
    with pytest.raises(ValueError, match="needs signal 'nope'"):
        apply_policy({"name": "quantile", "signal": "nope"}, inputs)
    with pytest.raises(ValueError, match="group_ids"):
        apply_policy({"name": "quantile", "scope": "group"}, PolicyInputs(inputs.mask, inputs.signals))


def test_a_bad_literal_option_is_refused_when_the_spec_is_parsed():
    """side='top' fails at parse time, with no inputs at all (so before any model runs), naming the choices."""
    message = r"policy 'quantile': side='top' is not one of \('low', 'high', 'middle'\)"
    with pytest.raises(ValueError, match=message):
        parse_policy_spec({"name": "quantile", "side": "top"})
    scopes = r"\('sequence', 'group', 'batch', 'global'\)"
    with pytest.raises(ValueError, match=r"scope='global_batch' is not one of " + scopes):
        parse_policy_spec({"name": "random", "scope": "global_batch"})
    assert parse_policy_spec({"name": "quantile", "side": "middle"}).options == {"side": "middle"}


def test_weight_stats_by_hand():
    """Valid weights 0, 1, 2 (the 5 is masked): kept 2/3, mean 1, std sqrt(2/3), ESS / N = 3^2 / (3 * 5) = 0.6."""
    weights = torch.tensor([[0.0, 1.0, 2.0, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    stats = weight_stats(weights, mask)
    assert stats["policy/kept_fraction"] == pytest.approx(2 / 3) and stats["policy/valid_tokens"] == 3.0
    assert stats["policy/weight_mean"] == 1.0
    assert stats["policy/weight_min"] == 0.0 and stats["policy/weight_max"] == 2.0
    assert stats["policy/weight_std"] == pytest.approx(math.sqrt(2 / 3))
    assert stats["policy/ess_fraction"] == pytest.approx(0.6)
    assert weight_stats(weights, torch.zeros_like(mask)) == {"policy/kept_fraction": 0.0, "policy/valid_tokens": 0.0}
    out = apply_policy({"name": "quantile", "ratio": 0.5}, PolicyInputs(mask, {"attention_entropy": weights}))
    assert out.stats["policy/kept_fraction"] == pytest.approx(2 / 3)  # ceil(0.5 * 3) = 2 of 3 valid tokens


@pytest.mark.parametrize("spec", [{"name": "low2high"}, {"name": "pgpo"}, {"name": "quantile"}])
@pytest.mark.parametrize("bins", [30, 7])
def test_weight_histogram_counts_every_valid_token_once(spec, bins):
    inputs = policy_inputs(b=6, t=20, seed=5)
    weights = apply_policy(spec, inputs).weights
    histogram = weight_histogram(weights, inputs.mask, bins=bins)
    assert len(histogram["edges"]) == bins + 1 and len(histogram["counts"]) == bins
    assert sum(histogram["counts"]) == int(inputs.mask.sum())
    assert histogram["edges"][0] == 0.0
    assert histogram["edges"][-1] == pytest.approx(float(weights[inputs.mask].max()), abs=1e-6)
    assert histogram["edges"] == sorted(histogram["edges"])


def test_weight_histogram_of_a_hard_subset_by_hand():
    """0/1 weights: edges span [0, 1]; the zeros fall in the first bin and the ones in the last; the masked
    weight (9) is not counted and does not stretch the edges."""
    weights = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 9.0]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    histogram = weight_histogram(weights, mask, bins=4)
    assert histogram["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert histogram["counts"] == [3, 0, 0, 2]
    empty = weight_histogram(weights, torch.zeros_like(mask), bins=4)
    assert sum(empty["counts"]) == 0 and empty["edges"][-1] == 1.0
