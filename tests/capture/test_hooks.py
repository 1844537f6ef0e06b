"""Scoped forward hooks on canonical points: values equal the model's hidden states, hooks removed on exit."""

from __future__ import annotations

import pytest
import torch

from helpers import padded_batch, tiny
from tokenfocus.capture import capture


def test_capture_hooks_removed_on_exit_and_exception():
    model, _ = tiny()
    points = ["embed", "layers.0.attn", "layers.1.mlp", "layers.1.resid_post", "final_norm"]
    ids, mask = padded_batch([5], 5)

    def hook_count():
        return sum(len(m._forward_hooks) for m in model.modules())

    with torch.no_grad():  # transformers installs its own output-recording hooks on first use; count after that
        model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    baseline = hook_count()
    with torch.no_grad(), capture(model, {p: None for p in points} | {"layers.0.resid_post": lambda x: x.norm(dim=-1)}) as cap:
        assert hook_count() == baseline + 6
        out = model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    assert hook_count() == baseline
    # hidden_states = (embeddings, output of layer 0, final norm of layer 1's output); the reducer ran in the hook.
    torch.testing.assert_close(cap["embed"][0], out.hidden_states[0])
    torch.testing.assert_close(cap["final_norm"][0], out.hidden_states[2])
    torch.testing.assert_close(model.model.norm(cap["layers.1.resid_post"][0]), out.hidden_states[2])
    torch.testing.assert_close(cap["layers.0.resid_post"][0], out.hidden_states[1].norm(dim=-1))
    with pytest.raises(ValueError, match="boom"):
        with capture(model, {"embed": None}):
            assert hook_count() == baseline + 1
            raise ValueError("boom")
    assert hook_count() == baseline
    with pytest.raises(ValueError, match="Valid"):
        with capture(model, {"layers.0.banana": None}):
            pass
    with pytest.raises(ValueError, match="2 layers"):
        with capture(model, {"layers.5.attn": None}):
            pass
