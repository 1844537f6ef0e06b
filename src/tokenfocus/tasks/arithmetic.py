"""Generated arithmetic problems with difficulty tiers (the shared 135M testbed, RL_TOKEN_CREDIT.md §0.4).

Tiers:  D1 1-digit +/-;  D2 2-digit +/-;  D3 a*b+c with 1-digit factors;
        held-out "hard" tiers: H1 3-digit +/-, H2 3-operand 2-digit +/-, H3 2-digit x 1-digit in either order
        (47*6, 6*47; after the SFT warm-up its pass rate is 5-30 %, so training can move it).
Splits are disjoint by construction: a problem belongs to "test" when a hash of its text falls in the
test bucket (20 %), to "train" otherwise; "hard-test" draws from the H tiers only. Same seed, same problems.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from .base import Example, Task, TaskOptions, register_task

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


def _in_test_bucket(expression: str) -> bool:
    return int(hashlib.sha1(expression.encode()).hexdigest(), 16) % 5 == 0


def generate_problems(n: int, *, split: str = "train", tiers=None, seed: int = 0) -> list[Problem]:
    """``n`` distinct problems of ``split``.

    ``tiers``: a list of tiers cycled in turn (defaults: D1-D3, or H1-H2 for hard-test), or a mapping
    {tier: count} that draws exactly ``count`` problems of each tier (``n`` is then their sum), each tier from
    its own random stream, so one tier's problems do not depend on the others' -- a fixed evaluation set.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits: {SPLITS}")
    if isinstance(tiers, dict):
        return _draw_mix(tiers, split, seed)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tiers = tuple(tiers or (HARD_TIERS if split == "hard-test" else TRAIN_TIERS))
    _check_tiers(tiers)
    rng = random.Random(f"{seed}-{split}")
    want_test = split != "train"
    problems, seen = [], set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"Could not draw {n} distinct {split} problems from tiers {tiers}; ask for fewer")
        tier = tiers[len(problems) % len(tiers)]
        expression = _draw(tier, rng)
        if expression in seen or _in_test_bucket(expression) != want_test:
            continue
        seen.add(expression)
        problems.append(Problem(expression, _evaluate(expression), tier, PROMPT_TEMPLATE.format(expression=expression)))
    return problems


def _check_tiers(tiers) -> None:
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        raise ValueError(f"Unknown arithmetic tier(s) {unknown}; valid tiers: {TIERS}")


def _draw_mix(counts: dict, split: str, seed: int) -> list[Problem]:
    _check_tiers(counts)
    bad = {t: c for t, c in counts.items() if not isinstance(c, int) or isinstance(c, bool) or c < 1}
    if bad or not counts:
        raise ValueError(f"tiers: expected a non-empty mapping {{tier: count >= 1}}, got {counts!r}")
    want_test = split != "train"
    problems = []
    for tier, count in counts.items():
        rng = random.Random(f"{seed}-{split}-{tier}")
        seen: set[str] = set()
        attempts = 0
        while len(seen) < count:
            attempts += 1
            if attempts > 200 * count + 10_000:
                raise ValueError(f"Could not draw {count} distinct {split} problems of tier {tier} (it has "
                                 f"{len(seen)}); ask for at most {len(seen)} or add another tier")
            expression = _draw(tier, rng)
            if expression in seen or _in_test_bucket(expression) != want_test:
                continue
            seen.add(expression)
            problems.append(Problem(expression, _evaluate(expression), tier,
                                    PROMPT_TEMPLATE.format(expression=expression)))
    return problems


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
        return [Example(p.prompt, str(p.answer), p.tier) for p in generate_problems(n, split=split, tiers=tiers,
                                                                                     seed=seed)]

    def train_examples(self, n: int | None = None) -> list[Example]:
        return self.examples("train", n or self.options.n_train, self.options.seed, tiers=self.options.tiers)

    def gold_examples(self, n: int, seed: int | None = None, tiers=None) -> list[Example]:
        """Gold short solutions "a+b = c\nAnswer: c" drawn with ``seed`` (default: the task seed + 1000)."""
        seed = self.options.seed + 1000 if seed is None else seed
        drawn = generate_problems(n, split="train", tiers=tiers or self.options.tiers, seed=seed)
        return [Example(p.prompt, str(p.answer), p.tier, f"{p.expression} = {p.answer}\nAnswer: {p.answer}")
                for p in drawn]
