"""Tasks and rewards: arithmetic splits, GSM8K loading, answer extraction, verification, timeouts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tokenfocus.evaluate import EvalConfig, evaluate
from tokenfocus.tasks import AnswerReward, DatasetError, extract_answer, generate_problems, load_gsm8k
from tokenfocus.tasks.rewards import DigitReward

from helpers import tiny

GSM8K = Path(__file__).parents[2] / "shared" / "data" / "gsm8k"


def test_arithmetic_splits_are_seeded_disjoint_and_tiered():
    train = generate_problems(300, split="train", seed=1)
    test = generate_problems(60, split="test", seed=1)
    hard = generate_problems(40, split="hard-test", seed=1)
    assert [p.expression for p in train] == [p.expression for p in generate_problems(300, split="train", seed=1)]
    assert not {p.expression for p in train} & {p.expression for p in test}
    assert {p.tier for p in train} == {"D1", "D2", "D3"} and {p.tier for p in hard} == {"H1", "H2"}
    for p in train + test + hard:
        assert p.answer == eval(p.expression) and f"Compute {p.expression}." in p.prompt  # noqa: S307
    with pytest.raises(ValueError, match="valid tiers"):
        generate_problems(3, tiers=["D9"])
    with pytest.raises(ValueError, match="ask for fewer"):
        generate_problems(500, split="test", tiers=["D1"])  # only 200 distinct 1-digit problems exist


@pytest.mark.parametrize("text, expected", [
    ("so the result is \\boxed{85}.", "85"),
    ("47+38 = 85\nAnswer: 85", "85"),
    ("Answer: $1,234$.", "1234"),
    ("Answer: \\frac{1}{2}", "\\frac{1}{2}"),
    ("First 12, then 7 and finally 19", "19"),
    ("no digits here", None),
])
def test_answer_extraction(text, expected):
    assert extract_answer(text) == expected


def test_answer_reward_integers_symbolic_and_conversational():
    reward = AnswerReward()
    completions = ["Answer: 85", "Answer: 84", "Answer: 1/2", [{"role": "assistant", "content": "Answer: -3"}]]
    assert reward(completions, ["85", "85", "0.5", "-3"]) == [1.0, 0.0, 1.0, 1.0]
    assert AnswerReward(format_bonus=0.1)(["Answer: 2", "2"], ["2", "3"]) == [1.1, 0.0]


def test_answer_line_only_reads_the_last_answer_line_and_nothing_else():
    """The arithmetic rule (Answer: regex, last match): an echoed expression is not an answer."""
    echoed = "Computing 0-3, it is undefined."
    assert extract_answer(echoed) == "-3"  # the lenient rule falls back to the last number...
    assert extract_answer(echoed, answer_line_only=True) is None  # ...the strict one does not
    assert extract_answer("\\boxed{4}", answer_line_only=True) is None
    assert extract_answer("Answer: 3\nAnswer: 5", answer_line_only=True) == "5"
    strict = AnswerReward(answer_line_only=True, format_bonus=0.1)
    assert strict(["0-3 is -3", "8+6 = 14\nAnswer: 14", "Answer: 13"], ["-3", "14", "14"]) == [0.0, 1.1, 0.1]


def test_warmup_gold_solutions_are_answer_lines_on_problems_other_than_the_rl_prompts():
    from tokenfocus.tasks import generate_problems
    from tokenfocus.warmup import WarmupConfig, gold_rows

    task = {"name": "arithmetic", "tiers": ["D2", "D3"], "seed": 0}
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
    assert WarmupConfig(n_train=0, learning_rate=2.0).problems() == [
        "warmup.n_train must be >= 1, got 0", "warmup.learning_rate must be in (0, 1), got 2.0"]
    with pytest.raises(ValueError, match="no gold solutions"):
        gold_rows({"name": "other"}, WarmupConfig())


def test_reward_exceptions_and_timeouts_score_zero_and_are_counted(monkeypatch):
    reward = AnswerReward(timeout_s=0.2)

    def flaky(completion, gold):
        if completion == "boom":
            raise RuntimeError("parser crashed")
        if completion == "slow":
            time.sleep(1.0)
        return 1.0

    monkeypatch.setattr(reward, "score", flaky)
    assert reward(["ok", "boom", "slow"], ["1", "1", "1"]) == [1.0, 0.0, 0.0]
    assert reward.counters() == {"reward/errors": 1.0, "reward/timeouts": 1.0, "reward/calls": 3.0}


def test_digit_reward_is_dense():
    assert DigitReward()(["a1", "12", ""]) == [0.5, 1.0, 0.0]


def test_gsm8k_from_local_jsonl_and_bad_rows(tmp_path):
    rows = load_gsm8k(str(GSM8K), "test", limit=5)
    assert len(rows) == 5 and rows[0]["answer"] == "18" and rows[0]["prompt"].startswith("Janet")
    assert len(load_gsm8k(str(GSM8K / "train.jsonl"), limit=3)) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DatasetError, match="bad.jsonl: line 3 needs string fields"):
        load_gsm8k(str(bad))
    bad.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DatasetError, match="line 1: the answer field has no '#### <number>' line"):
        load_gsm8k(str(bad))
    with pytest.raises(DatasetError, match="not found"):
        load_gsm8k(str(tmp_path / "missing.jsonl"))


def test_eval_pass_at_1_and_mean_at_k_on_a_tiny_model():
    model, tok = tiny()
    result = evaluate(model, tok, EvalConfig(model="tiny", n=6, k=3, max_new_tokens=6, batch_size=4))
    assert result["n"] == 6 and result["k"] == 3
    assert 0.0 <= result["pass@1"] <= 1.0 and 0.0 <= result["mean@3"] <= 1.0
    assert set(result["pass@1_by_tier"]) == {"D1", "D2", "D3"}


def test_eval_counts_pass_at_1_and_mean_at_k_exactly(monkeypatch):
    """Greedy answers right on problems 0 and 1 of 4 -> pass@1 = 0.5; sampled k = 2 right on 3 of 8 -> 0.375."""
    from types import SimpleNamespace

    from tokenfocus import evaluate as ev

    problems = generate_problems(4, split="test", seed=0)
    answers = [str(p.answer) for p in problems]
    greedy = [f"Answer: {answers[0]}", f"Answer: {answers[1]}", "Answer: 99999", "nothing"]
    sampled = [f"Answer: {answers[0]}", "x", f"Answer: {answers[1]}", f"Answer: {answers[1]}", "x", "x", "x", "x"]
    calls = iter([greedy, sampled])
    monkeypatch.setattr(ev, "generate_rollout", lambda *a, **k: SimpleNamespace(
        completions=next(calls), completion_lengths=[3] * len(a[2])))
    result = ev.evaluate(None, None, EvalConfig(model="m", n=4, k=2))
    assert result["pass@1"] == 0.5 and result["mean@2"] == 0.375
