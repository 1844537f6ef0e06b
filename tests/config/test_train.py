"""Train config validation (config/train.py): every problem listed at once, before any model loads."""

from __future__ import annotations

import pytest
import yaml

from tokenfocus import models
from tokenfocus.config import ConfigError, load_train_config

TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"


def test_config_problems_are_listed_together_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "model": TINY,
        "task": {"name": "gsm8k", "path": str(tmp_path / "missing.jsonl"), "n_train": "many"},
        "method": "anchors2O",
        "reward": {"timeout_s": -1},
        "trl": {"max_step": 3, "learning_rate": "fast", "loss_type": "dapo"},
        "run": {"dir": str(tmp_path / "r"), "save_steps": 0, "sed": 1},
    }))
    with pytest.raises(ConfigError) as error:
        load_train_config(bad)
    message = str(error.value)
    for expected in (
        "task.n_train: expected int, got str", "dataset file", "not found", "anchors2O", "reward.timeout_s must be > 0",
        "unknown GRPOConfig field 'max_step' (did you mean 'max_steps'?)", "trl.loss_type: set it through method",
        "run.save_steps must be >= 1", "run: unknown key 'sed' (did you mean 'seed'?)",
    ):
        assert expected in message, (expected, message)
    dup = tmp_path / "dup.yaml"
    dup.write_text("model: a\nmodel: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'model' at line 2"):
        load_train_config(dup)
    with pytest.raises(ConfigError, match="top level: unknown key 'modle' \\(did you mean 'model'\\?\\)"):
        bad.write_text("modle: x\n")
        load_train_config(bad)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "m.yaml").write_text("policy: {name: full}\nloss: {preset: grpo}\n")
    path = tmp_path / "configs" / "c.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "task": {"name": "gsm8k", "path": "../data/train.jsonl"},
                                    "method": "m.yaml", "run": {"dir": str(tmp_path / "run")}}))
    config = load_train_config(path)
    assert config.task.options.path == str(tmp_path / "configs" / "../data/train.jsonl")
    assert config.task.train_examples(1)[0].answer == "2"
    assert config.method.loss.norm == "seq_mean_token_mean"
    assert config.to_dict()["task"]["path"] == config.task.options.path  # config.yaml records the resolved path


def test_overrides_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "method": "anchors20"}))
    config = load_train_config(path, {"run.dir": str(tmp_path / "x"), "trl.max_steps": 3})
    assert config.run_dir == tmp_path / "x" and config.trl_args()["max_steps"] == 3
    assert config.run.save_steps == 10 and config.trl_args()["save_steps"] == 10  # RunConfig's one default
    assert config.task.name == "arithmetic" and config.reward.kind == "answer"
