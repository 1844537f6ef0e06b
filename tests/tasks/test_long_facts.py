"""Task T4 (long distractor facts): the two needed facts are marked as evidence and hold the operands, the gold
answer is right, the prompt length grows with the tier, and the splits are disjoint."""

from __future__ import annotations

import random
import re

from tokenfocus.tasks import build_task
from tokenfocus.tasks.long_facts import make_problem


def test_the_needed_facts_are_the_evidence_and_the_answer_is_right():
    rng = random.Random(0)
    for tier, facts in (("L20", 22), ("L35", 37), ("L50", 52)):
        for _ in range(20):
            example = make_problem(tier, rng)
            assert example.prompt.count("=") == facts
            a, op, b = re.search(r"Compute (x\d+)([+-])(x\d+)\.", example.prompt).groups()
            marked = {example.prompt[s:e] for s, e in example.spans["evidence"]}
            values = dict(f.split("=") for f in marked)
            assert set(values) == {a, b}
            expected = int(values[a]) + int(values[b]) if op == "+" else int(values[a]) - int(values[b])
            assert example.answer == str(expected) and example.solution.endswith(f"Answer: {expected}")
            (qs, qe), = example.spans["query"]
            assert example.prompt[qs:qe] == f"Compute {a}{op}{b}"


def test_splits_are_disjoint_and_the_task_marks_its_roles():
    task = build_task({"name": "long_facts"})
    train = {e.prompt for e in task.train_examples(30)}
    test = {e.prompt for e in task.eval_examples("test", 30, tiers=["L50"])}
    assert not train & test and task.roles == ("evidence", "query")
    assert 100 < len(max(test, key=len)) // 3 < 400  # roughly 150-400 tokens at ~3 characters a token
