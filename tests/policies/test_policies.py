"""Token policies: hand-derived cases, properties (hypothesis), and the spec contract."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenfocus.policies import POLICIES, apply_policy, parse_policy_spec
from tokenfocus.policies.d3s import max_variance_subset
from tokenfocus.policies.low2high import kappa
from tokenfocus.types import PolicyInputs

SIGNAL_NAMES = ("attention_entropy", "predictive_entropy", "context_dependency")


def make_inputs(b=6, t=12, seed=0, p_valid=0.7, progress=0.3, step=0, constant=False, groups=3):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, t, generator=g) < p_valid
    signals = {}
    for name in SIGNAL_NAMES:
        values = torch.full((b, t), 0.5) if constant else torch.rand(b, t, generator=g)
        signals[name] = values * mask
    group_ids = torch.arange(b) // max(1, b // groups)
    advantages = torch.randn(b, generator=g)
    return PolicyInputs(mask, signals, group_ids, advantages, progress, step)


def all_specs():
    """One spec per registered policy (combinators wrap two others), with several scopes where they apply."""
    specs = []
    for name, info in POLICIES.entries.items():
        options = info.options()
        if "policies" in options:
            specs.append({"name": name, "policies": [{"name": "quantile", "side": "high"}, {"name": "random"}]})
        elif "scope" in options:
            specs += [{"name": name, "scope": s} for s in ("sequence", "group", "batch")]
        else:
            specs.append({"name": name})
    return specs


# --- hand-derived cases ---------------------------------------------------------------------------------


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


def test_exact_k_with_constant_signal_ties():
    """A constant signal still gives exactly ceil(0.2 N) tokens, and the same ones for the same seed."""
    inputs = make_inputs(constant=True)
    n = int(inputs.mask.sum())
    a = apply_policy({"name": "quantile", "side": "high", "seed": 3}, inputs).weights
    b = apply_policy({"name": "quantile", "side": "high", "seed": 3}, inputs).weights
    assert int(a.sum()) == math.ceil(0.2 * n - 1e-9)
    assert torch.equal(a, b)


def test_front_back_hand_example():
    """L = 7, ratio 0.2: ceil(1.4) = 2 tokens at each end."""
    mask = torch.tensor([[False, True, True, True, True, True, True, True]])
    inputs = PolicyInputs(mask)
    assert apply_policy({"name": "front"}, inputs).weights[0].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert apply_policy({"name": "back"}, inputs).weights[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


def test_position_matched_random_has_the_reference_histogram():
    inputs = make_inputs(b=8, t=40, seed=2, p_valid=0.9)
    spec = {"name": "quantile", "side": "high", "scope": "batch"}
    reference = apply_policy(spec, inputs).weights > 0
    matched = apply_policy({**spec, "name": "position_matched", "kind": "relative"}, inputs).weights > 0
    mask = inputs.mask
    r = ((mask.long().cumsum(-1) - 1).double() / mask.sum(-1, keepdim=True).double() * 10).floor().long()
    assert torch.equal(torch.bincount(r[reference], minlength=10), torch.bincount(r[matched], minlength=10))
    assert not torch.equal(reference, matched)


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
        inputs = make_inputs(b=4, t=30, seed=seed, progress=seed / 19)
        spec = {"name": "low2high", "kappa0": 3.0 * (seed % 4) / 3, "w_min": 0.5, "w_max": 2.0, "scope": "group"}
        w = apply_policy(spec, inputs).weights.double()
        for group in inputs.group_ids.unique():
            rows = inputs.group_ids == group
            valid = inputs.mask & rows[:, None]
            if valid.any():
                assert w[valid].mean().item() == pytest.approx(1.0, abs=1e-6)
        assert w[inputs.mask].min() >= 0.5 - 1e-6 and w[inputs.mask].max() <= 2.0 + 1e-6


def test_pgpo_paper_and_development_forms_by_hand():
    """S = e^I - 1 makes log1p(S) = I, so I = minmax(I). Six tokens I = 0, .2, .4, .6, .8, 1; tau .4, beta 2.
    Paper form: w~ = [0, .5, 1, 1 + 2(.2/.6), 1 + 2(.4/.6), 3], then scaled so sum = 6.
    Development form: gate = sorted I at floor(6 * .4) = 2 -> 0.4 as well; floor 0.1; no mass normalization."""
    importance = torch.tensor([[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]])
    inputs = PolicyInputs(torch.ones(1, 6, dtype=torch.bool), {"context_dependency": importance.exp() - 1})
    raw = torch.tensor([0.0, 0.5, 1.0, 1 + 2 / 3, 1 + 4 / 3, 3.0])
    paper = apply_policy({"name": "pgpo"}, inputs).weights[0]
    torch.testing.assert_close(paper, (raw * 6 / raw.sum()).float(), atol=1e-5, rtol=0)
    development = apply_policy({"name": "pgpo", "threshold_mode": "quantile", "low_weight_floor": 0.1,
                                "mass_normalization": False}, inputs).weights[0]
    torch.testing.assert_close(development, torch.tensor([0.1, 0.5, 1.0, 1 + 2 / 3, 1 + 4 / 3, 3.0]), atol=1e-5, rtol=0)


def test_pgpo_constant_signal_is_uniform_and_padding_invariant():
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    constant = PolicyInputs(mask, {"context_dependency": torch.full((2, 7), 0.3) * mask})
    assert torch.equal(apply_policy({"name": "pgpo"}, constant).weights, mask.float())
    values = torch.rand(1, 4)
    padded = PolicyInputs(mask[:1], {"context_dependency": torch.cat([values, torch.full((1, 3), 9.0)], 1) * mask[:1]})
    unpadded = PolicyInputs(torch.ones(1, 4, dtype=torch.bool), {"context_dependency": values})
    torch.testing.assert_close(apply_policy({"name": "pgpo"}, padded).weights[:, :4],
                               apply_policy({"name": "pgpo"}, unpadded).weights)


def test_video_ktr_union_and_signed_selection():
    mask = torch.ones(1, 10, dtype=torch.bool)
    a = torch.arange(10.0)[None]
    b = -torch.arange(10.0)[None]  # log-prob differences that are negative everywhere except index 0
    inputs = PolicyInputs(mask, {"ent": a, "vis": b}, group_ids=torch.zeros(1, dtype=torch.long))
    out = apply_policy({"name": "video_ktr", "signals": ["ent", "vis"], "ratio": 0.2}, inputs)
    assert out.weights[0].tolist() == [1, 1] + [0] * 6 + [1, 1]
    assert out.stats["policy/ratio/union"] == 0.4
    unsigned = apply_policy({"name": "video_ktr", "signals": ["vis"], "signed": False}, inputs).weights
    assert unsigned[0].tolist() == [0] * 8 + [1, 1]


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


# --- properties -----------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 7), t=st.integers(1, 16), step=st.integers(0, 5),
       progress=st.floats(0, 1), p_valid=st.floats(0, 1))
def test_contract_properties_for_every_policy(seed, b, t, step, progress, p_valid):
    inputs = make_inputs(b, t, seed, p_valid, progress, step, groups=max(1, b // 2))
    for spec in all_specs():
        out = apply_policy(spec, inputs)
        w = out.weights
        assert w.shape == inputs.mask.shape and not w.requires_grad
        assert torch.isfinite(w).all() and (w >= 0).all(), spec
        assert (w[~inputs.mask] == 0).all(), spec
        again = apply_policy(spec, inputs).weights
        assert torch.equal(w, again), spec  # same seed, same inputs -> same weights


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.floats(0.01, 1.0), scope=st.sampled_from(["sequence", "group", "batch"]),
       name=st.sampled_from(["random", "quantile"]))
def test_selected_count_within_one_token_of_ratio_per_unit(seed, ratio, scope, name):
    inputs = make_inputs(b=6, t=15, seed=seed)
    w = apply_policy({"name": name, "ratio": ratio, "scope": scope}, inputs).weights > 0
    units = {"sequence": torch.arange(6), "group": inputs.group_ids, "batch": torch.zeros(6, dtype=torch.long)}[scope]
    for unit in units.unique():
        rows = units == unit
        n = int(inputs.mask[rows].sum())
        if n:
            assert abs(int(w[rows].sum()) - ratio * n) < 1 + 1e-9


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_batch_permutation_permutes_outputs(seed):
    inputs = make_inputs(b=6, t=10, seed=seed)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    permuted = PolicyInputs(inputs.mask[perm], {k: v[perm] for k, v in inputs.signals.items()},
                            inputs.group_ids[perm], inputs.advantages[perm], inputs.progress, inputs.step)
    for spec in ({"name": "quantile", "scope": "group"}, {"name": "low2high", "scope": "batch"}, {"name": "pgpo"},
                 {"name": "front"}, {"name": "d3s_tokens"}):
        a = apply_policy(spec, inputs).weights[perm]
        b = apply_policy(spec, permuted).weights
        # Exact-k ties are broken by position-seeded jitter, so compare where the signal has no ties.
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_mass_conservation_where_promised():
    inputs = make_inputs(b=6, t=20, seed=4)
    pgpo = apply_policy({"name": "pgpo"}, inputs).weights
    torch.testing.assert_close(pgpo.sum(-1), inputs.mask.sum(-1).float(), atol=1e-4, rtol=0)
    for scope in ("sequence", "group", "batch"):
        for form in ("exp", "linear"):
            w = apply_policy({"name": "low2high", "scope": scope, "form": form}, inputs).weights
            assert w[inputs.mask].mean().item() == pytest.approx(1.0, abs=1e-5)


def test_all_masked_rows_and_zero_variance_groups_are_finite():
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[2:] = True
    signals = {name: torch.full((4, 6), 0.7) * mask for name in SIGNAL_NAMES}
    inputs = PolicyInputs(mask, signals, torch.tensor([0, 0, 1, 1]), torch.zeros(4), 0.5)
    for spec in all_specs():
        w = apply_policy(spec, inputs).weights
        assert torch.isfinite(w).all() and (w[:2] == 0).all(), spec


def test_specs_are_validated_with_the_valid_choices_named():
    with pytest.raises(ValueError, match="Unknown policy 'quantil'. Registered: .*quantile"):
        parse_policy_spec("quantil")
    with pytest.raises(ValueError, match="unknown option.*'rate'.*Valid options: signal"):
        parse_policy_spec({"name": "quantile", "rate": 0.2})
    inputs = make_inputs()
    with pytest.raises(ValueError, match="scope='global_batch' is not one of"):
        apply_policy({"name": "quantile", "scope": "global_batch"}, inputs)
    with pytest.raises(ValueError, match="needs signal 'nope'"):
        apply_policy({"name": "quantile", "signal": "nope"}, inputs)
    with pytest.raises(ValueError, match="group_ids"):
        apply_policy({"name": "quantile", "scope": "group"}, PolicyInputs(inputs.mask, inputs.signals))
