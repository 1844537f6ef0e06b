"""Reward functions: plain callables in TRL's style, ``reward(completions, answer, **columns) -> list[float]``.

Answer extraction, in order: the last ``\\boxed{...}`` (braces matched to any depth), the last "Answer: ..." line,
the last number; each in one linear pass, so hostile text cannot stall it; numbers keep their exponent.
Verification: exact, in this process, when both sides are integers (also "1.5e3") or a number is past 10^±60;
else ``math-verify`` (symbolic: fractions, decimals, LaTeX) in a worker process (``verify.py``) that is killed
after ``timeout_s`` per completion and capped in memory. A timeout or an error scores 0 and is counted (``timeouts``, ``errors``);
neither crashes a run, and a stuck verification can neither hang it nor keep it from exiting.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Literal, NamedTuple

from .verify import DEFAULT_MEMORY_LIMIT_MB, SymbolicVerifier, shared_verifier

RewardKind = Literal["answer", "digits", "trace"]  # trace: the calculator task's TRACE reward (tasks.calculator)


@dataclass(frozen=True)
class RewardConfig:
    """The reward of a train config (``reward:``). kind "answer": 1 for a correct final answer (+ ``format_bonus``
    with an "Answer:" line); "digits": the digit fraction, a dense reward for smoke tests on random models.
    ``answer_line_only``: read answers from the last "Answer: N" line only, in training and evaluation.
    ``timeout_s`` / ``memory_limit_mb``: per-completion limits of the symbolic check (a killable worker process)."""

    kind: RewardKind = "answer"
    timeout_s: float = 5.0
    format_bonus: float = 0.0
    answer_line_only: bool = False
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB

    def problems(self) -> list[str]:
        found = [f"timeout_s must be > 0, got {self.timeout_s}"] if self.timeout_s <= 0 else []
        if self.memory_limit_mb < 128:
            found.append(f"memory_limit_mb must be >= 128 (the worker imports SymPy), got {self.memory_limit_mb}")
        return found


# Linear-time patterns: no two adjacent quantifiers may share characters (the old "answer\s*(?:is)?\s*[:=]" split a
# run of 20,000 spaces between its two \s* in every way: 2.7 s).
_ANSWER = re.compile(r"answer\s*(?:is\s*)?[:=]\s*(?:\$\s*)?([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")
_BOX_TOKEN = re.compile(r"\\boxed\{|[{}]")
_NUMERAL = re.compile(r"(-?)(\d*)(?:\.(\d*))?(?:[eE]([-+]?\d+))?")
_INTEGER = re.compile(r"-?\d+")
_MAX_WRITTEN_EXPONENT = 60  # "1.5e3" is written out as "1500" for math-verify; past 10^60 numbers compare exactly


def completion_text(completion) -> str:
    """TRL passes strings, or for conversational prompts a list of messages (take the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _last_boxed(text: str) -> str | None:
    """The content of the \\boxed{...} that closes last (the last outermost one), braces matched to any depth."""
    opened: list[int] = []  # per open brace: where a \boxed's content starts, or -1 for a plain brace
    last = None
    for token in _BOX_TOKEN.finditer(text):
        if token.group() != "}":
            opened.append(token.end() if token.group() != "{" else -1)
        elif opened:
            start = opened.pop()
            if start >= 0:
                last = (start, token.start())
    return None if last is None else text[last[0]:last[1]]


def extract_answer(text: str, answer_line_only: bool = False) -> str | None:
    """The model's final answer as a string, or None when there is nothing answer-like. Linear in ``len(text)``.

    Lenient (default): the last \\boxed{}, else the last "Answer: ..." line, else the last number.
    ``answer_line_only``: only the last "Answer: ..." line counts (the arithmetic testbed's rule,
    RL_TOKEN_CREDIT.md §1.12) -- a completion that merely echoes "0-3" is not read as the answer -3.
    Numbers keep their exponent: "1e999999" is not 1.
    """
    if not answer_line_only:
        boxed = _last_boxed(text)
        if boxed is not None:
            return boxed.strip()
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


class _Numeral(NamedTuple):
    """A decimal numeral as sign 0.DIGITS x 10^exponent (digits without leading or trailing zeros; "" for zero),
    so that two numerals are equal exactly when their ``value``s are. ``exponent`` None: more than 18 digits."""

    sign: str
    digits: str
    exponent: int | None
    scientific: bool  # written with an exponent ("1.5e3")

    @property
    def value(self) -> tuple[str, str, int | None]:
        return self.sign, self.digits, self.exponent

    def written_out(self) -> str:
        """Without exponent: "1.5e3" -> "1500" (only for moderate exponents)."""
        sign, digits, exponent = self.value
        if not digits:
            return "0"
        if exponent >= len(digits):
            return sign + digits + "0" * (exponent - len(digits))
        if exponent > 0:
            return sign + digits[:exponent] + "." + digits[exponent:]
        return sign + "0." + "0" * -exponent + digits


def _numeral(text: str) -> _Numeral | None:
    """``text`` as a decimal numeral ("-12", "0.5", "1.5e3"), or None when it is not one."""
    match = _NUMERAL.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        return None
    sign, whole, fraction, exponent = match[1], match[2], match[3] or "", match[4]
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return _Numeral("", "", 0, exponent is not None)
    if exponent is not None and len(exponent.lstrip("+-").lstrip("0")) > 18:
        return _Numeral(sign, digits.rstrip("0"), None, True)
    leading_zeros = len(whole) + len(fraction) - len(digits)
    return _Numeral(sign, digits.rstrip("0"), int(exponent or 0) + len(whole) - leading_zeros, exponent is not None)


def _match_in_process(predicted: str, gold: str) -> bool | tuple[str, str]:
    """Decide here when it is exact and cheap, else the (gold, predicted) pair to hand to math-verify.

    Integers compare as digit strings (``int()`` refuses more than 4,300 digits). A number in scientific notation
    is written out for math-verify (which reads "1e3" as 1) when its exponent is at most 60; past that, it is
    equal only to the same number written as a numeral (exactly, no float overflow): "1e999999" != "1".
    """
    p, g = predicted.replace(",", ""), gold.replace(",", "")
    ours, theirs = _numeral(p), _numeral(g)
    if (ours is not None and ours.scientific) or (theirs is not None and theirs.scientific):
        if any(n is not None and (n.exponent is None or abs(n.exponent) > _MAX_WRITTEN_EXPONENT) for n in (ours, theirs)):
            return ours is not None and theirs is not None and ours.exponent is not None and ours.value == theirs.value
        if ours is not None and ours.scientific:
            predicted = p = ours.written_out()
        if theirs is not None and theirs.scientific:
            gold = g = theirs.written_out()
    if _INTEGER.fullmatch(p) and _INTEGER.fullmatch(g):
        return _numeral(p).value == _numeral(g).value
    return gold, predicted


def answers_match(predicted: str | None, gold, timeout_s: float = 5.0,
                  verifier: SymbolicVerifier | None = None) -> bool:
    """Whether ``predicted`` is ``gold``: exactly here when cheap, else math-verify in a worker process (the
    shared one unless ``verifier`` is given). Raises TimeoutError past ``timeout_s``, RuntimeError on an error."""
    if predicted is None:
        return False
    decided = _match_in_process(predicted, str(gold).strip())
    if isinstance(decided, bool):
        return decided
    outcome = (verifier or shared_verifier()).verify_many([decided], timeout_s)[0]
    if outcome in ("timeout", "error"):
        raise (TimeoutError if outcome == "timeout" else RuntimeError)(f"math-verify {outcome} on {predicted!r}")
    return outcome == "true"


class AnswerReward:
    """1.0 for a correct final answer, else 0.0 (plus ``format_bonus`` when an "Answer:" line is present).

    ``answer_line_only``: read the answer from the last "Answer:" line only (see ``extract_answer``).
    ``timeout_s``: per completion that needs math-verify; ``memory_limit_mb``: its worker's address-space cap.
    All such completions of a call go to the worker in one round trip; one that times out (or crashes the
    worker) scores 0 alone, the rest of the batch is re-run in a fresh worker.
    Usable as a TRL reward function: ``reward(completions=[...], answer=[...])``.
    """

    def __init__(self, timeout_s: float = 5.0, format_bonus: float = 0.0, name: str = "answer_reward",
                 answer_line_only: bool = False, *, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB):
        self.timeout_s = timeout_s
        self.format_bonus = format_bonus
        self.answer_line_only = answer_line_only
        self.memory_limit_mb = memory_limit_mb
        self.__name__ = name
        self.errors = 0
        self.timeouts = 0
        self.calls = 0
        self._lock = threading.Lock()

    def score(self, completion, gold) -> float:
        return self([completion], [gold])[0]

    def __call__(self, completions, answer, **_columns) -> list[float]:
        if len(completions) != len(answer):
            raise ValueError(f"{len(completions)} completions but {len(answer)} answers")
        rewards: list[float] = [0.0] * len(completions)
        bonuses: list[float] = [0.0] * len(completions)
        symbolic: list[tuple[int, tuple[str, str]]] = []  # (index, (gold, predicted)) for math-verify
        errors = timeouts = 0
        for i, (completion, gold) in enumerate(zip(completions, answer)):
            try:
                text = completion_text(completion)
                bonuses[i] = self.format_bonus if _ANSWER.search(text) else 0.0
                predicted = extract_answer(text, self.answer_line_only)
                decided = False if predicted is None else _match_in_process(predicted, str(gold).strip())
            except Exception:  # noqa: BLE001 - a bad completion must never stop training
                errors += 1
                continue
            if isinstance(decided, bool):
                rewards[i] = float(decided) + bonuses[i]
            else:
                symbolic.append((i, decided))
        if symbolic:
            pairs = [pair for _, pair in symbolic]
            try:
                outcomes = shared_verifier(self.memory_limit_mb).verify_many(pairs, self.timeout_s)
            except Exception:  # noqa: BLE001 - the worker's plumbing failing must not stop training either
                outcomes = ["error"] * len(pairs)
            for (i, _), outcome in zip(symbolic, outcomes):
                timeouts += outcome == "timeout"
                errors += outcome == "error"
                if outcome in ("true", "false"):
                    rewards[i] = float(outcome == "true") + bonuses[i]
        with self._lock:
            self.errors += errors
            self.timeouts += timeouts
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
