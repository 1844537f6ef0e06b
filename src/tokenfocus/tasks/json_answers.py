"""JSON answers (testbed T5, RL_TOKEN_CREDIT.md §0.4): arithmetic answered inside a fixed JSON template, where a
pair of answers differs in one or two digit tokens and the rest is scaffolding (TAB-PO's low-separation pairs).

    Compute 6*7+5. Answer in JSON: {"steps": [...], "answer": N}
    gold: {"steps": ["6*7=42", "42+5=47"], "answer": 47}

Tiers: the arithmetic tiers (D1-D3 train, H1-H3 hard). The reward reads the last ``"answer": N`` of the completion.
``perturbed_pairs`` makes preference pairs from gold solutions: chosen = the gold JSON, rejected = the same JSON
with 1-2 digits of one step result or of the answer changed (so the pair differs only there).
"""

from __future__ import annotations

import random
import re

from .arithmetic import TIERS, TRAIN_TIERS, _draw, _evaluate
from .base import Example, register_task
from .generated import GeneratedTask
from .rewards import RewardConfig

TEMPLATE = 'Compute {expression}. Answer in JSON: {{"steps": [...], "answer": N}}'
ANSWER = re.compile(r'"answer"\s*:\s*(-?\d+)')


def steps_of(expression: str) -> list[str]:
    """The worked steps, left to right, multiplication first: "6*7+5" -> ["6*7=42", "42+5=47"]."""
    tokens = re.findall(r"\d+|[+*-]", expression)
    while "*" in tokens:  # fold products first (precedence), recording each
        i = tokens.index("*")
        value = int(tokens[i - 1]) * int(tokens[i + 1])
        steps = [f"{tokens[i - 1]}*{tokens[i + 1]}={value}"]
        tokens[i - 1:i + 2] = [str(value)]
        return steps + steps_of("".join(tokens)) if len(tokens) > 1 else steps
    out, value = [], int(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        result = value + int(operand) if op == "+" else value - int(operand)
        out.append(f"{value}{op}{operand}={result}")
        value = result
    return out


def gold_json(expression: str) -> str:
    steps = ", ".join(f'"{s}"' for s in steps_of(expression))
    return f'{{"steps": [{steps}], "answer": {_evaluate(expression)}}}'


def make_problem(tier: str, rng: random.Random) -> Example:
    expression = _draw(tier, rng)
    return Example(TEMPLATE.format(expression=expression), str(_evaluate(expression)), tier, gold_json(expression))


class JsonAnswerReward:
    """1.0 when the last ``"answer": N`` of the completion equals the gold answer, else 0.0 (TRL's signature)."""

    __name__ = "json_answer_reward"

    def __init__(self):
        self.calls = 0
        self.errors = 0  # nothing is executed: no errors or timeouts to count (AnswerReward's counters)
        self.timeouts = 0

    def __call__(self, completions, answer, **_columns) -> list[float]:
        out = []
        for completion, gold in zip(completions, answer, strict=True):
            text = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
            found = ANSWER.findall(text)
            out.append(1.0 if found and found[-1] == str(gold).strip() else 0.0)
        self.calls += len(out)
        return out

    def counters(self) -> dict:
        return {"reward/calls": float(self.calls), "reward/errors": 0.0, "reward/timeouts": 0.0}


def perturb_digits(solution: str, rng: random.Random, max_digits: int = 2) -> str:
    """``solution`` with 1..max_digits digits of one result (after "=" or "answer":) changed; never identical."""
    targets = [m for m in re.finditer(r'(?<==)-?\d+|(?<="answer": )-?\d+', solution)]
    if not targets:
        raise ValueError(f"no step result or answer to perturb in {solution!r}")
    match = rng.choice(targets)
    digits = list(match.group().lstrip("-"))
    for position in rng.sample(range(len(digits)), k=min(len(digits), rng.randint(1, max_digits))):
        digits[position] = rng.choice([d for d in "0123456789" if d != digits[position]
                                       and not (position == 0 and d == "0" and len(digits) > 1)])
    value = ("-" if match.group().startswith("-") else "") + "".join(digits)
    return solution[:match.start()] + value + solution[match.end():]


def perturbed_pairs(examples: list[Example], seed: int = 0, max_digits: int = 2) -> list[dict]:
    """Preference rows {prompt, chosen, rejected, answer, tier} from examples with gold solutions."""
    rng = random.Random(seed)
    rows = []
    for example in examples:
        if not example.solution:
            raise ValueError(f"example {example.prompt[:50]!r} has no gold solution to make a pair from")
        rows.append({"prompt": example.prompt, "chosen": example.solution,
                     "rejected": perturb_digits(example.solution, rng, max_digits), "answer": example.answer,
                     "tier": example.tier})
    return rows


@register_task
class JsonAnswers(GeneratedTask):
    """Arithmetic answered in a fixed JSON template (testbed T5); gold JSON solutions for SFT and pairs."""

    name = "json_answers"
    tiers = TIERS
    train_tiers = TRAIN_TIERS
    splits = ("train", "test", "hard-test")

    def make(self, tier: str, rng: random.Random) -> Example:
        return make_problem(tier, rng)

    def examples(self, split: str, n: int, seed: int = 0, tiers=None) -> list[Example]:
        if split == "hard-test":  # the H tiers, drawn from the test bucket
            return super().examples("test", n, seed, tiers=tiers or ("H1", "H2"))
        return super().examples(split, n, seed, tiers=tiers)

    def reward(self, config: RewardConfig):
        return JsonAnswerReward()
