"""The SFT warm-up's data (recipes/warmup.py): gold solutions in TRL's conversational format."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.config import WarmupConfig
from tokenfocus.recipes.warmup import gold_rows
from tokenfocus.tasks import AnswerReward, Example, Task, build_task, generate_problems


class NoGold(Task):
    """A task without gold solutions (the base class's gold_examples)."""

    name = "no-gold"

    def examples(self, split, n, seed=0):
        return [Example("q", "1", "T")] * n


def test_warmup_gold_solutions_are_answer_lines_on_problems_other_than_the_rl_prompts():
    task = build_task({"name": "arithmetic", "tiers": ["D2", "D3"], "seed": 0})
    rows = gold_rows(task, WarmupConfig(n_train=40))
    assert len(rows) == 40
    for row in rows:
        prompt, gold = row["prompt"][0]["content"], row["completion"][0]["content"]
        expression = prompt.split("Compute ")[1].split(". Answer")[0]
        assert row["completion"][0]["role"] == "assistant"
        assert gold == f"{expression} = {eval(expression)}\nAnswer: {eval(expression)}"  # noqa: S307
        assert AnswerReward(answer_line_only=True)([gold], [str(eval(expression))]) == [1.0]  # noqa: S307
    rl = {p.prompt for p in generate_problems(40, split="train", tiers=["D2", "D3"], seed=0)}
    assert len(rl & {r["prompt"][0]["content"] for r in rows}) < 10  # a different draw (seed + 1000)
    with pytest.raises(ValueError, match="no gold solutions"):
        gold_rows(NoGold(NoGold.Options()), WarmupConfig())


def test_a_warmup_can_run_one_token_rollout_and_its_options_are_checked(tmp_path):
    from tokenfocus.io import read_jsonl
    from tokenfocus.recipes.warmup import run_warmup

    assert any("otr: unknown key(s) ['kk']" in p for p in WarmupConfig(otr={"kk": 2}).problems())
    assert any("k (samples per position) must be >= 1" in p for p in WarmupConfig(otr={"k": 0}).problems())
    task = build_task({"name": "arithmetic", "tiers": ["D1"], "seed": 0})
    final = run_warmup("tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64", task,
                       WarmupConfig(n_train=16, batch_size=8, otr={"k": 4}), tmp_path / "warmup", log=lambda m: None)
    assert (final / "config.json").is_file()
    rows = [r for r in read_jsonl(tmp_path / "warmup" / "metrics.jsonl") if "step" in r and "loss/train" in r]
    assert rows and all("otr/gt_sample_frac" in r for r in rows)


WARMUP_SCRIPT = """
import sys
from pathlib import Path
from tokenfocus.config import WarmupConfig
from tokenfocus.recipes.warmup import run_warmup
from tokenfocus.tasks import build_task
task = build_task({"name": "arithmetic", "tiers": ["D1"], "seed": 0})
run_warmup("tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64", task,
           WarmupConfig(n_train=32, batch_size=4, epochs=2, learning_rate=1e-3), Path(sys.argv[1]))
"""


def _warmup(out, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", WARMUP_SCRIPT, str(out)], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})})


def test_a_warmup_killed_inside_a_checkpoint_save_resumes_to_the_same_model(tmp_path):
    """A study's warm-up or teacher SFT can take hours: killed (here inside its third checkpoint save, as SIGKILL or
    the OOM killer would), it resumes from the last complete checkpoint, and ends with the model and losses of a run
    never stopped."""
    from safetensors.torch import load_file

    from tokenfocus.checkpoints import FAULT_ENV
    from tokenfocus.io import latest_metrics

    reference = _warmup(tmp_path / "a")
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = _warmup(tmp_path / "b", env={FAULT_ENV: "checkpoint:optimizer@3"})  # 16 steps, a save every 2
    assert killed.returncode == 137 and not (tmp_path / "b" / "final").exists()
    assert sorted(p.name for p in (tmp_path / "b" / "trainer").glob("checkpoint-*")) == ["checkpoint-2",
                                                                                         "checkpoint-4"]
    resumed = _warmup(tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-4" in resumed.stdout
    a, b = (load_file(tmp_path / run / "final" / "model.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    losses = [latest_metrics(tmp_path / run / "metrics.jsonl") for run in ("a", "b")]
    assert sorted(losses[1]) == sorted(losses[0]) == list(range(1, 17))
    assert all(losses[1][s]["loss/train"] == pytest.approx(losses[0][s]["loss/train"], abs=1e-6) for s in losses[0])
    assert not (tmp_path / "b" / "trainer").exists()  # checkpoints go once the model is final


def test_a_second_process_waits_for_the_one_making_the_warmup_and_reuses_its_model(tmp_path):
    """Two study slices started together (one per core) both need the warm-up: the one that finds it being made waits
    for the maker's lock, then reuses the finished model instead of training a second one into the same directory."""
    import fcntl
    import os
    import shutil
    import subprocess
    import sys
    import time

    from tokenfocus.recipes.warmup import LOCK_FILE

    reference = _warmup(tmp_path / "a")
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "b"
    out.mkdir()
    log = tmp_path / "b.log"
    with open(out / LOCK_FILE, "a+") as lock, open(log, "w") as sink:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another process" making it: this test
        lock.write(str(os.getpid()))
        lock.flush()
        waiting = subprocess.Popen([sys.executable, "-c", WARMUP_SCRIPT, str(out)], stdout=sink,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while f"(pid {os.getpid()}) is making the warm-up" not in log.read_text():
            assert waiting.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert not (out / "final").exists() and not (out / "trainer").exists()  # it waits, it does not train
        shutil.copytree(tmp_path / "a" / "final", out / "final")
        fcntl.flock(lock, fcntl.LOCK_UN)
        assert waiting.wait(timeout=120) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "warm-up model found, reused" in text and "warm-up: SFT" not in text
    assert not (out / "trainer").exists() and not (out / "metrics.jsonl").exists()


def test_a_killed_warmup_maker_does_not_block_the_next_one(tmp_path):
    """The lock goes with the process that held it: after a maker is SIGKILLed mid-training, the next run takes the
    lock at once and resumes."""
    from tokenfocus.checkpoints import FAULT_ENV

    killed = _warmup(tmp_path / "w", env={FAULT_ENV: "checkpoint:optimizer@2"})
    assert killed.returncode == 137
    resumed = _warmup(tmp_path / "w")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "is making the warm-up" not in resumed.stdout and "resuming from checkpoint-2" in resumed.stdout
