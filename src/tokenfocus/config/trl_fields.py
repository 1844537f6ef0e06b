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
# GRPOConfig fields that only TRL's own loss reads (GRPOTrainer._compute_loss, which tokenfocus's trainer replaces
# with losses.compute_loss): set to anything but TRL's default they would be silently ignored, so they are refused,
# each with what to do instead. (The vllm_importance_sampling_* fields are honoured: compute_loss applies the ratio.)
_ENTROPY = "tokenfocus has no adaptive entropy controller; set a fixed entropy bonus with method.loss.entropy_coef"
_OBJECTIVE = "tokenfocus has no {} objective; choose the objective with method.loss.objective ('clipped' or 'cispo')"
LOSS_ONLY_TRL_FIELDS = {
    "off_policy_mask_threshold": "tokenfocus's loss has no off-policy sequence mask (OPSM); leave it unset",
    "use_bias_correction_kl": "set method.loss.kl_ratio_correction instead",
    "entropy_coef": "set method.loss.entropy_coef instead",
    "use_adaptive_entropy": _ENTROPY, "entropy_coef_min": _ENTROPY, "entropy_coef_max": _ENTROPY,
    "entropy_coef_delta": _ENTROPY, "entropy_target": _ENTROPY,
    "sapo_temperature_neg": _OBJECTIVE.format("SAPO"), "sapo_temperature_pos": _OBJECTIVE.format("SAPO"),
    "vespo_k_pos": _OBJECTIVE.format("VESPO"), "vespo_lambda_pos": _OBJECTIVE.format("VESPO"),
    "vespo_k_neg": _OBJECTIVE.format("VESPO"), "vespo_lambda_neg": _OBJECTIVE.format("VESPO"),
    "router_aux_loss_coef": ("tokenfocus's loss adds no MoE router auxiliary loss; leave it unset, or 0 to train an "
                             "MoE model without it"),
}
# Values besides TRL's default that tokenfocus's loss honours (0: no router auxiliary loss, which is what it does).
LOSS_ONLY_ALSO_ACCEPTED = {"router_aux_loss_coef": (0,)}
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


def _fields(config_class) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(config_class)
    except (NameError, TypeError):
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class) if f.init}


@lru_cache(maxsize=1)
def grpo_fields() -> dict[str, Any]:
    """GRPOConfig field -> its annotation (``Any`` where the annotation cannot be resolved)."""
    from trl import GRPOConfig

    return _fields(GRPOConfig)


@lru_cache(maxsize=1)
def dpo_fields() -> dict[str, Any]:
    """DPOConfig field -> its annotation."""
    from trl import DPOConfig

    return _fields(DPOConfig)


@lru_cache(maxsize=1)
def sft_fields() -> dict[str, Any]:
    """SFTConfig field -> its annotation."""
    from trl import SFTConfig

    return _fields(SFTConfig)


# DPOConfig / SFTConfig fields a dpo or sft config must not set under trl:, and where they are set instead.
OWNED_DPO_FIELDS = {"output_dir": "run.dir", "seed": "run.seed", "save_steps": "run.save_steps",
                    "save_total_limit": "run.save_total_limit"}
DPO_RANGES = {"beta": (lambda v: v > 0, "> 0"), "label_smoothing": (lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
              "max_length": (lambda v: v >= 1, ">= 1")}


@lru_cache(maxsize=1)
def grpo_defaults() -> dict[str, Any]:
    """GRPOConfig field -> its default value (fields with a plain default only)."""
    from trl import GRPOConfig

    return {f.name: f.default for f in dataclasses.fields(GRPOConfig) if f.default is not dataclasses.MISSING}


def _ignored_by_our_loss(key: str, value: Any) -> bool:
    if key not in LOSS_ONLY_TRL_FIELDS:
        return False
    accepted = (grpo_defaults().get(key), *LOSS_ONLY_ALSO_ACCEPTED.get(key, ()))
    return not any(value == ok and isinstance(value, bool) == isinstance(ok, bool) for ok in accepted)


def check_trl(trl: dict, problems: list[str], trainer: str = "grpo") -> dict:
    """``trl`` with numeric strings converted; problems appended for owned, unknown, mistyped and out-of-range
    fields, and (GRPO) for loss settings only TRL's own loss reads set to a non-default value (every one, each naming
    the field). ``trainer``: "grpo", "dpo" or "sft" (the fields of GRPOConfig, DPOConfig or SFTConfig)."""
    grpo = trainer == "grpo"
    valid, owned, name = {"grpo": (grpo_fields(), OWNED_TRL_FIELDS, "GRPOConfig"),
                          "dpo": (dpo_fields(), OWNED_DPO_FIELDS, "DPOConfig"),
                          "sft": (sft_fields(), OWNED_DPO_FIELDS, "SFTConfig")}[trainer]
    ranges = RANGES if grpo else {**{k: v for k, v in RANGES.items() if k in valid},
                                  **{k: v for k, v in DPO_RANGES.items() if k in valid}}
    out = {}
    for key, value in trl.items():
        if not isinstance(key, str) or key not in valid:
            problems.append(f"trl: unknown {name} field {key!r}{suggest(key, valid)}")
            continue
        if key in owned:
            problems.append(f"trl.{key}: set it through {owned[key]} instead")
            continue
        kind = valid[key]
        value = coerce(value, kind)
        out[key] = value
        if not (matches(value, kind) or (key in EXTRA_KINDS and matches(value, EXTRA_KINDS[key]))):
            problems.append(f"trl.{key}: expected {type_name(kind)}, got {type(value).__name__} ({value!r})")
        elif isinstance(value, float) and math.isnan(value):
            problems.append(f"trl.{key}: expected a number, got nan")
        elif grpo and _ignored_by_our_loss(key, value):
            problems.append(f"trl.{key}={value!r} would be ignored: only TRL's own loss reads it, and tokenfocus "
                            f"trains with its own; {LOSS_ONLY_TRL_FIELDS[key]}")
        elif key in ranges and isinstance(value, (int, float)) and not isinstance(value, bool):
            check, words = ranges[key]
            if not check(value):
                problems.append(f"trl.{key} must be {words}, got {value!r}")
    return out

