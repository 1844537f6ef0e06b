"""Tasks T2 (facts in context) and T3 (ordered steps): gold answers, spans, tiers, splits."""

import random
import re

import pytest

from tokenfocus.tasks import build_task
from tokenfocus.tasks.spans import check_spans, shuffled_steps


def _run_steps(prompt: str) -> int:
    start = int(re.match(r"Start at (\d+)", prompt).group(1))
    for word, operand in re.findall(r"then (add|subtract|multiply by) (\d+)", prompt):
        start = {"add": start + int(operand), "subtract": start - int(operand), "multiply by": start * int(operand)}[word]
    return start


@pytest.mark.parametrize("name", ["facts", "steps"])
def test_every_tier_draws_valid_problems_with_disjoint_splits(name):
    task = build_task({"name": name})
    for tier in task.tiers:
        train = task.examples("train", 60, seed=0, tiers=[tier])
        test = task.examples("test", 30, seed=0, tiers=[tier])
        assert not {e.prompt for e in train} & {e.prompt for e in test}
        assert len({e.prompt for e in train}) == 60
        for e in train + test:
            assert e.tier == tier and check_spans(e.prompt, e.spans) == []
            assert set(e.spans) == set(task.roles)
            assert e.solution.endswith(f"\nAnswer: {e.answer}")
    assert task.examples("test", 0, seed=0, tiers={task.tiers[0]: 20, task.tiers[-1]: 10}) == \
        task.examples("test", 0, seed=0, tiers={task.tiers[0]: 20, task.tiers[-1]: 10})
    assert len(task.train_examples()) == 256


def test_facts_answers_follow_the_evidence():
    task = build_task({"name": "facts"})
    for e in task.examples("train", 250, tiers=["F1", "F2", "F3", "F4", "F5"]):
        facts = dict(fact.split("=") for fact in (e.prompt[a:b] for a, b in e.spans["evidence"]))
        query = e.prompt[slice(*e.spans["query"][0])].removeprefix("Compute ")
        expression = "".join(facts.get(ch, ch) for ch in query)
        assert int(eval(expression)) == int(e.answer)  # noqa: S307
        assert len(facts) == {"F1": 2, "F2": 2, "F3": 3, "F4": 4, "F5": 3}[e.tier]
        if e.tier in ("F3", "F4"):  # one or two facts are distractors the question does not use
            assert sum(name in query for name in facts) == 2


def test_steps_answers_follow_the_steps_and_shuffling_changes_most():
    task = build_task({"name": "steps"})
    examples = task.examples("train", 200, tiers=["S2", "S3", "S4"])
    changed = 0
    for e in examples:
        assert _run_steps(e.prompt) == int(e.answer)
        assert len(e.spans["steps"]) == int(e.tier[1])
        assert e.prompt[slice(*e.spans["evidence"][0])] == re.match(r"Start at (\d+)", e.prompt).group(1)
        changed += _run_steps(shuffled_steps(e.prompt, e.spans["steps"], random.Random(0))) != int(e.answer)
    assert changed / len(examples) > 0.7  # order matters: a multiplication and an addition in every problem


def test_unknown_tiers_are_named():
    with pytest.raises(ValueError, match="tiers: unknown tier\\(s\\) \\['D2'\\]; valid tiers: \\['F1'"):
        build_task({"name": "facts", "tiers": ["D2"]})
    with pytest.raises(ValueError, match="Unknown steps tier"):
        build_task({"name": "steps"}).examples("test", 3, tiers=["S9"])
