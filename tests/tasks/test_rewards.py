"""Rewards (tasks/rewards.py): answer extraction, verification, exceptions and timeouts, the dense digit reward."""

from __future__ import annotations

import time

import pytest

from tokenfocus.tasks import AnswerReward, extract_answer
from tokenfocus.tasks.rewards import DigitReward


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
