"""Task T5 (JSON answers): worked steps in precedence order, a reward that reads the last "answer", and perturbed
pairs that differ from the gold in 1-2 digits of one result and are never identical to it."""

from __future__ import annotations

import json
import random
import re

from tokenfocus.tasks import build_task
from tokenfocus.tasks.json_answers import (
    JsonAnswerReward,
    gold_json,
    perturb_digits,
    perturbed_pairs,
    steps_of,
)


def test_steps_follow_precedence_and_the_gold_is_json():
    assert steps_of("6*7+5") == ["6*7=42", "42+5=47"]
    assert steps_of("5+6*7") == ["6*7=42", "5+42=47"]
    assert steps_of("12+34-56") == ["12+34=46", "46-56=-10"]
    assert steps_of("47*6") == ["47*6=282"]
    gold = json.loads(gold_json("3*4*5"))
    assert gold == {"steps": ["3*4=12", "12*5=60"], "answer": 60}


def test_reward_reads_the_last_answer():
    reward = JsonAnswerReward()
    completions = ['{"steps": [], "answer": 47}', '{"answer": 46} then {"answer": 47}', '{"answer": 4}', "47"]
    assert reward(completions, ["47"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert reward([[{"role": "assistant", "content": '{"answer": -3}'}]], ["-3"]) == [1.0]


def test_perturbed_pairs_differ_in_one_or_two_digits_of_one_number():
    task = build_task({"name": "json_answers", "tiers": ["D2", "D3"]})
    rows = perturbed_pairs(task.gold_examples(200, seed=0), seed=0)
    for row in rows:
        chosen, rejected = row["chosen"], row["rejected"]
        assert chosen != rejected and len(chosen) == len(rejected)
        changed = [i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b]
        assert 1 <= len(changed) <= 2 and all(chosen[i].isdigit() and rejected[i].isdigit() for i in changed)
        json.loads(rejected)  # still valid JSON
        assert not re.search(r"[=:] 0\d|=0\d", rejected)  # no leading zero introduced
    assert perturbed_pairs(task.gold_examples(5, seed=1), seed=3) == perturbed_pairs(task.gold_examples(5, seed=1),
                                                                                     seed=3)
    assert perturb_digits('{"steps": ["2+4=6"], "answer": 6}', random.Random(0)) != '{"steps": ["2+4=6"], "answer": 6}'


def test_on_policy_pairs_prefer_a_sampled_near_miss_and_count_the_fallbacks():
    from tokenfocus.tasks.json_answers import digit_edit, on_policy_pairs

    assert digit_edit('{"answer": 85}', '{"answer": 86}') == 1
    assert digit_edit('{"answer": 85}', '{"answer": 8}') is None and digit_edit("a=1", "b=1") is None
    task = build_task({"name": "json_answers", "tiers": ["D2"]})
    examples = task.gold_examples(3, seed=0)
    gold = [e.solution for e in examples]
    near = gold[0][:-2] + str((int(gold[0][-2]) + 3) % 10) + gold[0][-1]
    groups = [[(gold[0], 1.0), ("junk", 0.0), (near, 0.0)],  # a near miss exists: it is the rejected
              [(gold[1], 1.0), ("junk", 0.0)],                # none: the chosen is perturbed
              [("junk", 0.0), ("more junk", 0.0)]]             # no correct response: no pair
    rows, counts = on_policy_pairs(examples, groups, seed=0)
    assert counts == {"sampled": 1, "perturbed": 1, "no_correct": 1}
    assert rows[0]["rejected"] == near and rows[0]["rejected_source"] == "sampled"
    assert rows[1]["rejected_source"] == "perturbed" and digit_edit(rows[1]["chosen"], rows[1]["rejected"]) in (1, 2)
