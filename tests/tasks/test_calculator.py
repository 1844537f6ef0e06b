"""Task T6: the safe calculator accepts integer + - * and parentheses only (hostile expressions are None, never an
exception), and the scripted solutions are correct tool-using trajectories whose call count is the reference."""

from __future__ import annotations

import random

import pytest

from tokenfocus.tasks import build_task
from tokenfocus.tasks.calculator import CALL, make_problem, reference_calls, safe_calc


@pytest.mark.parametrize("expression, value", [("347+589", 936), (" 2*(3+4) ", 14), ("-5--5", 0), ("12*34", 408)])
def test_safe_calc_evaluates_integer_arithmetic(expression, value):
    assert safe_calc(expression) == value


@pytest.mark.parametrize("hostile", ["__import__('os').system('x')", "2**999999", "10/3", "1e9", "x+1", "", "(",
                                     "9" * 70, "999999999*999999999", "[1]*3", "True+1", "lambda: 1"])
def test_safe_calc_refuses_everything_else(hostile):
    assert safe_calc(hostile) is None


def test_scripted_solutions_use_the_tool_and_are_right():
    rng = random.Random(0)
    for tier, calls in (("C2", 1), ("C3", 2), ("CM", 1)):
        for _ in range(20):
            example = make_problem(tier, rng)
            assert reference_calls(example) == calls
            for expression in CALL.findall(example.solution):
                assert f"<calc>{expression}</calc> = {safe_calc(expression)}" in example.solution
            expression = example.prompt.split("Compute ")[1].split(".")[0]
            assert example.answer == str(safe_calc(expression))
            assert example.solution.endswith(f"Answer: {example.answer}")
    task = build_task({"name": "calculator"})
    assert {e.tier for e in task.train_examples(10)} == {"C2", "C3"}


def test_the_trace_reward_ranks_a_group_by_its_tool_calls():
    from tokenfocus.config import ConfigError, build_train_config
    from tokenfocus.tasks import RewardConfig
    from tokenfocus.tasks.calculator import TraceReward, prompt_reference_calls

    prompt = 'Compute 347+589+112. You may use the calculator'
    assert prompt_reference_calls(prompt) == 2
    reward = build_task({"name": "calculator"}).reward(RewardConfig(kind="trace"))
    assert isinstance(reward, TraceReward)
    completions = ["Answer: 1048", "Answer: 1048", "Answer: 1048", "Answer: 7", "no answer"]
    rewards = reward(completions, ["1048"] * 5, tool_calls=[2, 1, 4, 2, 0], prompts=[prompt] * 5)
    # good keys (1,1) then (2,2): +0.20, +0.05; bad (4,4): -0.02; wrong within [2, 3] calls: 0; no answer: -0.5
    assert rewards == pytest.approx([1.05, 1.20, 0.98, 0.0, -0.5])
    with pytest.raises(ValueError, match="only the calculator task"):
        build_task({"name": "arithmetic"}).reward(RewardConfig(kind="trace"))
    with pytest.raises(ConfigError, match="reward.kind: reward kind 'trace'"):
        build_train_config({"model": "tiny-llama", "task": {"name": "arithmetic"}, "reward": {"kind": "trace"}})
