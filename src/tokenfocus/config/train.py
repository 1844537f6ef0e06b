"""`tokenfocus train` configuration: data, validated in full before any model loads.

    model: smollm2-135m-instruct             # any load_model spec
    task: {name: arithmetic, tiers: [D1, D2, D3], n_train: 256, seed: 0}   # any registered task + its options
        # or {name: gsm8k, path: data/gsm8k/train.jsonl (or openai/gsm8k), n_train: 512}
    method: anchors20                        # a method preset, a method YAML path, or inline
                                             # {signals: [...], policy: {...}, loss: {preset: ..., ...}}
    signal_source: rollout                   # or current (policy reads the training forward's entropy)
    signal_pass: auto                        # fused (inside the training forward) when one step = one
                                             # generation batch, else separate (one no-grad forward); or force
    reward: {kind: answer, timeout_s: 5.0, format_bonus: 0.0, answer_line_only: false}   # tasks.RewardConfig
    trl: {max_steps: 20, num_generations: 4, per_device_train_batch_size: 4, ...}   # any GRPOConfig field
    run: {dir: runs/anchors, seed: 0, save_steps: 10, save_total_limit: 2}
    diagnostics: {every: 10, ratio: 0.2, project_dim: 4096}   # optional gradient geometry (diag/... metrics)
    teacher: {model: runs/teacher/final, form: advantage, coef: 0.05, gate: all}   # optional on-policy distillation
        # form advantage: dGRPO B (+ gate: failed = HyperEyes' OPD on failed rollouts); form loss: dGRPO A
        # (+ estimator: full | topk | sampled_k1 | sampled_k3, topk: 20); losses.distill.DistillConfig

Every problem is reported at once, each with the fix: unknown or duplicate keys (with the closest valid
key), wrong types, out-of-range values (TRL's too), a missing dataset file, TRL fields that the method owns,
policy options the policy refuses when it runs, a model spec that cannot load, a run directory that is a file.
Numeric strings count as numbers (PyYAML reads ``1e-5`` as a string).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..diagnostics import DiagnosticsConfig
from ..losses.distill import DistillConfig
from ..models import DEFAULT_MODEL, check_model_spec
from ..options import check_keys, parse_section
from ..signals import SignalPass, SignalSource, required_roles
from ..tasks import RewardConfig, Task, parse_task
from .dry_run import layers_problem
from .method import MethodConfig, resolve_method
from .schema import ConfigError, load_yaml
from .trl_fields import OWNED_TRL_FIELDS, check_trl  # noqa: F401 (OWNED_TRL_FIELDS re-exported)

TOP_KEYS = {"model": str, "task": dict, "method": str | int | dict, "signal_source": SignalSource,
            "signal_pass": SignalPass, "reward": dict, "trl": dict, "run": dict, "diagnostics": dict | None,
            "teacher": dict | None, "shared_prefix": bool, "shared_prefill": bool}
# CPU-friendly defaults that differ from GRPOConfig's (GPU) defaults; any of them can be overridden. The device:
# ``device_defaults`` (a GPU when there is one).
TRL_DEFAULTS = {
    "max_steps": 10, "num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "max_completion_length": 32, "learning_rate": 1e-6, "temperature": 1.0, "logging_steps": 1,
    "bf16": False, "gradient_checkpointing": False, "report_to": [], "lr_scheduler_type": "constant",
    "warmup_steps": 0, "save_strategy": "steps", "disable_tqdm": True,
}


def device_defaults() -> dict:
    """``use_cpu`` unless the user set it: the GPU where CUDA sees one (the same config trains on a laptop CPU and on
    a GPU machine; precision stays float32 unless ``bf16: true`` is set under trl:)."""
    import torch

    return {"use_cpu": not torch.cuda.is_available()}


@dataclass(frozen=True)
class RunConfig:
    """The run directory, the run's seed and checkpointing (every ``save_steps`` optimizer steps)."""

    dir: str = "runs/train"
    seed: int = 0
    save_steps: int = 10
    save_total_limit: int | None = None

    def problems(self) -> list[str]:
        found = [f"save_steps must be >= 1, got {self.save_steps}"] if self.save_steps < 1 else []
        if self.save_total_limit is not None and self.save_total_limit < 1:
            found.append(f"save_total_limit must be >= 1, got {self.save_total_limit}")
        found += [f"dir: {p}" for p in run_dir_problems(self.dir)]
        return found


