"""`tokenfocus study CONFIG.yaml`: the anchor/explorer study -- arms x seeds of normal `train` runs, evaluated.

The configuration is ``config.StudyConfig``. The starting model (the warm-up result, or ``model``) is
evaluated on each seed's eval problems into ``dir/initial-s<seed>/`` (arm "initial" in the index), so the
report shows what training changed.

Each arm x seed is a run directory ``dir/<arm>-s<seed>`` (same initial model, same data order and sampling
seed across arms). ``dir/study.json`` indexes them and is rewritten atomically after every run, so an
interrupted study resumes where it stopped: finished runs are skipped, a run with checkpoints is resumed.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from ..config import StudyConfig
from ..config.study import INITIAL_ARM
from ..io import append_jsonl, write_json, write_jsonl

SAMPLE_SIGNALS = ("attention_entropy", "attention_mass", "predictive_entropy", "position")


def _status(run_dir: Path, splits) -> str:
    if all((run_dir / "eval" / f"{split}-final.json").is_file() for split in splits) and (run_dir / "final").is_dir():
        return "done"
    if (run_dir / "final").is_dir():
        return "trained"
    if any(run_dir.glob("checkpoint-*")):
        return "partial"
    return "pending"


def _write_index(study: StudyConfig, entries: list[dict], started: float) -> None:
    write_json(Path(study.dir) / "study.json", {**study.index(), "runs": entries, "elapsed_s": time.time() - started})


def run_study(study: StudyConfig, log=print) -> Path:
    from ..models import load_model
    from .train import run_train
    from .warmup import run_warmup

    root = Path(study.dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump(study.to_dict(), sort_keys=False))
    started = time.time()
    entries = []
    splits = study.eval.splits
    if study.warmup:
        run_warmup(study.model, study.task, study.warmup, root / "warmup", log=log)
    for seed in study.seeds:  # seeds outer: an interrupted study has every arm at the first seed first
        initial = root / f"initial-s{seed}"  # the starting model on this seed's eval problems
        if not all((initial / "eval" / f"{split}-final.json").is_file() for split in splits):
            log(f"[initial s{seed}] evaluating the starting model {study.start_model}")
            model, tokenizer = load_model(study.start_model)
            _evaluate_splits(model, tokenizer, study, initial, seed)
        entries.append({"arm": INITIAL_ARM, "seed": seed, "dir": initial.name, "status": "done"})
        for arm in study.arms:
            config = study.run_config(arm, seed)
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

    strict = bool(study.train.get("reward", {}).get("answer_line_only", False))
    for split in study.eval.splits:
        result = evaluate(model, tokenizer, EvalConfig(
            model=str(run_dir / "final"), task=study.task.spec(), split=split, n=study.eval.n, k=study.eval.k,
            max_new_tokens=study.eval.max_new_tokens, seed=seed, answer_line_only=strict))
        write_json(run_dir / "eval" / f"{split}-final.json", result)
        append_jsonl(run_dir / "metrics.jsonl", {"event": "eval", "time": time.time(),
                                                 f"eval/{split}/pass@1": result["pass@1"]})


def _write_samples(model, tokenizer, study: StudyConfig, run_dir: Path, seed: int) -> None:
    """A few held-out responses of the final model with their per-token signals (for the report's heatmaps)."""
    from ..rollout import generate_rollout
    from ..signals import compute_signals
    from .analyze import token_rows

    prompts = study.task.sample_prompts(study.samples, seed)
    rollout = generate_rollout(model, tokenizer, prompts, max_new_tokens=study.eval.max_new_tokens)
    values = compute_signals(model, rollout.batch, list(SAMPLE_SIGNALS))
    write_jsonl(run_dir / "samples" / "tokens.jsonl", token_rows(rollout, values, tokenizer))
