"""The task registry (tasks/base.py): a task defined here is registered and built like a shipped one; specs are
validated with the closest name suggested, every problem listed at once, and round-trip through ``spec()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from helpers import GSM8K_DIR
from tokenfocus.tasks import TASKS, AnswerReward, Example, Task, TaskOptions, build_task, parse_task, register_task
from tokenfocus.tasks.rewards import DigitReward, RewardConfig


@dataclass(frozen=True)
class CountdownOptions(TaskOptions):
    start: int = 10
    style: Literal["plain", "polite"] = "plain"

    def problems(self) -> list[str]:
        return super().problems() + ([f"start must be >= 1, got {self.start}"] if self.start < 1 else [])


class Countdown(Task):
    """"What comes before N?" for N = start + i: a task small enough to check every field by hand."""

    name = "countdown"
    Options = CountdownOptions
    splits = ("train", "test")

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        offset = 0 if split == "train" else 1000
        polite = "Please, " if self.options.style == "polite" else ""
        return [Example(f"{polite}what comes before {self.options.start + offset + seed + i}?",
                        str(self.options.start + offset + seed + i - 1), "T1") for i in range(n)]


@pytest.fixture
def countdown():
    """Register Countdown for one test and remove it from TASKS afterwards."""
    assert "countdown" not in TASKS
    register_task(Countdown)
    try:
        yield Countdown
    finally:
        TASKS.pop("countdown", None)


def test_a_task_defined_here_is_registered_and_built_from_a_spec(countdown):
    task = build_task({"name": "countdown", "start": 5, "n_train": 3, "style": "polite"})
    assert isinstance(task, Countdown) and task.options == CountdownOptions(n_train=3, seed=0, start=5, style="polite")
    assert [e.prompt for e in task.train_examples()] == [f"Please, what comes before {n}?" for n in (5, 6, 7)]
    assert [e.answer for e in task.train_examples(2)] == ["4", "5"]
    assert task.eval_examples("test", 1)[0].answer == "1004"
    with pytest.raises(ValueError, match="task 'countdown': split 'hard-test' is not one of \\('train', 'test'\\)"):
        task.eval_examples("hard-test", 1)
    assert task.sample_prompts(2) == ["Please, what comes before 1005?", "Please, what comes before 1006?"]
    with pytest.raises(ValueError, match="task 'countdown' has no gold solutions"):
        task.gold_examples(4)
    assert isinstance(task.reward(RewardConfig()), AnswerReward)
    assert isinstance(task.reward(RewardConfig(kind="digits")), DigitReward)
    assert task.relative_to(GSM8K_DIR) is task  # no file options: nothing to resolve
    with pytest.raises(ValueError, match="task 'countdown' is registered twice"):
        register_task(Countdown)


def test_the_fixture_removed_the_task_again():
    assert "countdown" not in TASKS
    with pytest.raises(ValueError, match="'countdown' is not a registered task"):
        build_task({"name": "countdown"})


def test_an_unknown_task_name_names_the_closest_task():
    with pytest.raises(ValueError, match=r"task.name: 'arithmetc' is not a registered task \(did you mean "
                                         r"'arithmetic'\?\); tasks: \['arithmetic', 'calculator', 'facts', 'gsm8k', "
                                         r"'json_answers', 'jsonl', 'long_facts', 'steps'\]"):
        build_task({"name": "arithmetc"})
    problems: list[str] = []
    assert parse_task("arithmetic", problems) is None
    assert problems == ["task: expected a mapping with a 'name', got 'arithmetic'"]


def test_an_unknown_option_names_the_closest_key(countdown):
    with pytest.raises(ValueError, match=r"task: unknown key 'tier' \(did you mean 'tiers'\?\)"):
        build_task({"name": "arithmetic", "tier": ["D1"]})
    with pytest.raises(ValueError, match=r"task: unknown key 'stat' \(did you mean 'start'\?\); valid: "
                                         r"\['n_train', 'seed', 'start', 'style'\]"):
        build_task({"name": "countdown", "stat": 3})


def test_every_problem_of_a_task_spec_is_listed_at_once(countdown):
    """Unknown key, wrong type, the Options' own range check and the task's check() in one message."""
    problems: list[str] = []
    assert parse_task({"name": "arithmetic", "n_train": 0, "tiers": ["D9"], "sed": 1, "seed": "zero"}, problems,
                      section="study.task") is None
    assert problems == [
        "study.task: unknown key 'sed' (did you mean 'seed'?); valid: ['n_train', 'seed', 'tiers']",
        "study.task.seed: expected int, got str ('zero')",
        "study.task.n_train must be >= 1, got 0",
        "study.task.tiers: unknown tier(s) ['D9']; valid tiers: ['D1', 'D2', 'D3', 'H1', 'H2', 'H3']",
    ]
    problems = []
    assert parse_task({"name": "countdown", "start": 0, "style": "rude"}, problems) is None
    assert problems == ["task.style: expected one of ('plain', 'polite'), got str ('rude')",
                        "task.start must be >= 1, got 0"]


@pytest.mark.parametrize("spec", [
    {"name": "arithmetic"},
    {"name": "arithmetic", "tiers": ["D2", "D3"], "n_train": 64, "seed": 3},
    {"name": "gsm8k", "path": str(GSM8K_DIR), "n_train": 8},
    {"name": "gsm8k"},
    {"name": "countdown", "start": 7, "style": "polite"},
])
def test_spec_round_trips(spec, countdown):
    task = build_task(spec)
    assert build_task(task.spec()).spec() == task.spec()
    assert task.spec()["name"] == spec["name"] and {**task.spec(), **spec} == task.spec()