def run_dir_problems(path: str) -> list[str]:
    """A run directory must be creatable: not empty, not an existing file, no file among its parents."""
    if not path.strip():
        return ["must be a directory path, got an empty string"]
    try:
        target = Path(path).expanduser()
        for folder in (target, *target.parents):
            if folder.exists() and not folder.is_dir():
                what = "is an existing file" if folder == target else f"is inside {folder}, which is a file"
                return [f"{path!r} {what}; choose a directory path"]
    except (OSError, ValueError) as error:  # a NUL byte, a name too long for the file system
        return [f"{path!r} is not a usable path ({error})"]
    return []


@dataclass(frozen=True)
class TrainConfig:
    model: str
    task: Task
    method: MethodConfig
    signal_source: SignalSource
    signal_pass: SignalPass
    reward: RewardConfig
    trl: dict
    run: RunConfig
    diagnostics: DiagnosticsConfig | None
    source: dict  # the config as given (after path resolution and overrides)
    teacher: str | None = None  # the teacher's model spec (same vocabulary as the student)
    distill: DistillConfig | None = None
    # one forward of each group's shared prompt in the training forward and the teacher's scoring
    # (integrations/shared_prefix.py); numerically the plain forward, much cheaper on long prompts
    shared_prefix: bool = False
    # TRL's transformers generation prefills each group's prompt once (its KV cache goes to the group's rows)
    shared_prefill: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir)

    def trl_args(self) -> dict:
        args = {**TRL_DEFAULTS, **device_defaults(), **self.trl}
        args.update(output_dir=self.run.dir, seed=self.run.seed, save_steps=self.run.save_steps,
                    beta=self.method.loss.beta)  # TRL loads a reference model and its log-probs only when beta != 0
        if self.run.save_total_limit is not None:
            args["save_total_limit"] = self.run.save_total_limit
        return args

    def to_dict(self) -> dict:
        """What a run's config.yaml records: the config as given, the resolved method and GRPOConfig fields."""
        return {**self.source, "task": self.task.spec(), "resolved_method": self.method.to_dict(), "run": asdict(self.run),
                "trl_resolved": self.trl_args()}


def build_train_config(data: dict, base: Path | None = None, where: str = "train config",
                       check_model: bool = True) -> TrainConfig:
    """Validate a train config given as data; file paths in it are relative to ``base``. Raises ConfigError
    listing every problem. ``check_model=False`` skips the model spec check (a study's warm-up model does not
    exist until the warm-up has run)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: invalid train config: expected a mapping, got {data!r}")
    check_keys("top level", data, TOP_KEYS, problems)
    if problems:
        raise ConfigError(f"{where}: invalid train config:\n  - " + "\n  - ".join(problems))
    task_spec = data.get("task", {"name": "arithmetic"})
    task = None
    if isinstance(task_spec.get("name"), str):
        task = parse_task(task_spec, problems, base=base)
    else:
        problems.append(f"task.name: expected a registered task name, got {task_spec.get('name')!r}")
    model = data.get("model", DEFAULT_MODEL)
    if check_model:
        problems += [f"model: {p}" for p in check_model_spec(model)]
    reward = parse_section(RewardConfig, data.get("reward"), "reward", problems)
    run = parse_section(RunConfig, data.get("run"), "run", problems)
    diagnostics = None
    if data.get("diagnostics") is not None:
        diagnostics = parse_section(DiagnosticsConfig, data["diagnostics"], "diagnostics", problems)
        layers = layers_problem(diagnostics.layers) if diagnostics is not None else None
        if layers:
            problems.append(f"diagnostics.{layers}")
            diagnostics = None
    method = None
    try:
        method = resolve_method(data.get("method", "dapo"), base)
    except (ConfigError, ValueError) as error:
        problems.append(str(error))
    signal_source = data.get("signal_source", "rollout")
    if method is not None and task is not None:
        problems += [f"method: {p}" for p in task.check_roles(required_roles(method.signals))]
    if method is not None and signal_source == "current" and any(s.name != "predictive_entropy" for s in method.signals):
        problems.append("signal_source: 'current' reads the training forward's predictive entropy only; the method "
                        f"computes {[s.label for s in method.signals]}")
    trl = check_trl(dict(data.get("trl") or {}), problems)
    teacher, distill = _teacher(data.get("teacher"), problems, check_model)
    if method is not None and data.get("teacher") is None:
        needing = [spec.label for spec in method.signals if "teacher" in spec.entry.requires]
        if needing:
            problems.append(f"method: signals {needing} read a teacher's scores, and the config has no teacher: add "
                            "teacher: {model: SPEC} (with coef: 0 the teacher only scores tokens)")
    if task is not None and reward is not None:
        try:
            task.reward(reward)  # a reward kind the task cannot score is refused here, before any model loads
        except ValueError as error:
            problems.append(f"reward.kind: {error}")
    shared_prefix = bool(data.get("shared_prefix", False))
    if shared_prefix and method is not None:
        problems += _shared_prefix_problems(method, data.get("signal_pass", "auto"))
    shared_prefill = bool(data.get("shared_prefill", False))
    if shared_prefill:
        problems += _shared_prefill_problems(task, trl)
    if problems:
        raise ConfigError(f"{where}: invalid train config:\n  - " + "\n  - ".join(problems))
    config = TrainConfig(str(model), task, method, signal_source, data.get("signal_pass", "auto"), reward, trl, run,
                         diagnostics, dict(data), teacher, distill, shared_prefix, shared_prefill)
    _check_grpo_args(config, problems)
    if problems:
        raise ConfigError(f"{where}: invalid train config:\n  - " + "\n  - ".join(problems))
    return config


def _shared_prefix_problems(method: MethodConfig, signal_pass: str) -> list[str]:
    """What ``shared_prefix: true`` cannot serve: forwards whose hooks read every row's prompt positions."""
    problems = []
    if method.loss.sink_decorrelation > 0:
        problems.append("shared_prefix: the method's sink decorrelation reads every row's prompt hidden states; drop "
                        "shared_prefix or the decorrelation")
    attention = [s.label for s in method.signals if "attention" in s.entry.requires]
    if attention and signal_pass != "separate":
        problems.append(f"shared_prefix: signals {attention} may be recorded in the training forward, which needs "
                        "every row's whole sequence; set signal_pass: separate (one extra no-grad forward) or drop "
                        "shared_prefix")
    return problems


