"""diagnostics.diagnose: one diagnosis from tensors and a log-prob callable, on a tiny model.

Derivation: L_S = sum_{t in S} l_t / Z with one Z for every subset, so g_anchors + g_middle + g_explorers =
g_full; the projection shares <g_S, g_full> / |g_full|^2 of the three therefore sum to 1, and the middle
gradient (computed by subtraction) equals a direct backward over the middle tokens.
"""

from __future__ import annotations

import pytest
import torch

from helpers import tiny
from tokenfocus.diagnostics import DiagnosticsConfig, diagnose, trainable_parameters
from tokenfocus.losses import clipped_surrogate
from tokenfocus.policies import anchor_explorer_subsets
from tokenfocus.types import PolicyInputs

B, C, P, G = 8, 7, 5, 4


@pytest.fixture
def batch():
    model, _ = tiny()
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (B, P + C), generator=g)
    lengths = torch.tensor([7, 5, 6, 7, 3, 7, 6, 4])
    mask = torch.arange(C)[None] < lengths[:, None]
    attention = torch.cat([torch.ones(B, P, dtype=torch.bool), mask], 1)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0])  # group 1 has no signal
    signals = {name: torch.rand(B, C, generator=g) * mask for name in
               ("attention_entropy", "predictive_entropy", "attention_mass")}
    inputs = PolicyInputs(mask, signals, torch.arange(B) // G, advantages, step=3)

    def logprobs_fn(rows):
        logits = model(input_ids=ids[rows], attention_mask=attention[rows].long()).logits[:, P - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, ids[rows, P:, None]).squeeze(-1)

    params = [p for _, p in trainable_parameters(model)]
    return model, inputs, advantages, mask, logprobs_fn, params, ids, attention


def test_projection_shares_of_a_partition_sum_to_one_and_only_informative_groups_run(batch):
    model, inputs, advantages, mask, logprobs_fn, params, *_ = batch
    config = DiagnosticsConfig(project_dim=None, bootstrap=3, ratio=0.25)
    out = diagnose(config, inputs, advantages, mask, logprobs_fn, params, correct=torch.arange(B) % 2 == 0)
    shares = sum(out[f"diag/grad/{s}/projection_share"] for s in ("anchors", "middle", "explorers"))
    assert shares == pytest.approx(1.0, abs=1e-6)
    assert out["diag/grad/full/cos_full"] == pytest.approx(1.0, abs=1e-9)
    assert out["diag/informative_groups"] == 1.0  # group 1's advantages are all zero
    informative = torch.arange(B) < G
    subsets = anchor_explorer_subsets(inputs, "attention_entropy", 0.25)
    assert out["diag/grad/anchors/n_tokens"] == float((subsets["anchors"] & informative[:, None]).sum())
    assert "diag/attention_entropy/correct" in out and "diag/prompt_mass/anchors" in out


def test_middle_by_subtraction_equals_a_direct_backward(batch):
    model, inputs, advantages, mask, logprobs_fn, params, *_ = batch
    config = DiagnosticsConfig(project_dim=None, bootstrap=0, ratio=0.25)
    out = diagnose(config, inputs, advantages, mask, logprobs_fn, params)
    middle = anchor_explorer_subsets(inputs, "attention_entropy", 0.25)["middle"]
    rows = torch.arange(G)  # the informative group
    logps = logprobs_fn(rows)
    terms = clipped_surrogate(logps, logps.detach(), advantages[rows], mask[rows]).per_token
    loss = (terms * middle[rows].float()).sum() / mask.sum()
    direct = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, allow_unused=True)
                        if g is not None]).double().norm()
    assert out["diag/grad/middle/norm"] == pytest.approx(float(direct), rel=1e-5)


