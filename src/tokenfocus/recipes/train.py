"""`tokenfocus train CONFIG.yaml`: GRPO with token signals and policies, in a run directory that loses nothing.

Run directory: config.yaml (resolved), manifest.json, metrics.jsonl (append-only, one complete JSON object
per line, namespaced keys), checkpoint-N/ (model, optimizer, scheduler, RNG states, trainer state and a
manifest of their sizes and hashes, every run.save_steps; written aside and renamed into place whole, see
``tokenfocus.checkpoints``), final/ (also renamed into place). SIGTERM stops at the end of the current step
after saving a checkpoint; after SIGKILL, ``--resume`` continues from the newest complete checkpoint (the steps
logged after it are logged again, and readers keep the last record of each step). A new run never replaces a
non-empty directory without ``--overwrite``; a resume refuses a changed config without ``--allow-config-change``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import yaml
from transformers import PrinterCallback

from ..checkpoints import (MANIFEST, STAGING, checkpoint_dirs, clear_staging, latest_complete_checkpoint, publish,
                           set_aside, step_of)
from ..config import TrainConfig
from ..integrations.callbacks import GracefulStop, MetricsFile
from ..io import append_jsonl, atomic_write_text, holds_run_dir, manifest, write_json


# Keys of config.yaml that may differ on resume: where the run lives.
IGNORED_ON_RESUME = ("run.dir", "trl_resolved.output_dir")


def build_dataset(config: TrainConfig):
    """The task's training prompts as TRL's conversational dataset (answer and tier as extra columns, and the span
    marks as ``tf_spans`` when the task marks prompt roles)."""
    from datasets import Dataset

    from ..integrations.prompt_marks import SPANS_COLUMN
    from ..tasks.spans import encode_spans

    marked = bool(config.task.roles)
    return Dataset.from_list([{"prompt": [{"role": "user", "content": e.prompt}], "answer": e.answer, "tier": e.tier,
                               **({SPANS_COLUMN: encode_spans(e.spans)} if marked else {})}
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


def added_defaults() -> dict:
    """Keys a config.yaml written by an older tokenfocus may lack, with the value that reproduces its behaviour
    (a field added with a neutral default): the resolved loss fields."""
    from ..losses import LossConfig

    return {"resolved_method": {"loss": LossConfig().to_dict()}}


def config_differences(old: dict, new: dict, ignore=IGNORED_ON_RESUME, defaults: dict | None = None) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs between two config.yaml dicts. A key ``old``
    lacks is no difference when ``new`` holds its value in ``defaults`` (nested like the configs)."""
    def flat(data, prefix=""):
        out = {}
        for key, value in (data or {}).items():
            dotted = f"{prefix}{key}"
            out.update(flat(value, dotted + ".") if isinstance(value, dict) else {dotted: value})
        return out

    a, b = flat(old), flat(yaml.safe_load(yaml.safe_dump(new, sort_keys=False)))
    implied = flat(yaml.safe_load(yaml.safe_dump(defaults, sort_keys=False))) if defaults else {}
    a.update({key: value for key, value in implied.items() if key not in a and b.get(key, "(absent)") == value})
    return [f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}" for key in sorted(set(a) | set(b))
            if key not in ignore and a.get(key, "(absent)") != b.get(key, "(absent)")]


