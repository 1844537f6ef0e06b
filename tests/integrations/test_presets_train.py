"""Every method preset and every train config in configs/train trains: 2 steps on a tiny random llama, on a task
that marks the prompt roles its signals need; finite losses and the policy's statistics logged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from helpers import GSM8K_DIR, tiny, tiny_grpo_args
from tokenfocus.config import load_train_config, method_preset, method_presets
from tokenfocus.integrations.prompt_marks import SPANS_COLUMN
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
from tokenfocus.recipes.train import run_train
from tokenfocus.signals import required_roles
from tokenfocus.tasks import build_task
from tokenfocus.tasks.spans import encode_spans

CONFIGS = Path(__file__).parents[2] / "configs" / "train"
TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"


def task_for(roles) -> str:
    return "steps" if "steps" in roles else "facts" if roles else "arithmetic"


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


@pytest.mark.parametrize("name", method_presets())
def test_every_method_preset_trains(tmp_path, name):
    method = method_preset(name)
    task = build_task({"name": task_for(required_roles(method.signals)), "n_train": 16})
    rows = [{"prompt": [{"role": "user", "content": e.prompt}], SPANS_COLUMN: encode_spans(e.spans)}
            for e in task.train_examples()]
    model, tok = tiny()
    model.train()
    args = tiny_grpo_args(tmp_path, max_completion_length=6, max_steps=2)
    trainer = TokenFocusGRPOTrainer(model=model, processing_class=tok, reward_funcs=[length_reward], args=args,
                                    train_dataset=Dataset.from_list(rows), signals=method.signals,
                                    policy=method.policy, loss=method.loss)
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logs) == 2
    for row in logs:
        assert math.isfinite(row["loss"]), (name, row)
        assert 0 <= row["policy/kept_fraction"] <= 1 and math.isfinite(row["policy/weight_mean"]), (name, row)
        for signal in method.signals:
            assert math.isfinite(row[f"signal/{signal.label}/mean"]), (name, signal.label)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_train_config_trains_through_the_recipe(tmp_path, path):
    data = yaml.safe_load(path.read_text())
    data["model"] = TINY
    data["task"] = {**data["task"], "n_train": 16}
    if data["task"]["name"] == "gsm8k":  # the shipped config reads the hub; tests read the local copy
        data["task"]["path"] = str(GSM8K_DIR / "train.jsonl")
    data["reward"] = {"kind": "digits"}
    data["trl"] = {**data["trl"], "max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4,
                   "max_completion_length": 6}
    data["run"] = {"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 1}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    run_dir, _ = run_train(load_train_config(config_path), log=lambda *a: None)
    assert (run_dir / "final").is_dir()
    lines = [yaml.safe_load(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in lines if "loss/train" in row]
    assert len(steps) == 2 and all(math.isfinite(row["loss/train"]) for row in steps)
