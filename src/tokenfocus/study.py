"""`tokenfocus study CONFIG.yaml`: the anchor/explorer study — arms x seeds of normal `train` runs, evaluated.

    model: smollm2-135m-instruct
    task: {name: arithmetic, tiers: [D1, D2, D3], n_train: 256}
    train: {reward: {...}, trl: {...}, diagnostics: {every: 5}, save_steps: 10}   # shared by every arm
        # diagnostics_arms: [full]   restricts the (costly) gradient diagnostics to some arms
    arms: {full: dapo, random20: random20, anchors20: anchors20, explorers20: explorers20,
           low2high: low2high, anchors20_all: {policy: {...}, loss: {preset: dapo}}}   # method per arm
    seeds: [0, 1, 2]
    eval: {splits: [test, hard-test], n: 64, k: 0, max_new_tokens: 48}
    samples: 6          # responses per arm rendered as token heatmaps in the report
    dir: runs/study
    warmup: {n_train: 512, epochs: 1, learning_rate: 1.0e-5}   # optional SFT on gold solutions first
                        # (RL_TOKEN_CREDIT.md §0.4): every arm then starts from dir/warmup/final

The starting model (the warm-up result, or ``model``) is evaluated on each seed's eval problems into
``dir/initial-s<seed>/`` (arm "initial" in the index), so the report shows what training changed.

Each arm x seed is a run directory ``dir/<arm>-s<seed>`` (same initial model, same data order and sampling
seed across arms). ``dir/study.json`` indexes them and is rewritten atomically after every run, so an
interrupted study resumes where it stopped: finished runs are skipped, a run with checkpoints is resumed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .io import write_json, write_jsonl
from .methods import ConfigError, load_yaml
from .train_config import TrainConfig, _check_keys, validate

STUDY_KEYS = {"model": str, "task": dict, "train": dict, "arms": dict, "seeds": list, "eval": dict,
              "samples": int, "dir": str, "description": str, "warmup": dict}
TRAIN_KEYS = ("reward", "trl", "diagnostics", "diagnostics_arms", "save_steps", "signal_pass")
EVAL_DEFAULTS = {"splits": ["test", "hard-test"], "n": 64, "k": 0, "max_new_tokens": 48}


@dataclass
class StudyConfig:
    model: str
    task: dict
    arms: dict
    train: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])
    eval: dict = field(default_factory=dict)
    samples: int = 6
    dir: str = "runs/study"
    description: str = ""
    warmup: dict | None = None

    @property
    def start_model(self) -> str:
        """What every arm trains from: the warm-up's result when there is a warm-up, else ``model``."""
        return str(Path(self.dir) / "warmup" / "final") if self.warmup else self.model

    def run_config(self, arm: str, seed: int) -> TrainConfig:
        method = self.arms[arm]
        signal_source = "rollout"
        if isinstance(method, dict) and "signal_source" in method:
            method = dict(method)
            signal_source = method.pop("signal_source")
        run = {"dir": str(Path(self.dir) / f"{arm}-s{seed}"), "seed": seed,
               "save_steps": self.train.get("save_steps", 10)}
        return TrainConfig(model=self.start_model, task=copy.deepcopy(self.task), method=copy.deepcopy(method),
                           signal_source=signal_source, signal_pass=self.train.get("signal_pass", "auto"),
                           reward=dict(self.train.get("reward", {})), trl=dict(self.train.get("trl", {})), run=run,
                           diagnostics=copy.deepcopy(self.train.get("diagnostics")) if self._diagnosed(arm) else None)

    def _diagnosed(self, arm: str) -> bool:
        arms = self.train.get("diagnostics_arms")
        return arms is None or arm in arms


def load_study_config(path: Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}")
    data = load_yaml(path)
    problems = []
    _check_keys("study", data, STUDY_KEYS, problems)
    for key in ("model", "task", "arms"):
        if key not in data:
            problems.append(f"missing required key {key!r}")
    for key in data.get("train", {}) if isinstance(data.get("train"), dict) else []:
        if key not in TRAIN_KEYS:
            problems.append(f"train: unknown key {key!r}; valid: {list(TRAIN_KEYS)}")
    if "initial" in (data.get("arms") or {}):
        problems.append("arms: 'initial' is reserved for the starting model's evaluation; rename that arm")
    unknown_eval = set(data.get("eval", {}) or {}) - set(EVAL_DEFAULTS)
    if unknown_eval:
        problems.append(f"eval: unknown key(s) {sorted(unknown_eval)}; valid: {sorted(EVAL_DEFAULTS)}")
    if isinstance(data.get("warmup"), dict):
        from .warmup import WARMUP_KEYS, WarmupConfig

        _check_keys("warmup", data["warmup"], WARMUP_KEYS, problems)
        if not any("warmup" in p for p in problems):
            problems.extend(WarmupConfig(**data["warmup"]).problems())
    if problems:
        raise ConfigError(f"{path}: invalid study config:\n  - " + "\n  - ".join(problems))
    if isinstance(data.get("task", {}).get("path"), str) and data["task"]["path"] != "openai/gsm8k":
        data["task"]["path"] = str(path.parent / data["task"]["path"])
    arms = {}
    for arm, method in data["arms"].items():  # method YAML paths are relative to the study config
        if isinstance(method, int):  # YAML reads an unquoted preset name such as 8020 as a number
            method = str(method)
        if isinstance(method, str) and method.endswith((".yaml", ".yml")) and not Path(method).is_absolute():
            method = str(path.parent / method)
        arms[arm] = method
    data["arms"] = arms
    study = StudyConfig(**data)
    study.eval = {**EVAL_DEFAULTS, **study.eval}
    errors = []
    for arm in study.arms:  # every arm's train config is validated before anything runs
        try:
            validate(study.run_config(arm, study.seeds[0]))
        except ConfigError as error:
            errors.append(f"arm {arm!r}: {error}")
    if errors:
        raise ConfigError(f"{path}:\n" + "\n".join(errors))
    return study


