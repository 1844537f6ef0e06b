"""The attention_mass signal (prompt / marked-key mass) against explicit eager attention probabilities."""

from __future__ import annotations

import pytest
import torch

from helpers import eager_probabilities, rollout_batch, tiny
from tokenfocus.signals import compute_signals
from tokenfocus.types import prompt_keys


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
