"""`tokenfocus train` configuration: data, validated in full before any model loads.

    model: smollm2-135m-instruct             # any load_model spec
    task: {name: arithmetic, tiers: [D1, D2, D3], n_train: 256, seed: 0}
        # or {name: gsm8k, path: data/gsm8k/train.jsonl (or openai/gsm8k), n_train: 512}
    method: anchors20                        # a loss preset name, a method YAML path, or inline
                                             # {signals: [...], policy: {...}, loss: {preset: ..., ...}}
    signal_source: rollout                   # or current (policy reads the training forward's entropy)
    signal_pass: auto                        # fused (inside the training forward) when one step = one
                                             # generation batch, else separate (one no-grad forward); or force
    reward: {kind: answer, timeout_s: 5.0, format_bonus: 0.0}   # kind digits: dense smoke-test reward
    trl: {max_steps: 20, num_generations: 4, per_device_train_batch_size: 4, ...}   # any GRPOConfig field
    run: {dir: runs/anchors, seed: 0, save_steps: 5, save_total_limit: 2}
    diagnostics: {every: 10, ratio: 0.2, project_dim: 4096}   # optional gradient geometry (diag/... metrics)

Every problem is reported at once, each with the fix: unknown or duplicate keys (with the closest valid
key), wrong types, out-of-range values, a missing dataset file.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .losses import PRESETS, LossConfig
from .methods import ConfigError, MethodConfig, load_yaml
from .tasks.arithmetic import TIERS

TOP_KEYS = {"model": str, "task": dict, "method": (str, dict), "signal_source": str, "signal_pass": str,
            "reward": dict, "trl": dict, "run": dict, "diagnostics": dict}
TASK_KEYS = {"name": str, "tiers": list, "n_train": int, "seed": int, "path": str}
REWARD_KEYS = {"kind": str, "timeout_s": (int, float), "format_bonus": (int, float), "answer_line_only": bool}
REWARD_KINDS = ("answer", "digits")
RUN_KEYS = {"dir": str, "seed": int, "save_steps": int, "save_total_limit": int}
TASKS = ("arithmetic", "gsm8k")
# CPU-friendly defaults that differ from GRPOConfig's (GPU) defaults; any of them can be overridden.
TRL_DEFAULTS = {
    "max_steps": 10, "num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "max_completion_length": 32, "learning_rate": 1e-6, "temperature": 1.0, "logging_steps": 1,
    "use_cpu": True, "bf16": False, "gradient_checkpointing": False, "report_to": [], "lr_scheduler_type": "constant",
    "warmup_steps": 0, "save_strategy": "steps", "disable_tqdm": True,
}


@dataclass
class TrainConfig:
    model: str = "smollm2-135m-instruct"
    task: dict = field(default_factory=lambda: {"name": "arithmetic"})
    method: Any = "dapo"
    signal_source: str = "rollout"
    signal_pass: str = "auto"
    reward: dict = field(default_factory=dict)
    trl: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    diagnostics: dict | None = None  # gradient geometry every N steps (integrations.trl.DIAGNOSTIC_DEFAULTS)
    # Resolved by validate():
    resolved_method: MethodConfig | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.run.get("dir", "runs/train"))

    def trl_args(self) -> dict:
        args = {**TRL_DEFAULTS, **self.trl}
        args.update(output_dir=str(self.run_dir), seed=self.run.get("seed", 0),
                    save_steps=self.run.get("save_steps", 5))
        if "save_total_limit" in self.run:
            args["save_total_limit"] = self.run["save_total_limit"]
        if self.resolved_method is not None:  # TRL loads a reference model and its log-probs only when beta != 0
            args["beta"] = self.resolved_method.loss.beta
        return args

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("model", "task", "method", "signal_source", "signal_pass", "reward",
                                             "trl", "run", "diagnostics")}
        if self.resolved_method is not None:
            out["resolved_method"] = {"signals": self.resolved_method.signals, "policy": self.resolved_method.policy,
                                      "loss": self.resolved_method.loss.to_dict()}
        out["trl_resolved"] = self.trl_args()
        return out


def _suggest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(section: str, data: dict, schema: dict, problems: list[str]) -> None:
    for key, value in data.items():
        if key not in schema:
            problems.append(f"{section}: unknown key {key!r}{_suggest(key, schema)}; valid: {sorted(schema)}")
        elif not isinstance(value, schema[key]) or (schema[key] is int and isinstance(value, bool)):
            expected = schema[key].__name__ if isinstance(schema[key], type) else " or ".join(t.__name__ for t in schema[key])
            problems.append(f"{section}.{key}: expected {expected}, got {type(value).__name__} ({value!r})")


def resolve_method(method, problems: list[str]) -> MethodConfig | None:
    try:
        if isinstance(method, dict):
            return MethodConfig.from_dict(method, where="method")
        if method in PRESETS:
            preset = PRESETS[method]
            names = []
            for key in ("signal", "signals"):
                value = preset.policy.get(key)
                names += [value] if isinstance(value, str) else list(value or [])
            return MethodConfig([n for n in dict.fromkeys(names)], dict(preset.policy), preset.loss, method)
        path = Path(method)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                problems.append(f"method: file {path} not found")
                return None
            return MethodConfig.from_yaml(path)
        problems.append(f"method: {method!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a .yaml path")
    except (ConfigError, ValueError) as error:
        problems.append(str(error))
    return None


def validate(config: TrainConfig) -> TrainConfig:
    problems: list[str] = []
    task = config.task
    _check_keys("task", task, TASK_KEYS, problems)
    if task.get("name") not in TASKS:
        problems.append(f"task.name: {task.get('name')!r} is not one of {TASKS}")
    bad_tiers = [t for t in task.get("tiers", []) if t not in TIERS]
    if bad_tiers:
        problems.append(f"task.tiers: unknown tier(s) {bad_tiers}; valid tiers: {list(TIERS)}")
    if isinstance(task.get("n_train", 1), int) and task.get("n_train", 1) < 1:
        problems.append("task.n_train must be >= 1")
    if task.get("name") == "gsm8k":
        source = task.get("path", "openai/gsm8k")
        if source != "openai/gsm8k" and not Path(source).expanduser().exists():
            problems.append(f"task.path: dataset file {source} not found; pass a GSM8K .jsonl path or 'openai/gsm8k'")
    _check_keys("reward", config.reward, REWARD_KEYS, problems)
    if config.reward.get("kind", "answer") not in REWARD_KINDS:
        problems.append(f"reward.kind: {config.reward.get('kind')!r} is not one of {REWARD_KINDS}")
    if config.reward.get("timeout_s", 1) <= 0:
        problems.append("reward.timeout_s must be > 0")
    _check_keys("run", config.run, RUN_KEYS, problems)
    if isinstance(config.run.get("save_steps", 1), int) and config.run.get("save_steps", 1) < 1:
        problems.append("run.save_steps must be >= 1")
    if config.signal_source not in ("rollout", "current"):
        problems.append(f"signal_source: {config.signal_source!r} is not one of ('rollout', 'current')")
    if config.signal_pass not in ("auto", "separate", "fused"):
        problems.append(f"signal_pass: {config.signal_pass!r} is not one of ('auto', 'separate', 'fused')")
    if config.diagnostics is not None:
        from .integrations.trl import DIAGNOSTIC_DEFAULTS

        unknown = sorted(set(config.diagnostics) - set(DIAGNOSTIC_DEFAULTS))
        if unknown:
            problems.append(f"diagnostics: unknown key(s) {unknown}; valid: {sorted(DIAGNOSTIC_DEFAULTS)}")
        if int(config.diagnostics.get("every", 1)) < 1:
            problems.append("diagnostics.every must be >= 1")
    config.resolved_method = resolve_method(config.method, problems)
    _check_trl(config, problems)
    if problems:
        raise ConfigError("invalid train config:\n  - " + "\n  - ".join(problems))
    return config


def _check_trl(config: TrainConfig, problems: list[str]) -> None:
    from trl import GRPOConfig

    valid = {f.name for f in dataclasses.fields(GRPOConfig)}
    owned = {"output_dir": "run.dir", "seed": "run.seed", "save_steps": "run.save_steps",
             "loss_type": "method (the loss preset)", "top_entropy_quantile": "method (a quantile policy)",
             "epsilon": "method.loss.epsilon_low", "epsilon_high": "method.loss.epsilon_high",
             "beta": "method.loss.beta", "delta": "method.loss.delta",
             "importance_sampling_level": "method.loss.ratio_level"}
    for key in config.trl:
        if key in owned:
            problems.append(f"trl.{key}: set it through {owned[key]} instead")
        elif key not in valid:
            problems.append(f"trl: unknown GRPOConfig field {key!r}{_suggest(key, valid)}")
    if any(p.startswith("trl") for p in problems):
        return
    try:
        args = GRPOConfig(**config.trl_args())
    except (ValueError, TypeError) as error:
        problems.append(f"trl: GRPOConfig rejected the settings: {error}")
        return
    if args.max_steps < 1:
        problems.append("trl.max_steps must be >= 1")


def load_train_config(path: Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = load_yaml(path)
    problems = []
    for key, value in data.items():
        if key not in TOP_KEYS:
            problems.append(f"unknown top-level key {key!r}{_suggest(key, TOP_KEYS)}; valid: {sorted(TOP_KEYS)}")
        elif not isinstance(value, TOP_KEYS[key]):
            problems.append(f"{key}: expected {TOP_KEYS[key]}, got {type(value).__name__}")
    if problems:
        raise ConfigError(f"{path}: invalid train config:\n  - " + "\n  - ".join(problems))
    config = TrainConfig(**data)
    # Relative file paths in a config are relative to the config file, not to the working directory.
    if isinstance(config.method, str) and config.method.endswith((".yaml", ".yml")) and not Path(config.method).is_absolute():
        config.method = str(path.parent / config.method)
    task_path = config.task.get("path") if isinstance(config.task, dict) else None
    if isinstance(task_path, str) and task_path != "openai/gsm8k" and not Path(task_path).expanduser().is_absolute():
        config.task["path"] = str(path.parent / task_path)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if key:
            getattr(config, section)[key] = value
        else:
            setattr(config, section, value)
    return validate(config)


def loss_config(config: TrainConfig) -> LossConfig:
    return config.resolved_method.loss
