"""Fault injection: a tiny training run killed at many instants -- at random times and at every step of a
checkpoint save -- always resumes (or, killed before its first checkpoint, restarts) to the same final metrics
as an uninterrupted run, with a whole final model and a metrics file of complete JSON lines."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tokenfocus.checkpoints import FAULT_ENV, checkpoint_problems, latest_complete_checkpoint
from tokenfocus.io import latest_metrics

TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"
STEPS = 8
COMPARED = ("loss/train", "reward/mean", "optim/grad_norm", "policy/weight_max", "signal/attention_entropy/mean")
SAVE_POINTS = ("checkpoint:optimizer", "checkpoint:manifest", "checkpoint:rename", "checkpoint:rotate")
RANDOM_KILLS = 6


def write_config(path: Path, run_dir: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "model": TINY, "task": {"name": "arithmetic", "tiers": ["D1"], "n_train": 32}, "method": "low2high",
        "reward": {"kind": "digits"},
        "trl": {"max_steps": STEPS, "num_generations": 4, "per_device_train_batch_size": 8,
                "max_completion_length": 16, "learning_rate": 1e-3},
        "run": {"dir": str(run_dir), "seed": 0, "save_steps": 2, "save_total_limit": 2},
    }))
    return path


def train(config: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tokenfocus", "train", str(config), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(config: Path, run_dir: Path) -> None:
    """Continue a killed run as a user would: --resume when a complete checkpoint exists, else start over."""
    chosen, _ = latest_complete_checkpoint(run_dir)
    flag = "--resume" if chosen is not None else "--overwrite"
    process = train(config, flag)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, (flag, err[-2000:])


def assert_same_as_reference(run_dir: Path, reference: dict) -> None:
    raw = (run_dir / "metrics.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    for line in raw.decode().splitlines():
        json.loads(line)
    final = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(final) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        for key in COMPARED:
            assert final[step][key] == pytest.approx(reference[step][key], abs=1e-6), (step, key)
    assert (run_dir / "final" / "config.json").is_file() and (run_dir / "final" / "model.safetensors").is_file()
    for checkpoint in run_dir.glob("checkpoint-*"):
        assert checkpoint_problems(checkpoint) == [], checkpoint


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "config.yaml", root / "run")
    started = time.time()
    process = train(config)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return latest_metrics(root / "run" / "metrics.jsonl"), time.time() - started


@pytest.mark.parametrize("point", [f"{p}@{k}" for p in SAVE_POINTS for k in (1, 3)])
def test_a_kill_inside_a_checkpoint_save_resumes_to_the_same_metrics(tmp_path, reference, point):
    metrics, _ = reference
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", run_dir)
    process = train(config, env={FAULT_ENV: point})
    _, err = process.communicate(timeout=300)
    assert process.returncode == 137, f"the fault point {point} was never reached: {err[-1500:]}"
    finish(config, run_dir)
    assert_same_as_reference(run_dir, metrics)


@pytest.mark.parametrize("kill", range(RANDOM_KILLS))
def test_a_kill_at_a_random_instant_resumes_to_the_same_metrics(tmp_path, reference, kill):
    metrics, seconds = reference
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", run_dir)
    delay = random.Random(kill).uniform(0.3 * seconds, 1.0 * seconds)
    process = train(config)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    finish(config, run_dir)
    assert_same_as_reference(run_dir, metrics)
