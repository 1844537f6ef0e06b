"""Reward functions: plain callables in TRL's style, ``reward(completions, answer, **columns) -> list[float]``.

Answer extraction, in order: the last ``\\boxed{...}``, the last "Answer: ..." line, the last number.
Verification: exact integers when both sides are integers (arithmetic), else ``math-verify`` (symbolic:
fractions, decimals, LaTeX). Every call runs under a per-completion timeout; an exception or a timeout
scores 0 and is counted (``errors``, ``timeouts``), never crashes a run.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Literal

RewardKind = Literal["answer", "digits"]


@dataclass(frozen=True)
class RewardConfig:
    """The reward of a train config (``reward:``). kind "answer": 1 for a correct final answer (+ ``format_bonus``
    with an "Answer:" line); "digits": the digit fraction, a dense reward for smoke tests on random models.
    ``answer_line_only``: read answers from the last "Answer: N" line only, in training and evaluation."""

    kind: RewardKind = "answer"
    timeout_s: float = 5.0
    format_bonus: float = 0.0
    answer_line_only: bool = False

    def problems(self) -> list[str]:
        return [f"timeout_s must be > 0, got {self.timeout_s}"] if self.timeout_s <= 0 else []


# math-verify warns on every call that we disabled its signal-based timeout (we time out ourselves).
logging.getLogger("math_verify").setLevel(logging.ERROR)

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]\s*\$?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_INTEGER = re.compile(r"-?\d+")


def completion_text(completion) -> str:
    """TRL passes strings, or for conversational prompts a list of messages (take the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def extract_answer(text: str, answer_line_only: bool = False) -> str | None:
    """The model's final answer as a string, or None when there is nothing answer-like.

    Lenient (default): the last \\boxed{}, else the last "Answer: ..." line, else the last number.
    ``answer_line_only``: only the last "Answer: ..." line counts (the arithmetic testbed's rule,
    RL_TOKEN_CREDIT.md §1.12) -- a completion that merely echoes "0-3" is not read as the answer -3.
    """
    if not answer_line_only:
        boxed = _BOXED.findall(text)
        if boxed:
            return boxed[-1].strip()
    answers = _ANSWER.findall(text)
    if answers:
        candidate = answers[-1].strip().rstrip(".").strip().strip("$").strip()
        if any(symbol in candidate for symbol in "/\\^"):  # a fraction or LaTeX: let math-verify read it
            return candidate
        numbers = _NUMBER.findall(candidate)
        return numbers[0].replace(",", "") if numbers else candidate
    if answer_line_only:
        return None
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def answers_match(predicted: str | None, gold) -> bool:
    if predicted is None:
        return False
    gold = str(gold).strip()
    if _INTEGER.fullmatch(predicted.replace(",", "")) and _INTEGER.fullmatch(gold.replace(",", "")):
        return int(predicted.replace(",", "")) == int(gold.replace(",", ""))
    from math_verify import parse, verify

    # Timeouts inside math-verify use signal alarms, which only work on the main thread: ours wraps it.
    return bool(verify(parse(gold, parsing_timeout=None), parse(predicted, parsing_timeout=None), timeout_seconds=None))


class AnswerReward:
    """1.0 for a correct final answer, else 0.0 (plus ``format_bonus`` when an "Answer:" line is present).

    ``answer_line_only``: read the answer from the last "Answer:" line only (see ``extract_answer``).
    Usable as a TRL reward function: ``reward(completions=[...], answer=[...])``.
    """

    def __init__(self, timeout_s: float = 5.0, format_bonus: float = 0.0, name: str = "answer_reward",
                 answer_line_only: bool = False):
        self.timeout_s = timeout_s
        self.format_bonus = format_bonus
        self.answer_line_only = answer_line_only
        self.__name__ = name
        self.errors = 0
        self.timeouts = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenfocus-reward")

    def score(self, completion, gold) -> float:
        text = completion_text(completion)
        correct = answers_match(extract_answer(text, self.answer_line_only), gold)
        bonus = self.format_bonus if _ANSWER.search(text) else 0.0
        return float(correct) + bonus

    def __call__(self, completions, answer, **_columns) -> list[float]:
        if len(completions) != len(answer):
            raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
        futures = [self._pool.submit(self.score, c, a) for c, a in zip(completions, answer)]
        rewards = []
        for future in futures:
            try:
                rewards.append(future.result(timeout=self.timeout_s))
            except FutureTimeout:
                rewards.append(0.0)
                with self._lock:
                    self.timeouts += 1
            except Exception:  # noqa: BLE001 - a bad completion must never stop training
                rewards.append(0.0)
                with self._lock:
                    self.errors += 1
        with self._lock:
            self.calls += len(completions)
        return rewards

    def counters(self) -> dict[str, float]:
        with self._lock:
            return {"reward/errors": float(self.errors), "reward/timeouts": float(self.timeouts),
                    "reward/calls": float(self.calls)}


class DigitReward:
    """Fraction of the completion's characters that are digits: a dense reward for wiring tests and smoke runs
    on random-weight models, whose completions are never correct answers (so the answer reward is always 0)."""

    __name__ = "digit_reward"

    def __call__(self, completions, **_columns) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]

    def counters(self) -> dict[str, float]:
        return {}
