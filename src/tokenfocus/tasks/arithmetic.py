"""Generated arithmetic problems with difficulty tiers (the shared 135M testbed, RL_TOKEN_CREDIT.md §0.4).

Tiers:  D1 1-digit +/-;  D2 2-digit +/-;  D3 a*b+c with 1-digit factors;
        held-out "hard" tiers: H1 3-digit +/-, H2 3-operand 2-digit +/-, H3 2-digit x 1-digit in either order
        (47*6, 6*47; after the SFT warm-up its pass rate is 5-30 %, so training can move it).
Splits are disjoint by construction: a problem belongs to "test" when a hash of its text falls in the
test bucket (20 %), to "train" otherwise; "hard-test" draws from the H tiers only. Same seed, same problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .base import Example, Task, TaskOptions, register_task
from .generated import draw_problems

TIERS = ("D1", "D2", "D3", "H1", "H2", "H3")
TRAIN_TIERS = ("D1", "D2", "D3")
HARD_TIERS = ("H1", "H2")
SPLITS = ("train", "test", "hard-test")
PROMPT_TEMPLATE = 'Compute {expression}. Answer in the form "Answer: N".'


@dataclass(frozen=True)
class Problem:
    expression: str
    answer: int
    tier: str
    prompt: str


def _draw(tier: str, rng: random.Random) -> str:
    if tier == "D1":
        return f"{rng.randint(0, 9)}{rng.choice('+-')}{rng.randint(0, 9)}"
    if tier == "D2":
        return f"{rng.randint(10, 99)}{rng.choice('+-')}{rng.randint(10, 99)}"
    if tier == "D3":
        return f"{rng.randint(2, 9)}*{rng.randint(2, 9)}+{rng.randint(1, 9)}"
    if tier == "H1":
        return f"{rng.randint(100, 999)}{rng.choice('+-')}{rng.randint(100, 999)}"
    if tier == "H2":
        a, b, c = (rng.randint(10, 99) for _ in range(3))
        return f"{a}{rng.choice('+-')}{b}{rng.choice('+-')}{c}"
    if tier == "H3":
        a, b = rng.randint(10, 99), rng.randint(2, 9)
        return f"{a}*{b}" if rng.random() < 0.5 else f"{b}*{a}"
    raise ValueError(f"Unknown arithmetic tier {tier!r}; valid tiers: {TIERS}")


def _evaluate(expression: str) -> int:
    # The expressions use only digits and + - *; Python's precedence is the intended one.
    return int(eval(expression, {"__builtins__": {}}, {}))  # noqa: S307


def _solution(problem: Problem) -> str:
    """The gold short solution: "47+38 = 85\nAnswer: 85"."""
    return f"{problem.expression} = {problem.answer}\nAnswer: {problem.answer}"


def _problem(tier: str, rng: random.Random) -> Problem:
    expression = _draw(tier, rng)
    return Problem(expression, _evaluate(expression), tier, PROMPT_TEMPLATE.format(expression=expression))


def generate_problems(n: int, *, split: str = "train", tiers=None, seed: int = 0) -> list[Problem]:
    """``n`` distinct problems of ``split`` (``generated.draw_problems``: disjoint splits, same seed same problems).

    ``tiers``: a list of tiers cycled in turn (defaults: D1-D3, or H1-H2 for hard-test), or a mapping
    {tier: count} that draws exactly ``count`` problems of each tier, each tier from its own random stream, so
    one tier's problems do not depend on the others' -- a fixed evaluation set.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits: {SPLITS}")
    if not isinstance(tiers, dict):
        tiers = tuple(tiers or (HARD_TIERS if split == "hard-test" else TRAIN_TIERS))
    return draw_problems(_problem, lambda p: p.expression, n, split=split, tiers=tiers, seed=seed,
                         valid_tiers=TIERS, what="arithmetic")


@dataclass(frozen=True)
class ArithmeticOptions(TaskOptions):
    """tiers: the training tiers (default D1-D3); held-out splits use their own defaults (test: D1-D3,
    hard-test: H1-H2), so every arm and seed is scored on the same kind of problem."""

    tiers: list | None = None


@register_task
class Arithmetic(Task):
    """Generated arithmetic with difficulty tiers (testbed T1, RL_TOKEN_CREDIT.md §0.4)."""

    name = "arithmetic"
    Options = ArithmeticOptions
    splits = SPLITS
    has_tiers = True

    def check(self) -> list[str]:
        unknown = [t for t in self.options.tiers or () if t not in TIERS]
        return [f"tiers: unknown tier(s) {unknown}; valid tiers: {list(TIERS)}"] if unknown else []

    def examples(self, split: str, n: int, seed: int = 0, tiers=None) -> list[Example]:
        return [Example(p.prompt, str(p.answer), p.tier, _solution(p))
                for p in generate_problems(n, split=split, tiers=tiers, seed=seed)]

    def train_examples(self, n: int | None = None) -> list[Example]:
        return self.examples("train", n or self.options.n_train, self.options.seed, tiers=self.options.tiers)

    def gold_examples(self, n: int, seed: int | None = None, tiers=None) -> list[Example]:
        """Gold short solutions "a+b = c\nAnswer: c" drawn with ``seed`` (default: the task seed + 1000)."""
        seed = self.options.seed + 1000 if seed is None else seed
        drawn = generate_problems(n, split="train", tiers=tiers or self.options.tiers, seed=seed)
        return [Example(p.prompt, str(p.answer), p.tier, _solution(p)) for p in drawn]
