"""`tokenfocus study CONFIG.yaml`: the anchor/explorer study -- arms x seeds of normal `train` runs, evaluated.

The configuration is ``config.StudyConfig``. The starting model (the warm-up result, or ``model``) is
evaluated on each seed's eval problems into ``dir/initial-s<seed>/`` (arm "initial" in the index), so the
report shows what training changed.

Each arm x seed is a run directory ``dir/<arm>-s<seed>`` (same initial model, same data order and sampling
seed across arms). ``dir/study.json`` indexes them and is rewritten atomically after every run, so an
interrupted study resumes where it stopped: finished runs are skipped, a run with checkpoints is resumed.

A run that fails does not stop the study: its entry records ``{"status": "failed", "error": "<type>: <message>"}``
(and the traceback), the log names its arm and seed, the other runs go on, and ``run_study`` raises
``StudyRunsFailed`` at the end, after study.json is written (the report lists failed and missing runs). A run
stopped by SIGTERM still stops the study; rerunning the study retries the failed runs.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import yaml

from ..checkpoints import latest_complete_checkpoint
from ..config import StudyConfig
from ..config.study import INITIAL_ARM
from ..io import append_jsonl, atomic_write_text, write_json, write_jsonl

SAMPLE_SIGNALS = ("attention_entropy", "attention_mass", "predictive_entropy", "position")


def _status(run_dir: Path, splits) -> str:
    if all((run_dir / "eval" / f"{split}-final.json").is_file() for split in splits) and (run_dir / "final").is_dir():
        return "done"
    if (run_dir / "final").is_dir():
        return "trained"
    if latest_complete_checkpoint(run_dir)[0] is not None:
        return "partial"
    return "pending"  # nothing, or what a run killed before its first complete checkpoint left: started afresh


class StudyRunsFailed(ValueError):
    """Some runs of a study failed; the rest ran. ``failures``: [{arm, seed, error}]; ``root``: the study dir.
    A ValueError, so a caller that reports ValueErrors as user-facing errors reports this one too."""

    def __init__(self, root: Path, failures: list[dict]):
        self.root, self.failures = root, failures
        listed = "; ".join(f"{f['arm']} s{f['seed']} ({f['error']})" for f in failures)
        super().__init__(f"{len(failures)} run(s) failed: {listed}. Details in {root / 'study.json'}; run the study "
                         "again to retry them (finished runs are skipped)")


def _failed(entry: dict, error: Exception, log) -> dict:
    message = f"{type(error).__name__}: {error}"
    log(f"[{entry['arm']} s{entry['seed']}] failed: {message}")
    return {**entry, "status": "failed", "error": message, "traceback": traceback.format_exc()}


def _write_index(study: StudyConfig, entries: list[dict], started: float) -> None:
    write_json(Path(study.dir) / "study.json", {**study.index(), "runs": entries, "elapsed_s": time.time() - started})


def study_changes(old: dict, new: dict) -> list[str]:
    """What a study config changes against the study.yaml of its directory, beyond growing it: adding arms or
    seeds and rewording the description are how a study grows; anything else would make its runs disagree."""
    from .train import config_differences

    old = {**old, "arms": {k: v for k, v in (old.get("arms") or {}).items() if k in new.get("arms", {})}}
    old["seeds"] = [s for s in new.get("seeds", []) if s in (old.get("seeds") or [])]
    new = {**new, "arms": {k: v for k, v in new.get("arms", {}).items() if k in (old.get("arms") or {})},
           "seeds": old["seeds"]}
    return config_differences(old, new, ignore=("description",))


def run_study(study: StudyConfig, log=print, allow_config_change: bool = False) -> Path:
    """Run (or continue) the study in ``study.dir``; refuses a config that changes more than arms and seeds
    against the directory's study.yaml unless ``allow_config_change``."""
    from ..models import load_model
    from .train import run_train
    from .warmup import run_warmup

    root = Path(study.dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"study dir {root} is a file; choose a directory")
    saved = root / "study.yaml"
    if saved.is_file():
        changes = study_changes(yaml.safe_load(saved.read_text()) or {}, study.to_dict())
        if changes and not allow_config_change:
            raise ValueError(f"{root} holds a study whose config differs ({len(changes)} difference(s)):\n  "
                             + "\n  ".join(changes) + "\nadding arms or seeds is fine; for other changes use "
                             "another dir, or pass --allow-config-change")
        if changes:
            atomic_write_text(root / f"study-{int(time.time())}.yaml", saved.read_text())  # the old one is kept
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, yaml.safe_dump(study.to_dict(), sort_keys=False))
    started = time.time()
    entries = []
    splits = study.eval.splits
    if study.warmup:
        run_warmup(study.model, study.task, study.warmup, root / "warmup", log=log)
    for seed in study.seeds:  # seeds outer: an interrupted study has every arm at the first seed first
        initial = root / f"initial-s{seed}"  # the starting model on this seed's eval problems
        entry = {"arm": INITIAL_ARM, "seed": seed, "dir": initial.name}
        try:
            if not all((initial / "eval" / f"{split}-final.json").is_file() for split in splits):
                log(f"[initial s{seed}] evaluating the starting model {study.start_model}")
                model, tokenizer = load_model(study.start_model)
                _evaluate_splits(model, tokenizer, study, initial, seed)
            entries.append({**entry, "status": "done"})
        except Exception as error:  # noqa: BLE001 (recorded in study.json; the arms still run)
            entries.append(_failed(entry, error, log))
        for arm in study.arms:
            entry = {"arm": arm, "seed": seed, "dir": f"{arm}-s{seed}"}
            arm_started = time.time()
            try:
                config = study.run_config(arm, seed)
                run_dir = config.run_dir
                status = _status(run_dir, splits)
                if status == "done":
                    log(f"[{arm} s{seed}] done, skipped")
                    entries.append({**entry, "status": "done"})
                    continue
                if status in ("pending", "partial"):
                    log(f"[{arm} s{seed}] {'resuming' if status == 'partial' else 'training'} -> {run_dir}")
                    run_train(config, resume=status == "partial", overwrite=status == "pending", log=log)
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
            # One failing run must not cost the others: record it (study.json, the log) and go on.
            except Exception as error:  # noqa: BLE001
                entries.append(_failed(entry, error, log))
            _write_index(study, entries, started)
    _write_index(study, entries, started)
    failures = [{k: e[k] for k in ("arm", "seed", "error")} for e in entries if e["status"] == "failed"]
    if failures:
        raise StudyRunsFailed(root, failures)
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
