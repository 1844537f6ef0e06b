"""Calculator tool (testbed T6, RL_TOKEN_CREDIT.md §0.4; HyperEyes' tool-call efficiency on text): sums and
products too long to do in one's head, with a calculator the model may call by writing ``<calc>EXPR</calc>``; the
environment evaluates EXPR safely and writes `` = VALUE`` after it.

    Compute 347+589+112. You may use the calculator: write <calc>EXPRESSION</calc> and its value follows.
    Answer in the form "Answer: N".
    scripted solution:  <calc>347+589</calc> = 936
                        <calc>936+112</calc> = 1048
                        Answer: 1048

Tiers: C2 (two 3-digit operands, +/-), C3 (three 3-digit operands), CM (2-digit x 2-digit). The scripted solution
makes one call per operation: its call count is the TRACE reference (``reference_calls``).

``safe_calc`` evaluates only integer literals with + - * and parentheses (an AST whitelist, at most 64 characters,
operands and result bounded): anything else is a malformed call, counted, never an exception.
"""

from __future__ import annotations

import ast
import random
import re

from .base import Example, register_task
from .generated import GeneratedTask
from .rewards import AnswerReward, RewardConfig, extract_answer
from .trace import ReferenceCache, trace_rewards

TIERS = ("C2", "C3", "CM")
INSTRUCTION = ('You may use the calculator: write <calc>EXPRESSION</calc> and its value follows. '
               'Answer in the form "Answer: N".')
CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
MAX_EXPRESSION = 64
LIMIT = 10**12


def safe_calc(expression: str) -> int | None:
    """The integer value of ``expression`` (digits, + - *, parentheses, spaces), or None when it is anything else,
    too long, or out of range."""
    if len(expression) > MAX_EXPRESSION or not expression.strip():
        return None
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < LIMIT:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            left, right = value(node.left), value(node.right)
            if left is None or right is None:
                return None
            result = left + right if isinstance(node.op, ast.Add) else left - right if isinstance(
                node.op, ast.Sub) else left * right
            return result if abs(result) < LIMIT else None
        return None

    return value(tree)


def make_problem(tier: str, rng: random.Random) -> Example:
    if tier == "C2":
        operands, ops = [rng.randint(100, 999), rng.randint(100, 999)], [rng.choice("+-")]
    elif tier == "C3":
        operands, ops = [rng.randint(100, 999) for _ in range(3)], [rng.choice("+-"), rng.choice("+-")]
    elif tier == "CM":
        operands, ops = [rng.randint(11, 99), rng.randint(11, 99)], ["*"]
    else:
        raise ValueError(f"Unknown calculator tier {tier!r}; valid tiers: {TIERS}")
    expression = str(operands[0]) + "".join(op + str(x) for op, x in zip(ops, operands[1:]))
    lines, running = [], operands[0]
    for op, operand in zip(ops, operands[1:]):
        result = safe_calc(f"{running}{op}{operand}")
        lines.append(f"<calc>{running}{op}{operand}</calc> = {result}")
        running = result
    solution = "\n".join(lines) + f"\nAnswer: {running}"
    return Example(f"Compute {expression}. {INSTRUCTION}", str(running), tier, solution)


def reference_calls(example: Example) -> int:
    """The scripted solution's number of calculator calls (TRACE's tc_ref)."""
    return len(CALL.findall(example.solution or ""))


def prompt_reference_calls(prompt: str) -> int:
    """The scripted solution's call count, read off a prompt: one call per operator of its expression."""
    found = re.search(r"Compute ([\d+*-]+)\.", prompt)
    return max(1, len(re.findall(r"[+*-]", found.group(1)))) if found else 1


class TraceReward:
    """HyperEyes' TRACE reward on T6, as a TRL reward function: the answer's correctness (None when the completion
    has no "Answer:" line) plus the group's rank bonuses from its tool calls (``tool_calls`` column of
    ``CalcToolLoop``), against the scripted call count, tightened per question when ``tighten`` (``cache``: a JSON
    file). The rows of one prompt are its consecutive ``num_generations`` completions (TRL's order)."""

    __name__ = "trace_reward"

    def __init__(self, tighten: bool = False, cache=None):
        self.answer = AnswerReward(answer_line_only=True)
        self.references = ReferenceCache(cache, tighten=tighten)
        self.errors = self.timeouts = 0

    def __call__(self, completions, answer, tool_calls=None, prompts=None, **_columns) -> list[float]:
        texts = [c if isinstance(c, str) else "".join(m["content"] for m in c) for c in completions]
        tool_calls = tool_calls if tool_calls is not None else [0] * len(texts)
        prompts = prompts if prompts is not None else [""] * len(texts)
        correct = self.answer(texts, answer)
        acc = [None if extract_answer(t, answer_line_only=True) is None else c for t, c in zip(texts, correct)]
        rewards = [0.0] * len(texts)
        start = 0
        while start < len(texts):  # one group: the run of rows with the same prompt
            end = start
            while end < len(texts) and prompts[end] == prompts[start]:
                end += 1
            key = str(prompts[start])
            scripted = prompt_reference_calls(key if isinstance(prompts[start], str) else str(prompts[start]))
            tc_ref, n_ref = self.references.reference(key, (scripted, scripted))
            rows = range(start, end)
            group = trace_rewards([acc[i] for i in rows], [tool_calls[i] for i in rows], [tool_calls[i] for i in rows],
                                  tc_ref, n_ref)
            for i, value in zip(rows, group):
                rewards[i] = value
            self.references.update(key, [acc[i] for i in rows], [tool_calls[i] for i in rows],
                                   [tool_calls[i] for i in rows])
            start = end
        return rewards

    def counters(self) -> dict:
        return {"reward/errors": 0.0, "reward/timeouts": 0.0}


@register_task
class Calculator(GeneratedTask):
    """Arithmetic with a calculator tool (testbed T6); gold solutions are scripted tool-using trajectories."""

    name = "calculator"
    tiers = TIERS
    train_tiers = ("C2", "C3")
    tool = "calc"  # training generates through integrations.calc_tool.CalcToolLoop

    def make(self, tier: str, rng: random.Random) -> Example:
        return make_problem(tier, rng)

    def reward(self, config: RewardConfig):
        """kind "trace": HyperEyes' TRACE (correctness + tool-efficiency rank bonuses); else the base rewards."""
        return TraceReward() if config.kind == "trace" else super().reward(config)
