"""Prompt sources and reward functions."""

from .arithmetic import Problem, generate_problems
from .gsm8k import DatasetError, load_gsm8k
from .rewards import AnswerReward, DigitReward, answers_match, extract_answer

__all__ = ["AnswerReward", "DigitReward", "DatasetError", "Problem", "answers_match", "extract_answer", "generate_problems",
           "load_gsm8k"]
