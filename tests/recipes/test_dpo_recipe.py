"""`tokenfocus dpo`: bad pairs and settings refused before any model loads (every row named by its line), rows too
long for max_length refused before the run directory is touched, and the run-directory contract of `train`
(a kill inside a checkpoint save resumes to the same metrics as an uninterrupted run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tokenfocus.checkpoints import FAULT_ENV, checkpoint_problems
from tokenfocus.config import ConfigError
from tokenfocus.config.dpo import build_dpo_config, load_dpo_config
from tokenfocus.io import latest_metrics
from tokenfocus.recipes.dpo import run_dpo

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"
STEPS = 4


def config_data(tmp_path, **changes):
    data = {"model": TINY, "pairs": {"task": {"name": "json_answers", "tiers": ["D1", "D2"]}, "n": 16, "seed": 0},
            "weights": {"mode": "diff", "barrier": 1.0},
            "trl": {"max_steps": STEPS, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "max_length": 128},
            "run": {"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 2}}
    data.update(changes)
    return data


def test_every_bad_row_is_named_by_its_line_before_any_model_loads(tmp_path):
    rows = [
        {"prompt": "1+1?", "chosen": "2", "rejected": "3"},
        {"prompt": "1+2?", "chosen": "3"},
        {"prompt": "1+3?", "chosen": " ", "rejected": "5"},
        {"prompt": "1+4?", "chosen": "5", "rejected": "5"},
        {"prompt": [{"role": "user", "content": "1+5?"}], "chosen": "6", "rejected": "7"},
        {"prompt": "1+6?", "chosen": "7", "rejected": "8", "rejected_weights": [1, -2]},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    with pytest.raises(ConfigError) as error:
        # a model spec that cannot load: the pairs are still all reported (validation loads nothing)
        build_dpo_config(config_data(tmp_path, pairs={"path": str(path)}, model="/nonexistent/model.gguf"))
    message = str(error.value)
    for expected in ("pairs.jsonl:2: missing ['rejected']", "pairs.jsonl:3: chosen is empty",
                     "pairs.jsonl:4: chosen and rejected are identical",
                     "pairs.jsonl:5: prompt, chosen and rejected mix plain text and chat",
                     "pairs.jsonl:6: rejected_weights: token weights must be finite and >= 0",
                     "pairs.jsonl:7: not valid JSON", "model:"):
        assert expected in message, (expected, message)
    assert "pairs.jsonl:1" not in message  # the good row is not blamed


def test_settings_the_token_level_loss_would_ignore_are_refused(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_dpo_config(config_data(tmp_path, trl={"precompute_ref_log_probs": True, "loss_type": ["ipo"],
                                                    "learning_rat": 1e-3, "output_dir": "x", "beta": 0}))
    message = str(error.value)
    assert "unknown DPOConfig field 'learning_rat'" in message and "learning_rate" in message
    assert "trl.output_dir: set it through run.dir" in message and "trl.beta must be > 0" in message
    with pytest.raises(ConfigError) as error:
        build_dpo_config(config_data(tmp_path, trl={"precompute_ref_log_probs": True, "loss_type": ["ipo"]}))
    assert "precompute_ref_log_probs" in str(error.value) and "loss_type ['ipo']" in str(error.value)
    # plain DPO (uniform, no barrier) is TRL's own path: TRL's loss types stay available
    build_dpo_config(config_data(tmp_path, weights={"mode": "uniform"}, trl={"loss_type": ["ipo"]}))
    with pytest.raises(ConfigError, match=r"rows at lines .* \(tokenfocus cdpo-weights writes them\)"):
        build_dpo_config(config_data(tmp_path, weights={"mode": "column"}))  # the command that exists
    with pytest.raises(ConfigError, match="either path .* or task"):
        build_dpo_config(config_data(tmp_path, pairs={"n": 4}))
    with pytest.raises(ConfigError, match="weights.mode must be one of"):
        build_dpo_config(config_data(tmp_path, weights={"mode": "digits"}))


def test_rows_longer_than_max_length_are_refused_before_the_run_directory_is_touched(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "1+1?", "chosen": "2", "rejected": "3"}, {"prompt": "x" * 300, "chosen": "2", "rejected": "3"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = build_dpo_config(config_data(tmp_path, pairs={"path": str(path)}, trl={"max_length": 64}))
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: prompt \+ chosen is 30\d tokens, over max_length 64"):
        run_dpo(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["dpo.yaml", "weighted.yaml", "barrier.yaml", "tab-po.yaml"])
def test_each_shipped_dpo_config_trains_two_steps_on_a_tiny_model(tmp_path, name):
    from pathlib import Path

    data = yaml.safe_load((Path(__file__).parents[2] / "configs" / "dpo" / name).read_text())
    data.update(model=TINY, run={"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 1})
    data["pairs"]["n"] = 8
    data["trl"].update(max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3)
    run_dir, trainer = run_dpo(build_dpo_config(data))
    rows = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(rows) == [1, 2] and all(abs(rows[s]["loss/train"]) < 1e3 for s in rows)
    assert ("loss/barrier" in rows[2]) == (data["weights"].get("barrier", 0) > 0)
    assert ("policy/weight_mean" in rows[2]) == trainer.tf_token_level
    assert (run_dir / "final" / "model.safetensors").is_file()


def _dpo(config, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "tokenfocus", "dpo", str(config), *extra], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, **(env or {})})


def test_a_kill_inside_a_checkpoint_save_resumes_to_the_same_metrics(tmp_path):
    reference_config = tmp_path / "reference.yaml"
    reference_config.write_text(yaml.safe_dump(config_data(tmp_path / "a")))
    done = _dpo(reference_config)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = latest_metrics(tmp_path / "a" / "run" / "metrics.jsonl")
    assert sorted(reference) == list(range(1, STEPS + 1))
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(config_data(tmp_path / "b")))
    killed = _dpo(config, env={FAULT_ENV: "checkpoint:optimizer@2"})  # inside the second save (step 4)
    assert killed.returncode == 137
    run_dir = tmp_path / "b" / "run"
    assert not (run_dir / "final").exists() and (run_dir / "checkpoint-2").is_dir()
    again = _dpo(config)
    assert again.returncode != 0 and "is not empty" in again.stderr and "--resume" in again.stderr
    resumed = _dpo(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = latest_metrics(run_dir / "metrics.jsonl")
    for step in range(1, STEPS + 1):
        for key in ("loss/train", "optim/grad_norm", "reward/margins", "loss/barrier"):
            assert final[step][key] == pytest.approx(reference[step][key], abs=1e-5), (step, key)
    assert (run_dir / "final" / "model.safetensors").is_file()
    assert all(checkpoint_problems(c) == [] for c in run_dir.glob("checkpoint-*"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["weights_resolved"]["mode"] == "diff" and saved["pairs_resolved"]["rows"] == 16
    assert load_dpo_config(config).rows == build_dpo_config(config_data(tmp_path / "b")).rows  # same pairs each time


def test_on_policy_pairs_are_sampled_once_from_the_reference_and_shared(tmp_path, monkeypatch):
    """Chosen = a correct response, rejected = an incorrect one of the same prompt 1-2 digits away (else the chosen
    perturbed); sampled when the first run starts, cached beside its directory, reused by the next run."""
    from types import SimpleNamespace

    import tokenfocus.rollout as rollout
    from tokenfocus.recipes.dpo import pairs_cache
    from tokenfocus.tasks import build_task

    gold = {e.prompt: e.solution for e in build_task({"name": "json_answers", "tiers": ["D2"]}).gold_examples(
        4, seed=0)}
    calls = []

    def fake_rollout(model, tokenizer, prompts, **options):
        calls.append(len(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            right = gold[prompt]
            off = right[:-2] + str((int(right[-2]) + 1) % 10) + right[-1]  # the answer's last digit changed
            near = off if i % 4 == 1 else "no idea"
            out.append(right if i % 4 == 0 else near)
        return SimpleNamespace(completions=out)

    monkeypatch.setattr(rollout, "generate_rollout", fake_rollout)
    data = config_data(tmp_path, pairs={"task": {"name": "json_answers", "tiers": ["D2"]}, "n": 4,
                                        "on_policy": {"samples": 4}})
    data["trl"]["max_steps"] = 1
    config = build_dpo_config(data)
    assert config.rows == [] and config.sampling["samples"] == 4
    run_dpo(config)
    cache = pairs_cache(config)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 4 and calls == [16]
    counts = json.loads(cache.with_name(cache.name + ".json").read_text())
    assert counts["sampled"] == 4 and counts["perturbed"] == 0 and counts["pass_rate"] == 0.25
    for row in rows:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen == gold[row["prompt"][0]["content"]] and chosen != rejected
        assert rejected[:-2] == chosen[:-2]  # the sampled near miss, not a perturbation
    data["run"]["dir"] = str(tmp_path / "second")
    run_dpo(build_dpo_config(data))
    assert calls == [16]  # the second run read the cache
    with pytest.raises(ConfigError, match="sampled pairs carry none"):
        build_dpo_config({**data, "weights": {"mode": "column"}})