def prepare_run_dir(config: TrainConfig, resume: bool, overwrite: bool, allow_config_change: bool,
                    main_process: bool, log=print) -> Path | None:
    """Apply the run-directory rules before anything loads; returns the checkpoint to resume from.

    A new run refuses a non-empty directory unless ``overwrite``; ``resume`` takes the newest complete
    checkpoint (broken newer ones are moved to ``broken/`` and named), and refuses a config that differs from
    the run's ``config.yaml`` unless ``allow_config_change`` (the new one is then kept beside it)."""
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run.dir {run_dir} is a file; choose a directory")
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it: pass one of them")
    if not resume:
        if main_process and run_dir.is_dir() and any(run_dir.iterdir()):
            if not overwrite:
                found = ", ".join(sorted(p.name for p in run_dir.iterdir())[:6])
                hint = "pass --resume to continue it, " if checkpoint_dirs(run_dir) else ""
                raise ValueError(f"{run_dir} is not empty ({found}); {hint}pass --overwrite to replace it, or choose "
                                 "another run.dir (nothing is overwritten)")
            log(f"--overwrite: removing the previous contents of {run_dir}")
            shutil.rmtree(run_dir)
        return None
    chosen, skipped = latest_complete_checkpoint(run_dir)
    for checkpoint, problems in skipped:
        log(f"skipping {checkpoint.name}: {'; '.join(problems)}")
        if main_process and checkpoint.exists():
            log(f"  moved to {set_aside(checkpoint)}")
    if chosen is None:
        raise ValueError(f"--resume: no complete checkpoint-N in {run_dir}; start again with --overwrite")
    saved = run_dir / "config.yaml"
    if saved.is_file():
        differences = config_differences(yaml.safe_load(saved.read_text()), config.to_dict(),
                                         defaults=added_defaults())
        if differences and not allow_config_change:
            raise ValueError(f"--resume: the config differs from the run's config.yaml ({len(differences)} "
                             "difference(s)):\n  " + "\n  ".join(differences) + "\nresume with the same config, "
                             "or pass --allow-config-change to continue with this one (kept as "
                             f"config-resume-{step_of(chosen)}.yaml)")
        if differences and main_process:
            atomic_write_text(run_dir / f"config-resume-{step_of(chosen)}.yaml",
                              yaml.safe_dump(config.to_dict(), sort_keys=False))
    if main_process:
        clear_staging(run_dir)
    log(f"resuming from {chosen.name}")
    return chosen


# Trainer state in a checkpoint that a final model directory does not hold.
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "trainer_state.json",
                        "training_args.bin", MANIFEST)


def final_from_checkpoint(checkpoint: Path, run_dir: Path) -> None:
    """Publish ``final/`` from a complete checkpoint's model and tokenizer files (same weights: no training)."""
    staged = run_dir / STAGING / "final"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for path in checkpoint.iterdir():
        if path.is_file() and path.name not in TRAINING_STATE_FILES and not path.name.startswith("rng_state"):
            shutil.copy2(path, staged / path.name)
    publish(staged, run_dir / "final")


def open_run_dir(config, resume: bool, overwrite: bool, allow_config_change: bool, main_process: bool,
                 log=print) -> tuple[Path | None, bool]:
    """(checkpoint to resume from, whether the run is already complete): the run-directory rules
    (``prepare_run_dir``), then config.yaml (a new run) and manifest.json. ``config``: any run config with
    ``run_dir``, ``run.seed``, ``to_dict()`` and ``trl_args()``."""
    run_dir = config.run_dir
    chosen = prepare_run_dir(config, resume, overwrite, allow_config_change, main_process, log)
    max_steps = config.trl_args().get("max_steps", -1)
    if chosen is not None and 0 < max_steps <= step_of(chosen):
        # Killed after its last checkpoint: nothing is left to train (a resumed Trainer would run one more step).
        if main_process and not (run_dir / "final").is_dir():
            final_from_checkpoint(chosen, run_dir)
        log(f"{chosen.name} is the run's last step: it is complete ({run_dir / 'final'})")
        return chosen, True
    run_dir.mkdir(parents=True, exist_ok=True)
    if main_process:
        if chosen is None:  # a resumed run keeps the config.yaml that describes its first steps
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        write_json(run_dir / "manifest.json", manifest(seeds={"seed": config.run.seed},
                                                       resumed_from=chosen.name if chosen else None,
                                                       world_size=int(os.environ.get("WORLD_SIZE", "1"))))
    return chosen, False