def _shared_prefill_problems(task: Task | None, trl: dict) -> list[str]:
    """What ``shared_prefill: true`` cannot serve: generation that is not TRL's transformers ``generate``."""
    if task is not None and task.tool:
        return [f"shared_prefill: the {task.tool} task's tool loop generates the rollouts itself; drop shared_prefill"]
    if any(trl.get(key) for key in ("use_vllm", "use_transformers_continuous_batching", "use_transformers_paged")):
        return ["shared_prefill: vLLM and continuous batching cache the prompts themselves; drop shared_prefill"]
    return []


def _teacher(spec: dict | None, problems: list[str], check_model: bool) -> tuple[str | None, DistillConfig | None]:
    """(teacher model spec, distill settings) of ``teacher: {model, form, coef, gate, estimator, topk}``."""
    if spec is None:
        return None, None
    spec = dict(spec)
    model = spec.pop("model", None)
    if not isinstance(model, str) or not model.strip():
        problems.append("teacher.model: give the teacher's model spec (a directory, .gguf, hub id); it must share "
                        "the student's tokenizer")
    elif check_model:
        problems += [f"teacher.model: {p}" for p in check_model_spec(model)]
    distill = parse_section(DistillConfig, spec, "teacher", problems)
    return model, distill


def _check_grpo_args(config: TrainConfig, problems: list[str]) -> None:
    from trl import GRPOConfig

    try:
        GRPOConfig(**config.trl_args())
    # GRPOConfig's (and TrainingArguments') own checks raise ValueError mostly, but a field combination can also
    # end in an ImportError (an optional backend) or a TypeError; each is a problem of the settings, listed.
    except Exception as error:  # noqa: BLE001
        problems.append(f"trl: GRPOConfig rejected the settings: {type(error).__name__}: {error}")


def apply_overrides(data: dict, overrides: dict[str, Any] | None) -> dict:
    """``{"run.dir": ..., "trl.max_steps": ...}`` applied to a copy of the config data."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            data[section] = value
        elif isinstance(data.setdefault(section, {}), dict):
            data[section][key] = value
        # else: the section is not a mapping; validation reports it (the override has nowhere to go)
    return data


def load_train_config(path: Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    # Relative file paths in a config are relative to the config file, not to the working directory.
    return build_train_config(apply_overrides(load_yaml(path), overrides), base=path.parent, where=str(path))
