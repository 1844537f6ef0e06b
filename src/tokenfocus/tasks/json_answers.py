"""JSON answers (testbed T5, RL_TOKEN_CREDIT.md §0.4): arithmetic answered inside a fixed JSON template, where a
pair of answers differs in one or two digit tokens and the rest is scaffolding (TAB-PO's low-separation pairs).

    Compute 6*7+5. Answer in JSON: {"steps": [...], "answer": N}
    gold: {"steps": ["6*7=42", "42+5=47"], "answer": 47}

Tiers: the arithmetic tiers (D1-D3 train, H1-H3 hard). The reward reads the last ``"answer": N`` of the completion.
``perturbed_pairs`` makes preference pairs from gold solutions: chosen = the gold JSON, rejected = the same JSON
with 1-2 digits of one step result or of the answer changed (so the pair differs only there). ``on_policy_pairs``
makes them from the model's own responses: chosen a correct one, rejected an incorrect one of the same prompt that
differs from it in 1-2 digits only (else the chosen with 1-2 digits changed; counted).
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


RESULT = re.compile(r'(?:=\s*|"answer":\s*|Answer:\s*)(-?\d+)')  # a step result or an answer, JSON or "Answer: N"


def perturb_digits(solution: str, rng: random.Random, max_digits: int = 2) -> str:
    """``solution`` with 1..max_digits digits of one result (after "=", '"answer":' or "Answer:") changed; never
    identical."""
    targets = list(RESULT.finditer(solution))
    if not targets:
        raise ValueError(f"no step result or answer to perturb in {solution!r}")
    match = rng.choice(targets)
    start, end = match.span(1)
    number = solution[start:end]
    digits = list(number.lstrip("-"))
    for position in rng.sample(range(len(digits)), k=min(len(digits), rng.randint(1, max_digits))):
        digits[position] = rng.choice([d for d in "0123456789" if d != digits[position]
                                       and not (position == 0 and d == "0" and len(digits) > 1)])
    value = ("-" if number.startswith("-") else "") + "".join(digits)
    return solution[:start] + value + solution[end:]


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


def digit_edit(a: str, b: str) -> int | None:
    """How many characters differ between ``a`` and ``b`` when every difference is a digit for a digit (same
    length); None when they differ otherwise (length, a non-digit)."""
    if len(a) != len(b):
        return None
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    return len(changed) if all(x.isdigit() and y.isdigit() for x, y in changed) else None


def on_policy_pairs(examples: list[Example], responses: list[list[tuple[str, float]]], seed: int = 0,
                    max_digits: int = 2) -> tuple[list[dict], dict]:
    """Pairs from the model's own responses (``responses[i]``: (text, reward) of prompt i): chosen = a correct
    response; rejected = an incorrect response of the same prompt differing from it in 1..max_digits digits only,
    else the chosen with 1..max_digits digits changed (``perturb_digits``). Prompts with no correct response give no
    pair. Returns (rows, counts of each kind)."""
    rng = random.Random(seed)
    rows, counts = [], {"sampled": 0, "perturbed": 0, "no_correct": 0}
    for example, group in zip(examples, responses, strict=True):
        correct = [t for t, r in group if r >= 1.0]
        wrong = [t for t, r in group if r < 1.0]
        if not correct:
            counts["no_correct"] += 1
            continue
        chosen = correct[0]
        near = [w for w in wrong if (d := digit_edit(chosen, w)) is not None and 1 <= d <= max_digits]
        if near:
            rejected, kind = near[0], "sampled"
        else:
            try:
                rejected, kind = perturb_digits(chosen, rng, max_digits), "perturbed"
            except ValueError:  # a correct response without a result to change
                counts["no_correct"] += 1
                continue
        counts[kind] += 1
        rows.append({"prompt": example.prompt, "chosen": chosen, "rejected": rejected, "answer": example.answer,
                     "tier": example.tier, "rejected_source": kind})
    return rows, counts


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
