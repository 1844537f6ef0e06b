"""Facts in context (testbed T2, RL_TOKEN_CREDIT.md §0.4): the numbers live in the prompt's facts, not in the
question, so the answer depends on reading the evidence -- PGPO's and Video-KTR's "visual" input on text.

    Let k=47, q=38. Compute k+q. Answer in the form "Answer: N".
        evidence spans: "k=47", "q=38"      query span: "Compute k+q"

Variable names are drawn per problem (the model must look them up). Tiers:
  F1  2 facts, 1-digit values, a+b or a-b
  F2  2 facts, 2-digit values, a+b or a-b
  F3  3 facts (one a distractor the question does not use), 2-digit values, a+b or a-b
  F4  4 facts (two distractors), 2-digit values, a+b or a-b: more context to search (the held-out hard tier)
  F5  3 facts, a*b+c with 1-digit factors and c in 1..9 (after the warm-up its pass rate is about 5 %)
Gold solution (for the SFT warm-up): "k+q = 47+38 = 85\nAnswer: 85".
"""

from __future__ import annotations

import random

from .base import Example, register_task
from .generated import GeneratedTask

TIERS = ("F1", "F2", "F3", "F4", "F5")
DISTRACTORS = {"F3": 1, "F4": 2}
NAMES = "abcdefghjkmnpqrstuvwxyz"  # no i, l, o: they read as digits
ANSWER_FORMAT = 'Answer in the form "Answer: N".'


def _values(tier: str, rng: random.Random) -> tuple[list[int], str]:
    """(fact values, expression over placeholders {0}, {1}, ...), the first values being the ones used."""
    if tier == "F1":
        return [rng.randint(0, 9), rng.randint(0, 9)], "{0}" + rng.choice("+-") + "{1}"
    if tier in ("F2", "F3", "F4"):
        values = [rng.randint(10, 99) for _ in range(2 + DISTRACTORS.get(tier, 0))]
        return values, "{0}" + rng.choice("+-") + "{1}"
    if tier == "F5":
        return [rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)], "{0}*{1}+{2}"
    raise ValueError(f"Unknown facts tier {tier!r}; valid tiers: {TIERS}")


def facts_prompt(facts: list[str], question: str) -> tuple[str, list[tuple[int, int]], tuple[int, int]]:
    """("Let f1, f2, .... Compute Q. <answer format>", each fact's character range, the query's range)."""
    head = "Let "
    prompt = f"{head}{', '.join(facts)}. Compute {question}. {ANSWER_FORMAT}"
    ranges, cursor = [], len(head)
    for fact in facts:
        ranges.append((cursor, cursor + len(fact)))
        cursor += len(fact) + 2
    query_start = prompt.index("Compute ")
    return prompt, ranges, (query_start, query_start + len("Compute ") + len(question))


def make_problem(tier: str, rng: random.Random) -> Example:
    values, shape = _values(tier, rng)
    names = rng.sample(NAMES, len(values))
    order = list(range(len(values)))
    rng.shuffle(order)  # the facts' order differs from the question's, and the distractor may come anywhere
    facts = [f"{names[i]}={values[i]}" for i in order]
    question = shape.format(*names[: shape.count("{")])
    numbers = shape.format(*(str(v) for v in values[: shape.count("{")]))
    answer = int(eval(numbers, {"__builtins__": {}}, {}))  # noqa: S307 (digits and + - * only)
    prompt, evidence, query = facts_prompt(facts, question)
    spans = {"evidence": evidence, "query": [query]}
    solution = f"{question} = {numbers} = {answer}\nAnswer: {answer}"
    return Example(prompt, str(answer), tier, solution, spans)


@register_task
class Facts(GeneratedTask):
    """Arithmetic over facts given in the prompt (testbed T2); marks the evidence (the facts) and the query."""

    name = "facts"
    tiers = TIERS
    train_tiers = ("F2", "F3")
    roles = ("evidence", "query")

    def make(self, tier: str, rng: random.Random) -> Example:
        return make_problem(tier, rng)