@holds_run_dir
def run_train(config: TrainConfig, resume: bool = False, log=print, overwrite: bool = False,
              allow_config_change: bool = False):
    """Train; returns (run directory, trainer). Never overwrites a run without ``overwrite`` (see
    ``prepare_run_dir``)."""
    from trl import GRPOConfig

    from ..integrations.trl import TokenFocusGRPOTrainer
    from ..models import load_model

    run_dir = config.run_dir
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch set RANK
    loaded = None
    if config.teacher is not None:  # both tokenizers are compared before the run directory is touched
        loaded = load_model(config.model)
        teacher, teacher_tokenizer = load_model(config.teacher)  # loaded once; the trainer freezes it
        problem = vocabulary_mismatch(loaded[1], teacher_tokenizer)
        if problem:
            raise ValueError(f"teacher {config.teacher!r} and student {config.model!r} tokenize differently "
                             f"({problem}); on-policy distillation scores the student's token ids with the teacher, "
                             "so both need one tokenizer (e.g. two models of one family)")
    else:
        teacher = None
    chosen, complete = open_run_dir(config, resume, overwrite, allow_config_change, main_process, log)
    if complete:
        return run_dir, None
    model, tokenizer = loaded or load_model(config.model)
    method = config.method
    if method.loss.beta > 0:
        ensure_reference_path(model, run_dir)
    model.train()
    reward = config.task.reward(config.reward)
    stop = GracefulStop()
    tools = {}
    if config.task.tool == "calc":  # the model's <calc> calls run in the rollout (TRL's rollout_func)
        from ..integrations.calc_tool import CalcToolLoop

        tools["rollout_func"] = CalcToolLoop()
    trainer = TokenFocusGRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=[reward], args=GRPOConfig(**config.trl_args()),
        train_dataset=build_dataset(config), signals=method.signals, policy=method.policy, loss=method.loss,
        signal_source=config.signal_source, signal_pass=config.signal_pass, diagnostics=config.diagnostics,
        callbacks=[MetricsFile(run_dir / "metrics.jsonl", reward), stop], teacher=teacher, distill=config.distill,
        shared_prefix=config.shared_prefix, shared_prefill=config.shared_prefill,
        **tools,
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to metrics.jsonl (and report_to), not stdout
    if chosen is not None and main_process:
        append_jsonl(run_dir / "metrics.jsonl", {"event": "resume", "from": chosen.name, "time": time.time()})
    log(f"training {config.model} with policy {method.policy.name} ({trainer.tf_pass} signal pass) for "
        f"{trainer.args.max_steps} steps -> {run_dir}")
    train_and_publish(trainer, tokenizer, chosen, stop, run_dir, main_process, log)
    return run_dir, trainer


def vocabulary_mismatch(student, teacher) -> str | None:
    """What differs between two tokenizers (token ids, special tokens), or None."""
    a, b = student.get_vocab(), teacher.get_vocab()
    if a != b:
        only = sorted(set(a) ^ set(b))[:3]
        moved = [t for t in set(a) & set(b) if a[t] != b[t]][:3]
        return (f"vocabularies of {len(a)} and {len(b)} tokens; e.g. only in one: {only}" if only else
                f"the same tokens under other ids, e.g. {moved}")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(student, name) != getattr(teacher, name):
            return f"{name} {getattr(student, name)} vs {getattr(teacher, name)}"
    return None


def train_and_publish(trainer, tokenizer, chosen: Path | None, stop: GracefulStop, run_dir: Path, main_process: bool,
                      log=print) -> None:
    """``trainer.train`` (resumed from ``chosen``); then ``final/``, written aside and renamed so it is always whole,
    unless SIGTERM stopped the run (its last checkpoint is then the place to resume from)."""
    try:
        trainer.train(resume_from_checkpoint=str(chosen) if chosen is not None else None)
    finally:
        stop.restore()
    if stop.requested:
        log(f"stopped by SIGTERM at step {trainer.state.global_step}; continue with --resume")
        return
    staged = run_dir / STAGING / "final"
    if main_process:
        shutil.rmtree(staged, ignore_errors=True)
    trainer.save_model(str(staged))
    if main_process:
        tokenizer.save_pretrained(str(staged))
        publish(staged, run_dir / "final")