def naive_token_grad_norms(model, ids, attention, advantages, mask):
    """(B, C) |d l_t / d z_t| by autograd on each token's own logits (ratio 1: l = -A exp(logp - logp.detach()))."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention.long()).logits[:, P - 1:-1].double()
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b, c in mask.nonzero().tolist():
        z = logits[b, c].clone().requires_grad_()
        logp = torch.log_softmax(z, -1)[ids[b, P + c]]
        loss = -advantages[b] * torch.exp(logp - logp.detach())
        out[b, c] = torch.autograd.grad(loss, z)[0].norm()
    return out


def test_token_grad_proxy_is_the_mean_of_naive_per_token_gradient_norms(batch):
    """diag/grad/<subset>/token_grad_proxy = mean over the subset's diagnosed tokens of |A| |e_y - p|, checked against
    autograd on each token's logits; the matched controls have the size of their targets."""
    from tokenfocus.diagnostics import completion_logit_gradient_norm, matched_controls

    model, inputs, advantages, mask, logprobs_fn, params, ids, attention = batch

    def logit_norm_fn(rows):
        return completion_logit_gradient_norm(model, ids[rows], attention[rows], C)

    config = DiagnosticsConfig(project_dim=None, bootstrap=2, ratio=0.25)
    out = diagnose(config, inputs, advantages, mask, logprobs_fn, params, logit_norm_fn=logit_norm_fn)
    naive = naive_token_grad_norms(model, ids, attention, advantages, mask)
    informative = (torch.arange(B) < G)[:, None]
    subsets = {k: v & informative for k, v in anchor_explorer_subsets(inputs, "attention_entropy", 0.25).items()}
    subsets["full"] = mask & informative
    subsets.update(matched_controls(subsets, mask & informative, inputs, config))
    for name, subset in subsets.items():
        assert out[f"diag/grad/{name}/token_grad_proxy"] == pytest.approx(float(naive[subset].mean()), rel=1e-4), name
        assert out[f"diag/grad/{name}/n_tokens"] == float(subset.sum())
    for control in ("position_matched", "pred_entropy_matched"):
        for target in ("anchors", "explorers"):
            name = f"{target}_{control}"
            assert out[f"diag/grad/{name}/n_tokens"] == out[f"diag/grad/{target}/n_tokens"]
            assert not torch.equal(subsets[name], subsets[target])
            for key in ("cos_full", "split_half_volatility", "norm_per_token", "projection_share"):
                assert f"diag/grad/{name}/{key}" in out
    off = diagnose(DiagnosticsConfig(project_dim=None, bootstrap=0, matched=False, token_proxy=False), inputs,
                   advantages, mask, logprobs_fn, params, logit_norm_fn=logit_norm_fn)
    assert not any("matched" in k or "token_grad_proxy" in k for k in off)


def test_shared_prefix_tokens_cancel_in_the_full_gradient_and_are_counted_per_subset():
    """Each group shares its prompt and its first completion tokens (group 0: two, group 1: one). At ratio 1 the copies
    of a shared position have equal gradients and the group's advantages sum to zero, so removing them leaves
    g_full unchanged: full_unshared has cos 1 and the same norm. The shared fraction of the full set is 6 / 40."""
    model, _ = tiny()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (B, P + C), generator=g)
    ids[:G, :P + 2] = ids[0, :P + 2]
    ids[G:, :P + 1] = ids[G, :P + 1]
    mask = torch.ones(B, C, dtype=torch.bool)
    mask[:, -1] = torch.arange(B) % 2 == 0
    mask[1, -2:] = False
    attention = torch.cat([torch.ones(B, P, dtype=torch.bool), mask], 1)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.3, -0.3, 0.8, -0.8])
    signals = {name: torch.rand(B, C, generator=g) * mask for name in
               ("attention_entropy", "predictive_entropy", "attention_mass")}
    inputs = PolicyInputs(mask, signals, torch.arange(B) // G, advantages, step=0)

    def logprobs_fn(rows):
        logits = model(input_ids=ids[rows], attention_mask=attention[rows].long()).logits[:, P - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, ids[rows, P:, None]).squeeze(-1)

    params = [p for _, p in trainable_parameters(model)]
    config = DiagnosticsConfig(project_dim=None, bootstrap=0, ratio=0.25, unshared=True, matched=False)
    out = diagnose(config, inputs, advantages, mask, logprobs_fn, params, completion_ids=ids[:, P:])
    assert out["diag/grad/full/shared_prefix_fraction"] == pytest.approx((2 * G + G) / float(mask.sum()))
    assert out["diag/grad/full_unshared/cos_full"] == pytest.approx(1.0, abs=1e-6)
    assert out["diag/grad/full_unshared/norm"] == pytest.approx(out["diag/grad/full/norm"], rel=1e-4)
    assert out["diag/grad/full_unshared/n_tokens"] == float(mask.sum()) - 3 * G
    shares = sum(out[f"diag/grad/{s}_unshared/projection_share"] for s in ("anchors", "middle", "explorers"))
    assert shares == pytest.approx(out["diag/grad/full_unshared/projection_share"], abs=1e-6)
    for name in ("random", "anchors", "middle", "explorers"):
        assert 0.0 <= out[f"diag/grad/{name}/shared_prefix_fraction"] <= 1.0
        assert f"diag/grad/{name}_unshared/norm" in out
    with pytest.raises(ValueError, match="completion_ids"):
        diagnose(config, inputs, advantages, mask, logprobs_fn, params)
