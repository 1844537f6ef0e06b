"""sink_score signal: each response token's attention received as a key, from the recorder's column sums."""

from __future__ import annotations

import pytest
import torch

from helpers import eager_probabilities, rollout_batch, tiny
from tokenfocus.signals import SIGNALS, attention_plan, compute_signals, parse_signal_specs
from tokenfocus.signals.sink_score import queries_per_key


def test_sink_score_signal_equals_eager_column_sums():
    """On a TRL-layout batch (left-padded prompts, right-padded completions) the signal is, at each response
    token t, mean over layers and heads of sum_{real i >= t} p_it / n_queries(t), at t's own index."""
    model, _ = tiny()
    batch = rollout_batch([4, 2, 5], [3, 5, 0], 5, 5, seed=1)
    values = compute_signals(model, batch, [{"name": "sink_score", "layers": "all"}])["sink_score"]
    probs = eager_probabilities(model, batch.input_ids, batch.attention_mask)
    mask = batch.attention_mask
    counts = queries_per_key(mask)
    per_layer = [(p * mask[:, None, :, None]).sum(2).mean(1) / counts.clamp_min(1) for p in probs]
    expected = torch.stack(per_layer).mean(0)
    expected = torch.where(batch.response_mask, expected, torch.zeros_like(expected)).float()
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-4)
    assert (values[2] == 0).all()  # an empty completion scores nothing
    assert (values[batch.response_mask] > 0).all()


def test_sink_score_plan_records_column_sums_only_when_asked():
    specs = parse_signal_specs(["attention_entropy"])
    assert not attention_plan(specs, 2).record_received
    assert attention_plan(parse_signal_specs(["attention_entropy", "sink_score"]), 2).record_received
    assert SIGNALS["sink_score"].cost == "forward+attention"


def test_sink_score_refuses_a_capture_without_column_sums():
    from tokenfocus.types import AttentionRecord, ForwardCapture
    batch = rollout_batch([2], [2], 2, 2)
    record = AttentionRecord(torch.zeros(1, 2, 4), torch.ones(1, 4))
    capture = ForwardCapture(batch=batch, num_layers=2, attention={1: record})
    with pytest.raises(ValueError, match="record_received=True"):
        SIGNALS["sink_score"].fn(capture)
