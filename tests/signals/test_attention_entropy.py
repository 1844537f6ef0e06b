"""The attention_entropy signal: predicting-row alignment, normalization, head reductions, sink exclusion."""

from __future__ import annotations

import pytest
import torch

from helpers import causal, eager_entropies, rollout_batch, tiny
from tokenfocus.signals import compute_signals
from tokenfocus.signals.attention_entropy import normalized_entropy
from tokenfocus.types import AttentionRecord


def test_predicting_row_alignment_by_hand_from_eager_attentions():
    """Token t's value is row t-1 of the attention (row P-1, the last prompt token, for the first response token)."""
    model, _ = tiny(layers=2)
    batch = rollout_batch([5, 3], [4, 2], prompt_width=5, completion_width=4)
    ref = eager_entropies(model, batch.input_ids, batch.attention_mask)[1]  # (B, H, T) layer 1
    n = batch.attention_mask.long().cumsum(-1).double()
    normalized = torch.where(n[:, None] >= 2, ref / n.clamp_min(2).log()[:, None], torch.zeros_like(ref)).mean(1)
    got = compute_signals(model, batch, [{"name": "attention_entropy", "layers": [1]}])["attention_entropy"]
    for r in range(2):
        for t in range(9):
            expected = normalized[r, t - 1].item() if batch.response_mask[r, t] else 0.0
            assert abs(got[r, t].item() - expected) < 1e-5, (r, t)
    assert got[0, 5] == pytest.approx(normalized[0, 4].item(), abs=1e-5)  # first response token <- last prompt row
    self_rows = compute_signals(model, batch, [{"name": "attention_entropy", "layers": [1], "query_position": "self"}])
    assert self_rows["attention_entropy"][0, 5] == pytest.approx(normalized[0, 5].item(), abs=1e-5)


def test_attention_entropy_is_temperature_invariant_predictive_entropy_is_not():
    model, _ = tiny()
    batch = rollout_batch([5], [4], prompt_width=5, completion_width=4)
    cold = compute_signals(model, batch, ["attention_entropy", "predictive_entropy"], temperature=0.5)
    hot = compute_signals(model, batch, ["attention_entropy", "predictive_entropy"], temperature=2.0)
    assert torch.equal(cold["attention_entropy"], hot["attention_entropy"])
    assert (hot["predictive_entropy"] - cold["predictive_entropy"]).abs().max() > 1e-3


def test_normalized_entropy_lies_in_unit_interval_and_head_reductions_order():
    model, _ = tiny(layers=3)
    batch = rollout_batch([6, 6], [5, 5], prompt_width=6, completion_width=5)
    specs = [{"name": "attention_entropy", "layers": "all", "head_reduce": r, "label": r} for r in ("min", "mean", "max")]
    specs.append({"name": "attention_entropy", "layers": "all", "normalize": "none", "label": "nats"})
    v = compute_signals(model, batch, specs)
    m = batch.response_mask
    assert (v["max"][m] <= 1 + 1e-6).all() and (v["min"][m] >= 0).all()
    assert (v["min"][m] <= v["mean"][m] + 1e-6).all() and (v["mean"][m] <= v["max"][m] + 1e-6).all()
    assert (v["nats"][m] > v["mean"][m]).all()  # log n > 1 for n >= 3 keys


def test_sink_exclusion_closed_form_matches_explicit_renormalization():
    """H' of the distribution with the first key removed and the rest renormalized (RL_TOKEN_CREDIT §1.2 step 5)."""
    g = torch.Generator().manual_seed(2)
    b, h, s = 2, 3, 12
    logits = torch.randn(b, h, s, s, generator=g) * 2
    allowed = causal(s).expand(b, 1, s, s)
    p = torch.softmax(logits.double().masked_fill(~allowed, float("-inf")), -1)
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)
    n_keys = allowed[:, 0].sum(-1).float()
    record = AttentionRecord(entropy.float(), n_keys, p[..., 0].float())
    got = normalized_entropy(record, normalize="log_context", sink="exclude")
    rest = p[..., 1:] / p[..., 1:].sum(-1, keepdim=True).clamp_min(1e-300)
    explicit = -torch.where(rest > 0, rest * rest.log(), torch.zeros_like(rest)).sum(-1)
    n_rest = (n_keys - 1)[:, None, :].double()
    expected = torch.where(n_rest >= 2, explicit / n_rest.clamp_min(2).log(), torch.zeros_like(explicit))
    assert (got.double() - expected).abs().max() < 1e-5
    assert torch.isfinite(got).all()
