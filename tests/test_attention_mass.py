"""Attention mass on marked keys (evidence / prompt mass) against explicit eager attention probabilities."""

from __future__ import annotations

import pytest
import torch

from helpers import padded_batch, tiny
from test_signals import rollout_batch
from tokenfocus.capture.entropy_attention import entropy_chunked, key_mass, record_attention_entropy
from tokenfocus.signals import compute_signals
from tokenfocus.types import prompt_keys


def eager_probabilities(model, ids, mask):
    """Per-layer (B, H, T, T) attention probabilities from the eager implementation (the reference)."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=mask.long(), position_ids=position_ids, output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    return [a.double() for a in out.attentions]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("backend", ["lse", "chunked"])
def test_recorded_key_mass_equals_eager_sum_over_marked_columns(side, backend):
    model, _ = tiny(layers=2, hidden=48, heads=6, kv_heads=2)
    ids, mask = padded_batch([11, 6, 3, 11], 11, side=side, seed=4)
    g = torch.Generator().manual_seed(1)
    marks = (torch.rand(ids.shape, generator=g) < 0.4) & mask
    reference = eager_probabilities(model, ids, mask)
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    with record_attention_entropy(model, "all", backend=backend) as recorder, torch.no_grad():
        recorder.key_marks = marks  # two forwards of two rows each read consecutive rows of the marks
        for rows in (slice(0, 2), slice(2, 4)):
            model(input_ids=ids[rows], attention_mask=mask[rows].long(), position_ids=positions[rows])
    for layer, record in recorder.result().items():
        expected = (reference[layer] * marks[:, None, None, :].double()).sum(-1)  # (B, H, T)
        real_rows = mask[:, None, :].expand_as(expected)  # padding query rows carry no meaning
        assert (record.key_mass.double() - expected)[real_rows].abs().max() < 1e-5, layer
        assert record.key_mass.min() >= 0 and record.key_mass.max() <= 1 + 1e-5


def test_all_keys_marked_gives_mass_one_and_none_marked_gives_zero():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    _, lse = entropy_chunked(q, k, None, 0.35)
    ones = key_mass(q, k, None, 0.35, lse, torch.ones(2, 9, dtype=torch.bool))
    assert (ones - 1).abs().max() < 1e-5
    zeros = key_mass(q, k, None, 0.35, lse, torch.zeros(2, 9, dtype=torch.bool))
    assert zeros.abs().max() == 0
    # soft-capped scores: the mass follows the capped distribution, summing to one over a partition
    _, lse_cap = entropy_chunked(q, k, None, 0.35, softcap=2.0)
    first = torch.zeros(2, 9, dtype=torch.bool)
    first[:, :4] = True
    total = key_mass(q, k, None, 0.35, lse_cap, first, softcap=2.0) + key_mass(q, k, None, 0.35, lse_cap, ~first,
                                                                                 softcap=2.0)
    assert (total - 1).abs().max() < 1e-5


def test_prompt_mass_signal_reads_the_predicting_row_and_matches_eager():
    """Response token t gets row t-1's attention on the prompt keys; the first response token reads the last prompt row."""
    model, _ = tiny(layers=2)
    batch = rollout_batch([5, 3], [4, 2], prompt_width=5, completion_width=4)
    probs = eager_probabilities(model, batch.input_ids, batch.attention_mask)[1]
    prompt = prompt_keys(batch)
    assert prompt.sum(-1).tolist() == [5, 3]
    rows = (probs * prompt[:, None, None, :].double()).sum(-1).mean(1)  # (B, T) head mean
    got = compute_signals(model, batch, [{"name": "attention_mass", "layers": [1]}])["attention_mass"]
    for r in range(2):
        for t in range(9):
            expected = rows[r, t - 1].item() if batch.response_mask[r, t] else 0.0
            assert abs(got[r, t].item() - expected) < 1e-5, (r, t)
    assert got[0, 5] == pytest.approx(1.0, abs=1e-5)  # the last prompt row sees only prompt keys


def test_sink_excluded_mass_renormalizes_without_the_first_key():
    model, _ = tiny(layers=2)
    batch = rollout_batch([5, 4], [4, 3], prompt_width=5, completion_width=4, seed=2)
    probs = eager_probabilities(model, batch.input_ids, batch.attention_mask)[1]  # (B, H, T, T)
    first = batch.attention_mask.to(torch.uint8).argmax(-1)
    without = probs.clone()
    for r in range(2):
        without[r, :, :, first[r]] = 0
    without = without / without.sum(-1, keepdim=True).clamp_min(1e-12)
    rows = (without * prompt_keys(batch)[:, None, None, :].double()).sum(-1).mean(1)
    got = compute_signals(model, batch, [{"name": "attention_mass", "layers": [1], "sink": "exclude"}])["attention_mass"]
    for r in range(2):
        for t in range(9):
            if batch.response_mask[r, t]:
                assert abs(got[r, t].item() - rows[r, t - 1].item()) < 1e-5, (r, t)


def test_marked_keys_come_from_the_caller_and_bad_marks_are_refused():
    model, _ = tiny(layers=2)
    batch = rollout_batch([5, 3], [4, 2], prompt_width=5, completion_width=4)
    marks = torch.zeros_like(batch.attention_mask)
    marks[:, 3:5] = True  # the last two prompt tokens: an "evidence span"
    spec = {"name": "attention_mass", "layers": [1], "keys": "marked"}
    got = compute_signals(model, batch, [spec], key_marks=marks)["attention_mass"]
    prompt = compute_signals(model, batch, [{"name": "attention_mass", "layers": [1]}])["attention_mass"]
    assert (got <= prompt + 1e-6).all() and got[batch.response_mask].min() > 0
    with pytest.raises(ValueError, match="key_marks"):
        compute_signals(model, batch, [spec])
    with pytest.raises(ValueError, match="bool tensor of shape"):
        compute_signals(model, batch, [spec], key_marks=marks[:, :3])
    with pytest.raises(ValueError, match="one set of marked keys"):
        compute_signals(model, batch, [spec, {"name": "attention_mass", "label": "p"}], key_marks=marks)
