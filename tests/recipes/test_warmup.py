"""The SFT warm-up's data (recipes/warmup.py): gold solutions in TRL's conversational format."""

from __future__ import annotations

import pytest

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
