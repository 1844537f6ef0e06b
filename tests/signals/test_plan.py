"""attention_plan: what one scoring forward records for a set of specs, and the marks it hands the recorder."""

from __future__ import annotations

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.signals import AttentionPlan, attention_plan, parse_signal_specs
from tokenfocus.types import prompt_keys


def test_plan_is_the_union_of_what_the_specs_ask():
    specs = parse_signal_specs([
        {"name": "attention_entropy", "layers": [1]},
        {"name": "attention_entropy", "layers": "middle", "sink": "exclude", "label": "b"},
        {"name": "attention_mass", "layers": [-1], "backend": "chunked", "label": "m"},
        "predictive_entropy",
    ])
    plan = attention_plan(specs, num_layers=4)
    assert plan == AttentionPlan(layers=(1, 2, 3), record_sink=True, backend="chunked", precision="fp32",
                                 keys="prompt")


def test_plan_without_attention_signals_records_nothing():
    plan = attention_plan(parse_signal_specs(["logprobs", "position"]), num_layers=2)
    assert plan == AttentionPlan(layers=(), record_sink=False, backend="lse", precision="model", keys=None)
    model, _ = tiny()
    with plan.recorder(model) as recorder:
        assert recorder is None
    assert plan.key_marks(rollout_batch([3], [2], 3, 2)) is None


def test_plan_refuses_two_key_sets_before_any_forward():
    with pytest.raises(ValueError, match="one scoring pass records one set of marked keys"):
        attention_plan(parse_signal_specs([{"name": "attention_mass", "keys": "marked"},
                                           {"name": "attention_mass", "label": "p"}]), num_layers=2)


def test_key_marks_and_recorder_follow_the_plan():
    """keys='prompt' marks the real prompt tokens; keys='marked' takes the caller's marks on real tokens only."""
    model, _ = tiny()
    batch = rollout_batch([3, 2], [2, 1], prompt_width=3, completion_width=2)
    prompt = attention_plan(parse_signal_specs([{"name": "attention_mass", "layers": [0]}]), num_layers=2)
    assert torch.equal(prompt.key_marks(batch), prompt_keys(batch))
    marked = attention_plan(parse_signal_specs([{"name": "attention_mass", "keys": "marked"}]), num_layers=2)
    given = torch.ones_like(batch.attention_mask)
    assert torch.equal(marked.key_marks(batch, given), batch.attention_mask)
    with pytest.raises(ValueError, match="needs compute_signals"):
        marked.key_marks(batch)
    with torch.no_grad(), prompt.recorder(model, key_marks=prompt.key_marks(batch)) as recorder:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long())
    assert sorted(recorder.result()) == [0] and recorder.result()[0].key_mass is not None
