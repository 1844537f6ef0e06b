"""Prompt sources and reward functions."""

from .arithmetic import Problem, generate_problems

__all__ = ["Problem", "generate_problems"]
