"""`tokenfocus train CONFIG.yaml`: GRPO with token signals and policies, in a run directory that loses nothing.

Run directory: config.yaml (resolved), manifest.json, metrics.jsonl (append-only, one complete JSON object
per line, namespaced keys), checkpoint-N/ (model, optimizer, scheduler, RNG states, trainer state, every
run.save_steps). SIGTERM stops at the end of the current step after saving a checkpoint; after SIGKILL,
``--resume`` continues from the last periodic checkpoint (the steps logged after it are logged again, and
readers keep the last record of each step).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import yaml
from transformers import PrinterCallback

from ..config import TrainConfig
from ..integrations.callbacks import GracefulStop, MetricsFile
from ..io import append_jsonl, atomic_write_text, manifest, write_json


def build_dataset(config: TrainConfig):
    """The task's training prompts as TRL's conversational dataset (answer and tier as extra columns)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": e.prompt}], "answer": e.answer, "tier": e.tier}
                              for e in config.task.train_examples()])


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
            shutil.rmtree(tmp, ignore_errors=True)
    model.config._name_or_path = str(target)


def checkpoints(run_dir: Path) -> list[Path]:
    found = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def run_train(config: TrainConfig, resume: bool = False, log=print):
    """Train; returns the run directory. Refuses to overwrite a run that has checkpoints unless resuming."""
    from trl import GRPOConfig

    from ..integrations.trl import TokenFocusGRPOTrainer
    from ..models import load_model

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
        write_json(run_dir / "manifest.json", manifest(seeds={"seed": config.run.seed},
                                                       resumed_from=existing[-1].name if resume else None,
                                                       world_size=int(os.environ.get("WORLD_SIZE", "1"))))
    model, tokenizer = load_model(config.model)
    method = config.method
    if method.loss.beta > 0:
        ensure_reference_path(model, run_dir)
    model.train()
    reward = config.task.reward(config.reward)
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
    log(f"training {config.model} with policy {method.policy.name} ({trainer.tf_pass} signal pass) for "
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
