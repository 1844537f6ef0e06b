"""The ``trl:`` section of a train config: GRPOConfig fields, checked before anything loads.

Types come from GRPOConfig's own annotations (so a new TRL field is checked with no code here); numeric
strings are numbers (PyYAML reads ``learning_rate: 1e-5`` as the string "1e-5", which would reach the
optimizer). Ranges are explicit for the common fields: GRPOConfig itself accepts a negative learning rate or
temperature and a zero batch size, which then fail (or silently misbehave) only after the model has loaded.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from functools import lru_cache
from typing import Any, Callable

from ..options import coerce, matches, suggest, type_name

# GRPOConfig fields a train config must not set under trl:, and where they are set instead.
OWNED_TRL_FIELDS = {"output_dir": "run.dir", "seed": "run.seed", "save_steps": "run.save_steps",
                    "save_total_limit": "run.save_total_limit", "loss_type": "method (the loss preset)",
                    "top_entropy_quantile": "method (a quantile policy)", "epsilon": "method.loss.epsilon_low",
                    "epsilon_high": "method.loss.epsilon_high", "beta": "method.loss.beta",
                    "delta": "method.loss.delta", "importance_sampling_level": "method.loss.ratio_level"}
# Values GRPOConfig accepts beyond its annotation (its __post_init__ maps scale_rewards True/False to group/none).
EXTRA_KINDS = {"scale_rewards": bool}


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low:g}"


def _above(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > low), f"> {low:g}"


def _within(low: float, high: float, closed_low: bool = True, closed_high: bool = True):
    def ok(v):
        return (low <= v if closed_low else low < v) and (v <= high if closed_high else v < high)
    return ok, f"in {'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"


# field -> (check, the range in words); None values (TRL's "unset") are not checked.
RANGES = {
    "learning_rate": _at_least(0), "temperature": _above(0), "top_p": _within(0, 1, closed_low=False),
    "top_k": _at_least(0), "min_p": _within(0, 1), "repetition_penalty": _above(0),
    "per_device_train_batch_size": _at_least(1), "gradient_accumulation_steps": _at_least(1),
    "max_completion_length": _at_least(1), "num_generations": _at_least(2), "num_iterations": _at_least(1),
    "steps_per_generation": _at_least(1), "generation_batch_size": _at_least(1), "max_steps": _at_least(1),
    "num_train_epochs": _above(0), "logging_steps": _above(0), "warmup_steps": _at_least(0),
    "weight_decay": _at_least(0), "max_grad_norm": _at_least(0), "adam_beta1": _within(0, 1, closed_high=False),
    "adam_beta2": _within(0, 1, closed_high=False), "adam_epsilon": _above(0), "dataloader_num_workers": _at_least(0),
}


@lru_cache(maxsize=1)
def grpo_fields() -> dict[str, Any]:
    """GRPOConfig field -> its annotation (``Any`` where the annotation cannot be resolved)."""
    from trl import GRPOConfig

    try:
        hints = typing.get_type_hints(GRPOConfig)
    except (NameError, TypeError):
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(GRPOConfig) if f.init}


def check_trl(trl: dict, problems: list[str]) -> dict:
    """``trl`` with numeric strings converted; problems appended for owned, unknown, mistyped and out-of-range
    fields (every one, each naming the field)."""
    valid = grpo_fields()
    out = {}
    for key, value in trl.items():
        if not isinstance(key, str) or key not in valid:
            problems.append(f"trl: unknown GRPOConfig field {key!r}{suggest(key, valid)}")
            continue
        if key in OWNED_TRL_FIELDS:
            problems.append(f"trl.{key}: set it through {OWNED_TRL_FIELDS[key]} instead")
            continue
        kind = valid[key]
        value = coerce(value, kind)
        out[key] = value
        if not (matches(value, kind) or (key in EXTRA_KINDS and matches(value, EXTRA_KINDS[key]))):
            problems.append(f"trl.{key}: expected {type_name(kind)}, got {type(value).__name__} ({value!r})")
        elif isinstance(value, float) and math.isnan(value):
            problems.append(f"trl.{key}: expected a number, got nan")
        elif key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            check, words = RANGES[key]
            if not check(value):
                problems.append(f"trl.{key} must be {words}, got {value!r}")
    return out

