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
    """An exception here (extraction) or in the worker, and a worker timeout, each score 0 and are counted."""
    from tokenfocus.tasks import rewards as rewards_module

    original = rewards_module.extract_answer

    def flaky(text, answer_line_only=False):
        if text == "boom":
            raise RuntimeError("parser crashed")
        return original(text, answer_line_only)

    monkeypatch.setattr(rewards_module, "extract_answer", flaky)
    reward = AnswerReward(timeout_s=0.5)
    assert reward(["Answer: 1", "boom", "Answer: 2^(2^100)"], ["1", "1", "1"]) == [1.0, 0.0, 0.0]
    assert reward.counters() == {"reward/errors": 1.0, "reward/timeouts": 1.0, "reward/calls": 3.0}


@pytest.mark.parametrize("text, expected", [
    ("Answer: 1e999999", "1e999999"),
    ("Answer: 6.02E23 molecules", "6.02E23"),
    ("so x = 1.5e-3", "1.5e-3"),
])
def test_numbers_keep_their_exponent(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("predicted, gold, correct", [
    ("1e999999", "1", False),  # was read as "1" and scored correct
    ("1e999999", "1e999999", True),
    ("1e999999", "10e999998", True),  # exact, no float overflow: both are inf as floats
    ("1e-999999", "0", False),
    ("1e99999999999999999999", "1", False),  # an exponent no one means is equal to nothing
    ("1.5e3", "1500", True),  # written out for math-verify, which reads "1e3" as 1
    ("2.50e1", "25", True),
    ("1.5e-3", "0.0015", True),
    pytest.param("9" * 5000, "9" * 5000, True, id="5000-digit integers"),  # int() refuses > 4,300 digits
    ("-0", "0", True),
])
def test_scientific_notation_and_huge_numbers_compare_exactly(predicted, gold, correct):
    start = time.perf_counter()
    assert AnswerReward()([f"Answer: {predicted}"], [gold]) == [float(correct)]
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{\\frac{170}{\\sqrt{4}}}", "\\frac{170}{\\sqrt{4}}"),  # was read as "4"
    ("\\boxed{\\frac{\\sqrt{\\frac{1}{4}}}{2}}", "\\frac{\\sqrt{\\frac{1}{4}}}{2}"),
    ("\\boxed{1} and then \\boxed{2}.", "2"),
    ("\\boxed{3} \\boxed{4", "3"),  # an unclosed box is not an answer
    ("\\boxed{\\boxed{5}}", "\\boxed{5}"),  # the outermost box (math-verify reads the inner one)
    ("} \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
])
def test_boxed_braces_match_to_any_depth(text, expected):
    assert extract_answer(text) == expected


def test_nested_boxed_answer_scores():
    assert AnswerReward()(["so \\boxed{\\frac{170}{\\sqrt{4}}}"], ["85"]) == [1.0]


HOSTILE_TEXTS = {
    "answer + 20k spaces": "answer" + " " * 20_000,  # 2.7 s before (two \\s* shared the run)
    "answer: + 20k spaces": "Answer:" + " " * 20_000,
    "20k 'answer '": "answer " * 20_000,
    "20k 'answer is '": "answer is " * 20_000,
    "100k spaces and tabs": " \t" * 50_000,
    "100k unclosed boxes": "\\boxed{" * 14_000,
    "100k braces": "{" * 50_000 + "}" * 50_000,
    "100k digits and commas": "1," * 50_000,
    "100k '1e'": "1e" * 50_000,
    "100k answer lines": "Answer: $ 1.5e3 $\n" * 5_500,
}


@pytest.mark.parametrize("name", HOSTILE_TEXTS)
@pytest.mark.parametrize("answer_line_only", [False, True])
def test_extraction_is_linear_time(name, answer_line_only):
    text = HOSTILE_TEXTS[name]
    start = time.perf_counter()
    extract_answer(text, answer_line_only)
    assert time.perf_counter() - start < 0.2, name


def test_digit_reward_is_dense():
    assert DigitReward()(["a1", "12", ""]) == [0.5, 1.0, 0.0]
