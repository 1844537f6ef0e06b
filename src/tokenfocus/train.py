"""`tokenfocus train CONFIG.yaml`: GRPO with token signals and policies, in a run directory that loses nothing.

Run directory: config.yaml (resolved), manifest.json, metrics.jsonl (append-only, one complete JSON object
per line, namespaced keys), checkpoint-N/ (model, optimizer, scheduler, RNG states, trainer state, every
run.save_steps). SIGTERM stops at the end of the current step after saving a checkpoint; after SIGKILL,
``--resume`` continues from the last periodic checkpoint (the steps logged after it are logged again, and
readers keep the last record of each step).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import yaml
from transformers import PrinterCallback, TrainerCallback

from .io import append_jsonl, atomic_write_text, latest_metrics, manifest, write_json  # noqa: F401 (re-export)
from .train_config import TrainConfig

_RENAMES = {"reward": "reward/mean", "reward_std": "reward/std", "loss": "loss/train", "learning_rate": "optim/lr",
            "grad_norm": "optim/grad_norm", "epoch": "progress/epoch", "num_tokens": "progress/num_tokens",
            "entropy": "signal/predictive_entropy_train/mean", "frac_reward_zero_std": "reward/frac_zero_std"}
_OURS = ("signal/", "policy/", "loss/", "diag/", "eval/", "time/", "reward/", "optim/", "progress/", "completion/")


def namespaced(logs: dict) -> dict:
    """TRL's log keys under tokenfocus namespaces; ours pass through."""
    out = {}
    for key, value in logs.items():
        if key in _RENAMES:
            out[_RENAMES[key]] = value
        elif key.startswith(_OURS):
            out[key] = value
        elif key.startswith("rewards/"):
            out["reward/" + key.removeprefix("rewards/")] = value
        elif key.startswith("completions/"):
            out["completion/" + key.removeprefix("completions/")] = value
        else:
            out["trl/" + key] = value
    return out


class MetricsFile(TrainerCallback):
    """Appends each log as one namespaced JSON line; adds step time and reward-function counters."""

    def __init__(self, path: Path, reward_fn=None):
        self.path = path
        self.reward_fn = reward_fn
        self.last_time = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.step_seconds = now - self.last_time
        self.last_time = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "time": time.time(), **namespaced(logs)}
        if "train_runtime" in logs:  # the end-of-training summary, not a step record
            row["event"] = "train_end"
        if hasattr(self, "step_seconds"):
            row["time/step_s"] = self.step_seconds
        if self.reward_fn is not None:
            row.update(self.reward_fn.counters())
            if "reward/answer_reward/mean" in row:
                row["reward/accuracy"] = row["reward/answer_reward/mean"]
        append_jsonl(self.path, row)


class GracefulStop(TrainerCallback):
    """On SIGTERM: finish the current step, save a checkpoint, stop."""

    def __init__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def build_dataset(config: TrainConfig):
    from datasets import Dataset

    from .tasks import generate_problems, load_gsm8k

    task = config.task
    n = task.get("n_train", 256)
    if task["name"] == "arithmetic":
        problems = generate_problems(n, split="train", tiers=task.get("tiers"), seed=task.get("seed", 0))
        rows = [{"prompt": p.prompt, "answer": str(p.answer), "tier": p.tier} for p in problems]
    else:
        rows = load_gsm8k(task.get("path", "openai/gsm8k"), "train", limit=n)
    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"],
                               "tier": r["tier"]} for r in rows])


def method_beta(config: TrainConfig) -> float:
    return config.resolved_method.loss.beta if config.resolved_method is not None else 0.0


def ensure_reference_path(model, run_dir: Path) -> None:
    """TRL builds the KL reference model from ``config._name_or_path``; a model built in memory (tiny models)
    has none, so the initial weights are saved once to ``run_dir/reference`` (kept for resumes)."""
    current = str(model.config._name_or_path or "")
    if current and Path(current).is_dir():
        return
    target = run_dir / "reference"
    if not (target / "config.json").is_file():
        tmp = run_dir / f".reference.tmp{os.getpid()}"
        model.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    model.config._name_or_path = str(target)


def checkpoints(run_dir: Path) -> list[Path]:
    found = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def run_train(config: TrainConfig, resume: bool = False, log=print):
    """Train; returns the run directory. Refuses to overwrite a run that has checkpoints unless resuming."""
    from trl import GRPOConfig

    from .integrations.trl import TokenFocusGRPOTrainer
    from .models import load_model
    from .tasks import AnswerReward, DigitReward

    run_dir = config.run_dir
    existing = checkpoints(run_dir)
    if resume and not existing:
        raise ValueError(f"--resume: no checkpoint-N directory in {run_dir}; start without --resume")
    if not resume and existing:
        raise ValueError(f"{run_dir} already holds {existing[-1].name}; pass --resume to continue it, or choose "
                         "another run.dir (nothing is overwritten)")
    run_dir.mkdir(parents=True, exist_ok=True)
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch set RANK
    if main_process:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        write_json(run_dir / "manifest.json", manifest(seeds={"seed": config.run.get("seed", 0)},
                                                       resumed_from=existing[-1].name if resume else None,
                                                       world_size=int(os.environ.get("WORLD_SIZE", "1"))))
    model, tokenizer = load_model(config.model)
    if method_beta(config) > 0:
        ensure_reference_path(model, run_dir)
    model.train()
    if config.reward.get("kind", "answer") == "digits":
        reward = DigitReward()
    else:
        reward = AnswerReward(timeout_s=config.reward.get("timeout_s", 5.0),
                              format_bonus=config.reward.get("format_bonus", 0.0),
                              answer_line_only=config.reward.get("answer_line_only", False))
    method = config.resolved_method
    stop = GracefulStop()
    trainer = TokenFocusGRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=[reward], args=GRPOConfig(**config.trl_args()),
        train_dataset=build_dataset(config), signals=method.signals, policy=method.policy, loss=method.loss,
        signal_source=config.signal_source, signal_pass=config.signal_pass, diagnostics=config.diagnostics,
        callbacks=[MetricsFile(run_dir / "metrics.jsonl", reward), stop],
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to metrics.jsonl (and report_to), not stdout
    if resume and main_process:
        append_jsonl(run_dir / "metrics.jsonl", {"event": "resume", "from": existing[-1].name, "time": time.time()})
    log(f"training {config.model} with policy {method.policy.get('name')} ({trainer.tf_pass} signal pass) for "
        f"{trainer.args.max_steps} steps -> {run_dir}")
    try:
        trainer.train(resume_from_checkpoint=str(existing[-1]) if resume else None)
    finally:
        stop.restore()
    if stop.requested:
        log(f"stopped by SIGTERM at step {trainer.state.global_step}; continue with --resume")
    else:
        trainer.save_model(str(run_dir / "final"))
        tokenizer.save_pretrained(str(run_dir / "final"))
    return run_dir, trainer
