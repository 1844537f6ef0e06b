"""compute_signals on tiny random llama models: padding invariance, batch mates, masking, registry errors."""

from __future__ import annotations

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.signals import SIGNALS, compute_signals, parse_signal_spec
from tokenfocus.types import TokenBatch


def test_left_padding_does_not_change_values():
    """The same prompt+response with 0 and with 7 left-pad tokens gives identical values (valid-key counts)."""
    model, _ = tiny()
    base = rollout_batch([6], [5], prompt_width=6, completion_width=5, seed=3)
    pad = 7
    padded = TokenBatch(
        torch.cat([torch.full((1, pad), 2), base.input_ids], 1),
        torch.cat([torch.zeros(1, pad, dtype=torch.bool), base.attention_mask], 1),
        torch.cat([torch.zeros(1, pad, dtype=torch.bool), base.response_mask], 1),
    )
    specs = ["attention_entropy", "predictive_entropy", "logprobs", {"name": "position", "kind": "absolute"}]
    a = compute_signals(model, base, specs)
    b = compute_signals(model, padded, specs)
    for name in a:
        assert (a[name] - b[name][:, pad:]).abs().max() < 1e-5, name
        assert b[name][:, :pad].abs().max() == 0


def test_right_padding_and_batch_mates_do_not_change_values():
    model, _ = tiny()
    batch = rollout_batch([6, 4, 2], [5, 1, 3], prompt_width=6, completion_width=5, seed=4)
    specs = ["attention_entropy", "predictive_entropy", "logprobs"]
    together = compute_signals(model, batch, specs)
    for r in range(3):
        alone = compute_signals(model, batch.rows(r, r + 1), specs)
        for name in specs:
            assert (alone[name][0] - together[name][r]).abs().max() < 1e-5


def test_all_masked_rows_and_empty_completions_give_zeros_not_nan(tmp_path):
    model, _ = tiny()
    for name, seed in (("pos", 1), ("neg", 2)):  # critical_token reads two saved models (cDPO's)
        tiny(seed=seed)[0].save_pretrained(tmp_path / name)
    critical = {"name": "critical_token", "positive": str(tmp_path / "pos"), "negative": str(tmp_path / "neg")}
    batch = rollout_batch([5, 3, 4], [3, 0, 2], prompt_width=5, completion_width=3)
    fully_padded = TokenBatch(
        torch.cat([batch.input_ids, torch.full((1, 8), 2)]),
        torch.cat([batch.attention_mask, torch.zeros(1, 8, dtype=torch.bool)]),
        torch.cat([batch.response_mask, torch.zeros(1, 8, dtype=torch.bool)]),
    )
    specs = [critical if name == "critical_token" else name for name in SIGNALS]
    specs += [{"name": "attention_entropy", "sink": "exclude", "label": "ae_nosink"},
                             {"name": "attention_entropy", "head_reduce": "max", "layers": "all", "label": "ae_max"}]
    evidence = torch.zeros_like(fully_padded.attention_mask)
    evidence[:, 3] = True  # a prompt column (padding in some rows: the counterfactual must still give zeros there)
    values = compute_signals(model, fully_padded, specs, marks={"evidence": evidence & ~fully_padded.response_mask},
                             teacher=tiny(seed=3)[0])
    assert {"context_dependency", "token_attribution", "critical_token", "teacher_kl"} <= set(values)
    for name, v in values.items():
        assert torch.isfinite(v).all(), name
        assert v[1].abs().max() == 0 and v[3].abs().max() == 0, name
        assert v[~fully_padded.response_mask].abs().max() == 0, name


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="Registered: .*attention_entropy"):
        parse_signal_spec("attention_entropi")
    with pytest.raises(ValueError, match="unknown option.*Valid options: layers"):
        parse_signal_spec({"name": "attention_entropy", "layer": 3})
    model, _ = tiny()
    batch = rollout_batch([3], [2], prompt_width=3, completion_width=2)
    with pytest.raises(ValueError, match="unique"):
        compute_signals(model, batch, ["position", "position"])
    with pytest.raises(ValueError, match="head_reduce"):
        compute_signals(model, batch, [{"name": "attention_entropy", "head_reduce": "sum"}])