def _status(run_dir: Path, splits) -> str:
    if all((run_dir / "eval" / f"{split}-final.json").is_file() for split in splits) and (run_dir / "final").is_dir():
        return "done"
    if (run_dir / "final").is_dir():
        return "trained"
    if any(run_dir.glob("checkpoint-*")):
        return "partial"
    return "pending"


def _write_index(study: StudyConfig, entries: list[dict], started: float) -> None:
    write_json(Path(study.dir) / "study.json", {
        "description": study.description, "model": study.model, "task": study.task, "arms": study.arms,
        "seeds": study.seeds, "eval": study.eval, "runs": entries, "elapsed_s": time.time() - started,
    })


def run_study(study: StudyConfig, log=print) -> Path:
    from .models import load_model
    from .train import run_train

    root = Path(study.dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump(vars(study), sort_keys=False))
    started = time.time()
    entries = []
    splits = study.eval["splits"]
    if study.warmup:
        from .warmup import WarmupConfig, run_warmup

        run_warmup(study.model, study.task, WarmupConfig(**study.warmup), root / "warmup", log=log)
    for seed in study.seeds:  # seeds outer: an interrupted study has every arm at the first seed first
        initial = root / f"initial-s{seed}"  # the starting model on this seed's eval problems
        if not all((initial / "eval" / f"{split}-final.json").is_file() for split in splits):
            log(f"[initial s{seed}] evaluating the starting model {study.start_model}")
            model, tokenizer = load_model(study.start_model)
            _evaluate_splits(model, tokenizer, study, initial, seed)
        entries.append({"arm": "initial", "seed": seed, "dir": initial.name, "status": "done"})
        for arm in study.arms:
            config = validate(study.run_config(arm, seed))
            run_dir = config.run_dir
            status = _status(run_dir, splits)
            entry = {"arm": arm, "seed": seed, "dir": run_dir.name}
            if status == "done":
                log(f"[{arm} s{seed}] done, skipped")
                entries.append({**entry, "status": "done"})
                continue
            arm_started = time.time()
            if status in ("pending", "partial"):
                log(f"[{arm} s{seed}] {'resuming' if status == 'partial' else 'training'} -> {run_dir}")
                _, trainer = run_train(config, resume=status == "partial", log=log)
                if not (run_dir / "final").is_dir():  # stopped by SIGTERM: leave the rest for --resume
                    entries.append({**entry, "status": "partial"})
                    _write_index(study, entries, started)
                    log("study interrupted; run it again to continue")
                    return root
            model, tokenizer = load_model(str(run_dir / "final"))
            _evaluate_splits(model, tokenizer, study, run_dir, seed)
            if study.samples:
                _write_samples(model, tokenizer, study, run_dir, seed)
            entries.append({**entry, "status": "done", "seconds": time.time() - arm_started})
            _write_index(study, entries, started)
    _write_index(study, entries, started)
    return root


def _evaluate_splits(model, tokenizer, study: StudyConfig, run_dir: Path, seed: int) -> None:
    """Greedy pass@1 on every eval split -> run_dir/eval/<split>-final.json and an eval line in metrics.jsonl.

    Answers are read with the training reward's rule (``answer_line_only``), so eval and reward agree.
    """
    from .evaluate import EvalConfig, evaluate
    from .io import append_jsonl

    strict = bool(study.train.get("reward", {}).get("answer_line_only", False))
    for split in study.eval["splits"]:
        result = evaluate(model, tokenizer, EvalConfig(
            model=str(run_dir / "final"), task=study.task["name"], split=split, n=study.eval["n"],
            k=study.eval["k"], max_new_tokens=study.eval["max_new_tokens"], seed=seed,
            path=study.task.get("path"), answer_line_only=strict))
        write_json(run_dir / "eval" / f"{split}-final.json", result)
        append_jsonl(run_dir / "metrics.jsonl", {"event": "eval", "time": time.time(),
                                                 f"eval/{split}/pass@1": result["pass@1"]})


def _write_samples(model, tokenizer, study: StudyConfig, run_dir: Path, seed: int) -> None:
    """A few held-out responses of the final model with their per-token signals (for the report's heatmaps)."""
    from .analyze import _token_rows
    from .rollout import generate_rollout
    from .signals import compute_signals
    from .tasks import generate_problems

    prompts = [p.prompt for p in generate_problems(study.samples, split="test", seed=seed)]
    rollout = generate_rollout(model, tokenizer, prompts, max_new_tokens=study.eval["max_new_tokens"])
    values = compute_signals(model, rollout.batch, ["attention_entropy", "attention_mass", "predictive_entropy",
                                                    "position"])
    write_jsonl(run_dir / "samples" / "tokens.jsonl", _token_rows(rollout, values, tokenizer))
