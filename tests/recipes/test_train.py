"""`tokenfocus train`: config validation, a run that loses nothing (SIGKILL / SIGTERM + resume), policies in TRL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tokenfocus import models
from tokenfocus.config import ConfigError, load_train_config
from tokenfocus.io import latest_metrics
from tokenfocus.recipes.train import run_train

TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"
COMPARED = ("loss/train", "reward/mean", "optim/grad_norm", "completion/mean_length", "policy/weight_max",
            "signal/attention_entropy/mean", "loss/clip_ratio_region")


def write_config(path: Path, run_dir: Path, method="low2high", max_steps=30, save_steps=5, **trl) -> Path:
    config = {
        "model": TINY,
        "task": {"name": "arithmetic", "tiers": ["D1", "D2"], "n_train": 64},
        "method": method,
        "reward": {"kind": "digits"},
        "trl": {"max_steps": max_steps, "num_generations": 4, "per_device_train_batch_size": 8,
                "max_completion_length": 24, "learning_rate": 1e-3, **trl},
        "run": {"dir": str(run_dir), "seed": 0, "save_steps": save_steps},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def train_process(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tokenfocus", "train", str(config), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path: Path, n: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and sum(1 for _ in open(path)) >= n:
            return
        assert process.poll() is None, f"training ended before {n} steps were logged: {process.stderr.read()[-1500:]}"
        time.sleep(0.005)
    raise TimeoutError(f"{path} did not reach {n} lines")


def assert_lines_complete(path: Path) -> None:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "metrics.jsonl ends in a partial line"
    for line in raw.decode().splitlines():
        json.loads(line)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the later metrics of every interrupted-and-resumed run must equal these."""
    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "config.yaml", root / "run")
    result = subprocess.run([sys.executable, "-m", "tokenfocus", "train", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return latest_metrics(root / "run" / "metrics.jsonl")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, reference, how):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", run_dir)
    process = train_process(config)
    wait_for_lines(run_dir / "metrics.jsonl", 12, process)
    process.send_signal(getattr(signal, how))
    process.wait(timeout=120)
    assert process.returncode == (-9 if how == "SIGKILL" else 0), process.stderr.read()[-1500:]
    assert_lines_complete(run_dir / "metrics.jsonl")
    interrupted = latest_metrics(run_dir / "metrics.jsonl")
    last_step = max(interrupted)
    assert 12 <= last_step < 30, "the run was not interrupted mid-way"
    saved = sorted(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*"))
    if how == "SIGTERM":
        assert saved[-1] == last_step  # graceful: a checkpoint at the step where it stopped
    resumed = subprocess.run([sys.executable, "-m", "tokenfocus", "train", str(config), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_lines_complete(run_dir / "metrics.jsonl")
    final = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(final) == sorted(reference) == list(range(1, 31))
    for step in range(saved[-1] + 1, 31):
        for key in COMPARED:
            assert final[step][key] == pytest.approx(reference[step][key], abs=1e-6), (step, key)


def test_existing_run_is_never_overwritten_and_resume_needs_a_checkpoint(tmp_path):
    config = load_train_config(write_config(tmp_path / "c.yaml", tmp_path / "run", max_steps=2, save_steps=1))
    with pytest.raises(ValueError, match="no complete checkpoint-N"):
        run_train(config, resume=True)
    run_train(config)
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and (tmp_path / "run" / "final").is_dir()
    with pytest.raises(ValueError, match="pass --resume"):
        run_train(config)


def test_8020_selects_on_the_current_policy_entropy_inside_trl(tmp_path):
    path = write_config(tmp_path / "c.yaml", tmp_path / "run", method="8020", max_steps=2, save_steps=2)
    data = yaml.safe_load(path.read_text())
    data["signal_source"] = "current"
    path.write_text(yaml.safe_dump(data))
    run_train(load_train_config(path))
    rows = latest_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows[2]["policy/kept_fraction"] == pytest.approx(0.2, abs=0.05)
    assert "signal/predictive_entropy/selected/mean" in rows[2]
    assert rows[2]["signal/predictive_entropy/selected/mean"] > rows[2]["signal/predictive_entropy/unselected/mean"]


def _run(tmp_path: Path, name: str, **changes) -> dict[int, dict]:
    path = write_config(tmp_path / f"{name}.yaml", tmp_path / name, max_steps=3, save_steps=3)
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, sub = key.partition(".")
        if sub:
            data[section][sub] = value
        else:
            data[section] = value
    path.write_text(yaml.safe_dump(data))
    run_train(load_train_config(path))
    return latest_metrics(tmp_path / name / "metrics.jsonl")


def test_fused_signal_pass_equals_the_separate_rollout_pass(tmp_path):
    """With one generation batch per optimizer step, the training forward is a rollout-policy forward: signals
    captured inside it give the same weights and losses as a separate no-grad pass."""
    fused = _run(tmp_path, "fused", signal_pass="fused")
    separate = _run(tmp_path, "separate", signal_pass="separate")
    for step in (1, 2, 3):
        for key in ("loss/train", "optim/grad_norm", "policy/weight_max", "policy/weight_std",
                    "signal/attention_entropy/mean"):
            assert fused[step][key] == pytest.approx(separate[step][key], rel=1e-4, abs=1e-6), (step, key)


def test_prompt_attention_mass_as_a_training_signal_fused_equals_separate(tmp_path):
    """A policy on attention mass (prompt keys marked inside TRL's own forward): the fused pass and the
    separate pass mark the same keys and select the same tokens."""
    method = {"signals": [{"name": "attention_mass", "keys": "prompt"}],
              "policy": {"name": "quantile", "signal": "attention_mass", "ratio": 0.2, "side": "high"},
              "loss": {"preset": "dapo"}}
    fused = _run(tmp_path, "mass-fused", signal_pass="fused", method=method)
    separate = _run(tmp_path, "mass-separate", signal_pass="separate", method=method)
    for step in (1, 2, 3):
        assert 0.0 < fused[step]["signal/attention_mass/mean"] <= 1.0
        for key in ("loss/train", "optim/grad_norm", "signal/attention_mass/mean"):
            assert fused[step][key] == pytest.approx(separate[step][key], rel=1e-4, abs=1e-6), (step, key)


def test_marked_attention_mass_on_a_task_without_marks_is_refused(tmp_path):
    """keys='marked' reads the prompts' evidence marks (tests/integrations/test_trl_counterfactual.py trains with
    them on the facts task); arithmetic marks none, so the config is refused before anything loads."""
    method = {"signals": [{"name": "attention_mass", "keys": "marked"}],
              "policy": {"name": "quantile", "signal": "attention_mass", "ratio": 0.2, "side": "high"},
              "loss": {"preset": "dapo"}}
    with pytest.raises(ValueError, match="signals \\['attention_mass'\\] need the prompt's 'evidence' tokens marked, "
                                         "but task 'arithmetic' marks no roles"):
        _run(tmp_path, "marked", method=method)


@pytest.mark.parametrize("steps_per_generation", [2, 4])
def test_full_policy_matches_plain_trl_dapo_with_gradient_accumulation(tmp_path, steps_per_generation):
    """Uniform weights + the dapo preset reproduce TRL's own training (loss and gradient norm per step),
    including the num_items_in_batch rescaling under gradient accumulation (2 micro-batches per step), also
    when one generation batch feeds two optimizer steps (steps_per_generation 4)."""
    from trl import GRPOConfig, GRPOTrainer

    from tokenfocus.models import load_model
    from tokenfocus.recipes.train import build_dataset

    ours = _run(tmp_path, "ours", method="dapo", **{"trl.gradient_accumulation_steps": 2,
                                                    "trl.per_device_train_batch_size": 4,
                                                    "trl.steps_per_generation": steps_per_generation})
    config = load_train_config(tmp_path / "ours.yaml")
    model, tok = load_model(TINY)
    from tokenfocus.tasks.rewards import DigitReward

    args = GRPOConfig(**{**config.trl_args(), "output_dir": str(tmp_path / "plain"), "loss_type": "dapo",
                         "epsilon_high": 0.28})
    plain = GRPOTrainer(model=model, processing_class=tok, reward_funcs=[DigitReward()], args=args,
                        train_dataset=build_dataset(config))
    plain.train()
    logged = [row for row in plain.state.log_history if "loss" in row]
    for row in logged:
        step = row["step"]
        assert ours[step]["loss/train"] == pytest.approx(row["loss"], abs=1e-6), step
        assert ours[step]["optim/grad_norm"] == pytest.approx(row["grad_norm"], rel=1e-4), step
    assert len(logged) == 3


def test_optional_reference_model_and_kl(tmp_path):
    rows = _run(tmp_path, "kl", method={"policy": {"name": "full"}, "loss": {"preset": "dapo", "beta": 0.04}})
    assert all("loss/kl" in rows[step] for step in (1, 2, 3))
    assert rows[3]["loss/kl"] > 0  # the policy has moved away from the reference after two updates
