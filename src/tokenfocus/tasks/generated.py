"""Drawing generated problems: disjoint splits by a hash of the problem's key, tier cycles or fixed tier mixes.

Every generated task (arithmetic, facts, steps) draws through ``draw_problems``:
  * a problem belongs to the test splits when a hash of its key (its expression or prompt) falls in the test
    bucket (20 %), to "train" otherwise, so splits are disjoint by construction;
  * ``tiers`` as a list cycles the tiers in turn from one random stream; as a mapping {tier: count} it draws exactly
    ``count`` problems of each tier, each tier from its own stream (one tier's problems do not depend on the others':
    a fixed evaluation set);
  * the same (split, n, tiers, seed) gives the same problems.
"""

from __future__ import annotations

import hashlib
import random
from abc import abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence, TypeVar

from .base import Example, Task, TaskOptions

P = TypeVar("P")


def in_test_bucket(key: str) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 5 == 0


def check_tiers(tiers, valid: Sequence[str], what: str) -> None:
    unknown = [t for t in tiers if t not in valid]
    if unknown:
        raise ValueError(f"Unknown {what} tier(s) {unknown}; valid tiers: {tuple(valid)}")


def draw_problems(draw: Callable[[str, random.Random], P], key: Callable[[P], str], n: int, *, split: str,
                  tiers, seed: int, valid_tiers: Sequence[str], what: str) -> list[P]:
    """``n`` distinct problems of ``split`` (``draw(tier, rng)`` makes one; ``key`` identifies it); ``tiers`` a
    non-empty list (cycled) or a mapping {tier: count} (``n`` is then their sum)."""
    want_test = split != "train"
    if isinstance(tiers, dict):
        check_tiers(tiers, valid_tiers, what)
        bad = {t: c for t, c in tiers.items() if not isinstance(c, int) or isinstance(c, bool) or c < 1}
        if bad or not tiers:
            raise ValueError(f"tiers: expected a non-empty mapping {{tier: count >= 1}}, got {tiers!r}")
        problems = []
        for tier, count in tiers.items():
            rng = random.Random(f"{seed}-{split}-{tier}")
            seen: set[str] = set()
            attempts = 0
            while len(seen) < count:
                attempts += 1
                if attempts > 200 * count + 10_000:
                    raise ValueError(f"Could not draw {count} distinct {split} problems of tier {tier} (it has "
                                     f"{len(seen)}); ask for at most {len(seen)} or add another tier")
                problem = draw(tier, rng)
                if key(problem) in seen or in_test_bucket(key(problem)) != want_test:
                    continue
                seen.add(key(problem))
                problems.append(problem)
        return problems
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tiers = tuple(tiers)
    check_tiers(tiers, valid_tiers, what)
    rng = random.Random(f"{seed}-{split}")
    problems, seen = [], set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            tier = tiers[len(problems) % len(tiers)]  # the tier that ran out: the list is cycled, one of each in turn
            raise ValueError(f"Could not draw {n} distinct {split} problems from tiers {list(tiers)}: drawn in turn, "
                             f"each tier needs about {-(-n // len(tiers))}, and {tier} has only "
                             f"{len(problems) // len(tiers)} distinct {split} problems; ask for fewer, or give counts "
                             f"per tier ({{tier: count}}) so the larger tiers supply the rest")
        problem = draw(tiers[len(problems) % len(tiers)], rng)
        if key(problem) in seen or in_test_bucket(key(problem)) != want_test:
            continue
        seen.add(key(problem))
        problems.append(problem)
    return problems


@dataclass(frozen=True)
class GeneratedOptions(TaskOptions):
    """tiers: the training tiers (default: the task's ``train_tiers``); held-out splits choose their own."""

    tiers: list | None = None


class GeneratedTask(Task):
    """A task whose problems (``Example`` with solution and spans) are made by ``make(tier, rng)``, drawn through
    ``draw_problems`` keyed by the prompt; splits "train" and "test"; gold solutions for a warm-up."""

    Options = GeneratedOptions
    has_tiers = True
    tiers: ClassVar[tuple[str, ...]] = ()
    train_tiers: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def make(self, tier: str, rng: random.Random) -> Example:
        """One problem of ``tier`` drawn with ``rng``."""

    def check(self) -> list[str]:
        unknown = [t for t in self.options.tiers or () if t not in self.tiers]
        return [f"tiers: unknown tier(s) {unknown}; valid tiers: {list(self.tiers)}"] if unknown else []

    def examples(self, split: str, n: int, seed: int = 0, tiers=None) -> list[Example]:
        if split not in self.splits:
            raise ValueError(f"Unknown split {split!r}; valid splits: {self.splits}")
        if not isinstance(tiers, dict):
            tiers = tuple(tiers or self.train_tiers)
        return draw_problems(self.make, lambda e: e.prompt, n, split=split, tiers=tiers, seed=seed,
                             valid_tiers=self.tiers, what=self.name)

    def train_examples(self, n: int | None = None) -> list[Example]:
        return self.examples("train", n or self.options.n_train, self.options.seed, tiers=self.options.tiers)

    def gold_examples(self, n: int, seed: int | None = None, tiers=None) -> list[Example]:
        """Train-split problems with their worked solutions, drawn with ``seed`` (default: the task seed + 1000)."""
        seed = self.options.seed + 1000 if seed is None else seed
        return self.examples("train", n, seed, tiers=tiers or self.options.tiers)
