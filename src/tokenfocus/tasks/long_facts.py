"""Long distractor facts (testbed T4, RL_TOKEN_CREDIT.md §0.4; dGRPO's long-context analogue): two needed facts
hidden among 20-50 irrelevant ones, so the answer depends on finding them in a long prompt.

    Let x17=47, x3=12, x58=90, ..., x41=38, .... Compute x17+x41. Answer in the form "Answer: N".
        evidence spans: the two needed facts      query span: "Compute x17+x41"

Tiers: L20, L35, L50 (distractors); 2-digit values; a+b or a-b; names x1..x99 drawn per problem, the needed facts
at random places. SmolLM2 prompts with the chat template: about 200 (L20), 305 (L35), 410 (L50)
tokens. Gold solution: "x17+x41 = 47+38 = 85\nAnswer: 85".
"""

from __future__ import annotations

import random

from .base import Example, register_task
from .facts import facts_prompt
from .generated import GeneratedTask

TIERS = ("L20", "L35", "L50")


def make_problem(tier: str, rng: random.Random) -> Example:
    if tier not in TIERS:
        raise ValueError(f"Unknown long_facts tier {tier!r}; valid tiers: {TIERS}")
    count = int(tier[1:]) + 2
    names = [f"x{k}" for k in rng.sample(range(1, 100), count)]
    values = [rng.randint(10, 99) for _ in range(count)]
    needed = rng.sample(range(count), 2)  # positions of the two facts the question uses
    op = rng.choice("+-")
    a, b = needed
    question = f"{names[a]}{op}{names[b]}"
    answer = values[a] + values[b] if op == "+" else values[a] - values[b]
    prompt, ranges, query = facts_prompt([f"{n}={v}" for n, v in zip(names, values)], question)
    spans = {"evidence": sorted([ranges[a], ranges[b]]), "query": [query]}
    solution = f"{question} = {values[a]}{op}{values[b]} = {answer}\nAnswer: {answer}"
    return Example(prompt, str(answer), tier, solution, spans)


@register_task
class LongFacts(GeneratedTask):
    """Two needed facts among 20-50 distractors (testbed T4); marks the needed facts (evidence) and the query."""

    name = "long_facts"
    tiers = TIERS
    train_tiers = ("L20", "L35")
    roles = ("evidence", "query")

    def make(self, tier: str, rng: random.Random) -> Example:
        return make_problem(tier, rng)
