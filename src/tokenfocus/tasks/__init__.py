"""Tasks (prompts, splits, gold answers and solutions, the reward rule) in one registry, and reward functions.

Adding a task: one file with a ``Task`` subclass decorated ``@register_task``, and its import below.
"""

from . import arithmetic, calculator, facts, gsm8k, json_answers, jsonl, long_facts, steps  # noqa: F401  (registers)
from .arithmetic import Problem, generate_problems
from .base import (
           TASKS,
           Example,
           Task,
           TaskOptions,
           build_task,
           parse_task,
           register_task,
)
from .gsm8k import DatasetError, load_gsm8k
from .rewards import (
           AnswerReward,
           DigitReward,
           RewardConfig,
           answers_match,
           extract_answer,
)

__all__ = ["TASKS", "AnswerReward", "DatasetError", "DigitReward", "Example", "Problem", "RewardConfig", "Task",
           "TaskOptions", "answers_match", "build_task", "extract_answer", "generate_problems", "load_gsm8k",
           "parse_task", "register_task"]
