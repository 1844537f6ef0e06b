"""Ordered steps (testbed T3, RL_TOKEN_CREDIT.md §0.4): a start value and a list of operations applied in order;
shuffling the steps changes the answer -- Video-KTR's temporal counterfactual on text.

    Start at 5, then add 3, then multiply by 2, then subtract 4. Answer in the form "Answer: N".
        steps spans: "add 3", "multiply by 2", "subtract 4"      evidence span: "5" (the start value)

Every problem has at least one multiplication and one addition or subtraction, so order matters. Tiers:
  S2 2 steps, S3 3 steps, S4 4 steps (start 1..9; add/subtract 1..9; multiply by 2..5).
Gold solution (for the SFT warm-up): "5+3 = 8, 8*2 = 16, 16-4 = 12\nAnswer: 12".
"""

from __future__ import annotations

import random

from .base import Example, register_task
from .generated import GeneratedTask

TIERS = ("S2", "S3", "S4")
ANSWER_FORMAT = 'Answer in the form "Answer: N".'
WORDS = {"+": "add", "-": "subtract", "*": "multiply by"}


def _operations(count: int, rng: random.Random) -> list[tuple[str, int]]:
    while True:
        ops = [rng.choice("+-*") for _ in range(count)]
        if "*" in ops and ("+" in ops or "-" in ops):
            return [(op, rng.randint(2, 5) if op == "*" else rng.randint(1, 9)) for op in ops]


def make_problem(tier: str, rng: random.Random) -> Example:
    if tier not in TIERS:
        raise ValueError(f"Unknown steps tier {tier!r}; valid tiers: {TIERS}")
    value = rng.randint(1, 9)
    operations = _operations(int(tier[1]), rng)
    prompt, spans, work = f"Start at {value}", [], []
    evidence = [(len("Start at "), len(prompt))]
    for op, operand in operations:
        step = f"{WORDS[op]} {operand}"
        prompt += ", then "
        spans.append((len(prompt), len(prompt) + len(step)))
        prompt += step
        result = value + operand if op == "+" else value - operand if op == "-" else value * operand
        work.append(f"{value}{op}{operand} = {result}")
        value = result
    prompt += f". {ANSWER_FORMAT}"
    return Example(prompt, str(value), tier, f"{', '.join(work)}\nAnswer: {value}", {"steps": spans, "evidence": evidence})


@register_task
class Steps(GeneratedTask):
    """A start value and ordered operations (testbed T3); marks each step, and the start value as evidence."""

    name = "steps"
    tiers = TIERS
    train_tiers = ("S2", "S3")
    roles = ("evidence", "steps")

    def make(self, tier: str, rng: random.Random) -> Example:
        return make_problem(tier, rng)
