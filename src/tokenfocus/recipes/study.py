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

import hashlib
import json
import shutil
import time
import traceback
from pathlib import Path

import yaml

from ..checkpoints import checkpoint_dirs, latest_complete_checkpoint
from ..config import StudyConfig
from ..config.study import INITIAL_ARM, TEACHER_ARM
from ..io import DirInUse, append_jsonl, atomic_write_text, hold, run_lock, write_json, write_jsonl
from .start_check import (GREEDY_AGREEMENT_MIN, SAMPLED_SAME_MIN, compare_starts, describe, known_fingerprints,
                          merge_equivalents)

DRIFT_FILE = "drift.json"
SAMPLES_FILE = "samples/tokens.jsonl"
SAMPLE_SIGNALS = ("attention_entropy", "attention_mass", "predictive_entropy", "position")
# Added to the samples of a task that marks the role: where the counterfactual signals put their weight.
ROLE_SIGNALS = {"evidence": ({"name": "context_dependency"},),
                "steps": ({"name": "token_attribution", "counterfactual": "steps_shuffled",
                           "label": "order_attribution"},)}


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


def _write_index(study: StudyConfig, entries: list[dict], started: float, extra: dict | None = None) -> None:
    """study.json: this slice's entries merged over the entries already there (other slices, other machines)."""
    index_path = Path(study.dir) / "study.json"
    kept = []
    if index_path.is_file():
        old = json.loads(index_path.read_text())
        ours = {(e["arm"], e["seed"]) for e in entries}
        kept = [e for e in old.get("runs", []) if (e["arm"], e["seed"]) not in ours]
        extra = {**{k: old[k] for k in ("warmup_fingerprint",) if k in old}, **(extra or {})}
        if old.get("warmup_equivalents") or extra.get("warmup_equivalents"):
            extra["warmup_equivalents"] = merge_equivalents(old, extra)
    write_json(index_path, {**study.index(), **(extra or {}), "runs": kept + entries,
                            "elapsed_s": time.time() - started})


PRESENTATION_KEYS = ("description", "note", "see_also", "claims")  # what the report shows, not what the runs did


def study_changes(old: dict, new: dict) -> list[str]:
    """What a study config changes against the study.yaml of its directory, beyond growing it: adding arms or
    seeds and rewording what the report shows (description, note, see-also, the claims it judges) are how a study
    grows; anything else would make its runs disagree. A study.yaml written before ``note`` and ``see_also`` existed
    lacks them."""
    from .train import config_differences

    old = {**old, "arms": {k: v for k, v in (old.get("arms") or {}).items() if k in new.get("arms", {})}}
    old["seeds"] = [s for s in new.get("seeds", []) if s in (old.get("seeds") or [])]
    new = {**new, "arms": {k: v for k, v in new.get("arms", {}).items() if k in (old.get("arms") or {})},
           "seeds": old["seeds"]}
    return config_differences(old, new, ignore=PRESENTATION_KEYS)


def _select(names: list, chosen, what: str) -> list:
    if chosen is None:
        return list(names)
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ValueError(f"--{what}: {unknown} are not {what} of the study; its {what}: {list(names)}")
    return [n for n in names if n in chosen]


def run_study(study: StudyConfig, log=print, allow_config_change: bool = False, arms=None, seeds=None,
              export: Path | None = None, rebuilt_warmup: bool = False) -> Path:
    """Run (or continue) the study in ``study.dir``; refuses a config that changes more than arms and seeds
    against the directory's study.yaml unless ``allow_config_change``.

    ``arms`` / ``seeds``: run only this slice (a study grows slice by slice, on one machine or several);
    ``export``: after every finished run, copy the light files of the study (``export_light``) there;
    ``rebuilt_warmup``: a warm-up re-created here that differs bitwise from the export's starting model may continue
    the study if it behaves as that model on the held-out sets (``start_check``).
    """
    from ..models import load_model
    from .warmup import run_warmup

    arms = _select(list(study.arms), arms, "arms")
    seeds = _select(list(study.seeds), seeds, "seeds")
    root = Path(study.dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"study dir {root} is a file; choose a directory")
    if export is not None and Path(export).exists() and not Path(export).is_dir():
        raise ValueError(f"--export {export} is a file; choose a directory")
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
    entries: list[dict] = []
    extra: dict = {}
    # The teacher the study makes (longer SFT of ``model``) is made and scored by the slices that distil: a slice of
    # teacher-free arms runs beside the process that makes it and leaves it alone. It is made before the student's
    # warm-up (neither needs the other): on a new machine a slice of teacher-free arms makes the warm-up while a
    # distilling slice started beside it makes the teacher, then reuses that warm-up (one maker per model).
    distils = study.teacher is not None and any(study.distils(arm) for arm in arms)
    if distils and study.teacher.sft is not None:
        run_warmup(study.model, study.task, study.teacher.warmup(), root / TEACHER_ARM, log=log)
    if study.warmup:
        run_warmup(study.model, study.task, study.warmup, root / "warmup", log=log)
    score_teacher = study.teacher is not None and (distils or study.teacher.sft is None)
    start_model = None

    def starting_model():
        nonlocal start_model
        if start_model is None:
            start_model = load_model(study.start_model)[0]
            extra["warmup_fingerprint"] = model_fingerprint(start_model)
        return start_model

    def finished(entry: dict) -> None:
        entries.append(entry)
        with hold(root / INDEX_LOCK, wait=True):  # two slices finishing at once: one read-merge-write at a time
            _write_index(study, entries, started, extra)
            if export is not None:
                export_light(root, Path(export))

    exported = Path(export) / "study.json" if export is not None else None
    if exported is not None and exported.is_file():  # refuse a slice from another starting model before it trains
        committed = json.loads(exported.read_text())
        theirs = committed.get("warmup_fingerprint")
        model = starting_model()
        ours = extra["warmup_fingerprint"]
        if theirs is not None and ours not in known_fingerprints(committed):
            if not rebuilt_warmup:
                raise ValueError(f"{export} holds runs from a different starting model (warm-up fingerprint {theirs} "
                                 f"vs {ours} here). If this warm-up was re-created from the same config on another "
                                 "kind of machine, pass --rebuilt-warmup: it is evaluated on the study's held-out "
                                 "sets and the study continues only if it behaves as the committed one; otherwise "
                                 "export to another directory")
            check = _check_rebuilt_start(study, model, Path(export), root, log)
            if not check["equivalent"]:
                raise ValueError(f"the re-created warm-up (fingerprint {ours}) does not behave as the study's starting "
                                 f"model ({theirs}): {describe(check)}; it needs the greedy outcome to agree on >= "
                                 f"{GREEDY_AGREEMENT_MIN:.0%} and the sampled score on >= {SAMPLED_SAME_MIN:.0%} of "
                                 "every set's problems. Export to another directory")
            extra["warmup_equivalents"] = [{"fingerprint": ours, "of": theirs, **check}]
        restore_shared(Path(export), root, log)  # the same starting model (checked above): the same pairs

    # The starting model, once: every arm and seed is scored on the same problems, so one evaluation serves all.
    initial = root / INITIAL_ARM
    entry = {"arm": INITIAL_ARM, "seed": None, "dir": initial.name}
    try:
        if not _evaluated(initial, study):
            log(f"[initial] evaluating the starting model {study.start_model}")
            _, tokenizer = load_model(study.start_model)
            _evaluate_sets(starting_model(), tokenizer, study, initial)
        finished({**entry, "status": "done"})
    except Exception as error:  # noqa: BLE001 (recorded in study.json; the arms still run)
        finished(_failed(entry, error, log))
    if score_teacher:  # the teacher on the same sets: how much stronger it is than the start
        entry = {"arm": TEACHER_ARM, "seed": None, "dir": TEACHER_ARM}
        try:
            if not _evaluated(root / TEACHER_ARM, study):
                log(f"[teacher] evaluating the teacher {study.teacher_model}")
                _evaluate_sets(*load_model(study.teacher_model), study, root / TEACHER_ARM)
            finished({**entry, "status": "done"})
        except Exception as error:  # noqa: BLE001
            finished(_failed(entry, error, log))
    for seed in seeds:  # seeds outer: an interrupted study has every arm at the first seed first
        for arm in arms:
            entry = {"arm": arm, "seed": seed, "dir": f"{arm}-s{seed}"}
            arm_started = time.time()
            try:
                config = study.run_config(arm, seed)
                run_dir = config.run_dir
                with run_lock(run_dir):  # re-checked under the lock: another slice may have just finished it
                    status = _status(run_dir, study)
                    if status == "done":
                        log(f"[{arm} s{seed}] done, skipped")
                        finished({**entry, "status": "done"})
                        continue
                    if status in ("pending", "partial"):
                        log(f"[{arm} s{seed}] {'resuming' if status == 'partial' else 'training'} -> {run_dir}")
                        train_arm(config, resume=status == "partial", overwrite=status == "pending", log=log)
                        if not (run_dir / "final").is_dir():  # stopped by SIGTERM: leave the rest for --resume
                            finished({**entry, "status": "partial"})
                            log("study interrupted; run it again to continue")
                            return root
                    else:  # trained earlier, stopped while its results were written: only the missing ones
                        log(f"[{arm} s{seed}] trained; writing what is missing: {', '.join(_missing(run_dir, study))}")
                    model, tokenizer = load_model(str(run_dir / "final"))
                    _evaluate_sets(model, tokenizer, study, run_dir)
                    if not (run_dir / DRIFT_FILE).is_file():
                        _write_drift(model, tokenizer, starting_model(), study, run_dir)
                    if study.samples and not (run_dir / SAMPLES_FILE).is_file():
                        _write_samples(model, tokenizer, study, run_dir, seed)
                    if not study.train.get("keep_checkpoints", False):
                        _drop_checkpoints(run_dir)
                    finished({**entry, "status": "done", "seconds": time.time() - arm_started,
                              "warmup_fingerprint": extra.get("warmup_fingerprint")})
            except DirInUse as busy:  # another slice trains or evaluates it now: its entry is that slice's to write
                log(f"[{arm} s{seed}] skipped: {busy}")
            # One failing run must not cost the others: record it (study.json, the log) and go on.
            except Exception as error:  # noqa: BLE001
                finished(_failed(entry, error, log))
    failures = [{k: e[k] for k in ("arm", "seed", "error")} for e in entries if e["status"] == "failed"]
    if failures:
        raise StudyRunsFailed(root, failures)
    return root


def _check_rebuilt_start(study: StudyConfig, model, export: Path, root: Path, log) -> dict:
    """Evaluate the re-created starting model into ``root``/initial-rebuilt and compare it with the export's
    committed evaluation of the original (``start_check``); if equivalent, the committed evaluation stands for the
    starting model of this slice too (it is what the report compares every arm with)."""
    from ..models import load_model

    rebuilt = root / "initial-rebuilt"
    if not _evaluated(rebuilt, study):
        log(f"[initial] the re-created warm-up differs bitwise from {export}'s starting model: evaluating it to "
            "compare with the committed evaluation")
        _evaluate_sets(model, load_model(study.start_model)[1], study, rebuilt)
    check = compare_starts(rebuilt, export / INITIAL_ARM, list(study.eval.eval_sets()))
    log(f"[initial] {'equivalent' if check['equivalent'] else 'NOT equivalent'}: {describe(check)}")
    local = root / INITIAL_ARM
    if check["equivalent"] and not _evaluated(local, study):
        shutil.copytree(export / INITIAL_ARM, local, dirs_exist_ok=True)
    return check


def train_arm(config, **options):
    """Train one arm with its trainer's recipe: GRPO (TrainConfig), DPO (DPORunConfig) or SFT (SFTRunConfig)."""
    from ..config.dpo import DPORunConfig
    from ..config.sft import SFTRunConfig

    if isinstance(config, DPORunConfig):
        from .dpo import run_dpo

        return run_dpo(config, **options)
    if isinstance(config, SFTRunConfig):
        from .sft import run_sft

        return run_sft(config, **options)
    from .train import run_train

    return run_train(config, **options)


def _drop_checkpoints(run_dir: Path) -> None:
    """A finished run (final model evaluated) is never resumed: its checkpoints (about 1.6 GB each for SmolLM2 with
    the optimizer state) go, ``final/`` stays. A study of 30 runs kept 150 GB otherwise and filled this disk
    mid-save. ``train.keep_checkpoints: true`` keeps them."""
    for checkpoint in checkpoint_dirs(run_dir):
        shutil.rmtree(checkpoint, ignore_errors=True)


def model_fingerprint(model) -> str:
    """A short digest of a model's weights: slices of one study run on several machines must start from the
    same (warm-up) model, and this is how study.json tells."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().float().flatten()
        digest.update(name.encode())
        digest.update(f"{float(flat.double().sum()):.6e}".encode())  # per-tensor sums: stable across float noise
    return digest.hexdigest()[:16]


def _evaluated(run_dir: Path, study: StudyConfig) -> bool:
    return all((run_dir / "eval" / f"{name}-final.json").is_file() for name in study.eval.eval_sets())


def _missing(run_dir: Path, study: StudyConfig) -> list[str]:
    """What a trained run still lacks of its results. Each file is written whole (atomically), so a file that is
    there is complete: a run stopped while its results were written is finished by writing only the rest."""
    wanted = [f"eval/{name}-final.json" for name in study.eval.eval_sets()] + [DRIFT_FILE]
    wanted += [SAMPLES_FILE] if study.samples else []
    return [name for name in wanted if not (run_dir / name).is_file()]


def _status(run_dir: Path, study: StudyConfig) -> str:
    if (run_dir / "final").is_dir() and not _missing(run_dir, study):
        return "done"
    if (run_dir / "final").is_dir():
        return "trained"
    if latest_complete_checkpoint(run_dir)[0] is not None:
        return "partial"
    return "pending"  # nothing, or what a run killed before its first complete checkpoint left: started afresh


def _evaluate_sets(model, tokenizer, study: StudyConfig, run_dir: Path) -> None:
    """Every eval set (greedy pass@1, mean@k) -> run_dir/eval/<set>-final.json and an eval line in metrics.jsonl.

    The problems are the study's one fixed set (``eval.seed``); answers are read with the training reward's
    rule (``answer_line_only``), so eval and reward agree.
    """
    from .evaluate import EvalConfig, evaluate

    strict = bool(study.train.get("reward", {}).get("answer_line_only", False))
    spec = study.eval
    for name, chosen in spec.eval_sets().items():
        if (run_dir / "eval" / f"{name}-final.json").is_file():  # evaluated before a stop: its metrics line is there
            continue
        result = evaluate(model, tokenizer, EvalConfig(
            model=str(run_dir / "final"), task=chosen["task"] or study.task.spec(), split=chosen["split"],
            n=chosen["n"], tiers=chosen["tiers"], k=spec.k, temperature=spec.temperature, max_new_tokens=spec.max_new_tokens,
            seed=spec.seed, batch_size=spec.batch_size, answer_line_only=strict, shared_prefill=spec.shared_prefill))
        write_json(run_dir / "eval" / f"{name}-final.json", {"set": name, **result})
        line = {"event": "eval", "time": time.time(), f"eval/{name}/pass@1": result["pass@1"]}
        if spec.k:
            line[f"eval/{name}/mean@{spec.k}"] = result[f"mean@{spec.k}"]
        append_jsonl(run_dir / "metrics.jsonl", line)


def _write_drift(model, tokenizer, start_model, study: StudyConfig, run_dir: Path, n: int = 64) -> None:
    """How far training moved the model: ||theta - theta0|| and the mean per-token KL(final || start) on the
    final model's greedy completions of the first eval set's first ``n`` problems -> run_dir/drift.json."""
    from ..diagnostics import parameter_distance, token_kl
    from ..rollout import generate_rollout
    from .evaluate import EvalConfig, eval_problems

    name, chosen = next(iter(study.eval.eval_sets().items()))
    problems = eval_problems(EvalConfig(model="", task=chosen["task"] or study.task.spec(), split=chosen["split"],
                                        n=chosen["n"], tiers=chosen["tiers"], seed=study.eval.seed))[:n]
    rollout = generate_rollout(model, tokenizer, [p.prompt for p in problems],
                               max_new_tokens=study.eval.max_new_tokens, batch_size=study.eval.batch_size)
    batch = rollout.batch
    kl = token_kl(model, start_model, batch.input_ids, batch.attention_mask, batch.response_mask)
    write_json(run_dir / DRIFT_FILE, {**parameter_distance(model, start_model), "kl_to_start": kl,
                                      "kl_problems": len(problems), "kl_set": name})


# What a run's light files are: enough to render the report and audit every number, nothing heavy.
LIGHT_FILES = ("config.yaml", "metrics.jsonl", "policy_weights.jsonl", "drift.json", "evidence.json")
LIGHT_DIRS = ("eval", "samples")
# What every arm and seed of a study shares and a later slice must not re-create: the on-policy DPO pairs, sampled
# once from the starting model (``recipes.dpo.pairs_cache``; on a re-created warm-up they would differ).
SHARED_FILES = "pairs-on-policy-*"
# Held while a slice merges its entries into study.json and the export's (``hold``): slices side by side on one
# machine finish at any moment, and an unlocked read-merge-write could drop the other's entry.
INDEX_LOCK = ".index.lock"


def export_light(root: Path, dest: Path) -> Path:
    """Copy a study's light files (study.yaml, study.json merged with dest's, and per run: config, metrics,
    policy weights, eval results with per-problem outcomes, samples, drift; no checkpoints or models) to
    ``dest``, so a study can be committed and grow slice by slice across machines."""
    root, dest = Path(root), Path(dest)
    with hold(root / INDEX_LOCK, wait=True):
        return _export_light(root, dest)


def _export_light(root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    index = json.loads((root / "study.json").read_text())
    merged = index
    if (dest / "study.json").is_file():
        old = json.loads((dest / "study.json").read_text())
        ours = {(e["arm"], e["seed"]) for e in index["runs"]}
        merged = {**index, "runs": [e for e in old.get("runs", []) if (e["arm"], e["seed"]) not in ours]
                  + index["runs"]}
        ours = index.get("warmup_fingerprint")  # None: this slice has not loaded its starting model yet
        merged["warmup_fingerprint"] = old.get("warmup_fingerprint") or ours
        equivalents = merge_equivalents(old, index)
        if equivalents:
            merged["warmup_equivalents"] = equivalents
        if ours is not None and old.get("warmup_fingerprint") and ours not in known_fingerprints(merged):
            raise ValueError(f"{dest} holds runs from a different starting model (warm-up fingerprint "
                             f"{old['warmup_fingerprint']} vs {ours}); export to another directory")
    for entry in index["runs"]:
        if entry.get("status") != "done":
            continue
        source, target = root / entry["dir"], dest / entry["dir"]
        for name in LIGHT_FILES:
            if (source / name).is_file():
                target.mkdir(parents=True, exist_ok=True)
                atomic_write_text(target / name, (source / name).read_text())
        for folder in LIGHT_DIRS:
            for path in sorted((source / folder).glob("*")) if (source / folder).is_dir() else []:
                if path.is_file():
                    (target / folder).mkdir(parents=True, exist_ok=True)
                    atomic_write_text(target / folder / path.name, path.read_text())
    for path in sorted(root.glob(SHARED_FILES)):
        if path.is_file():
            atomic_write_text(dest / path.name, path.read_text())
    atomic_write_text(dest / "study.yaml", (root / "study.yaml").read_text())
    write_json(dest / "study.json", merged)
    return dest


def restore_shared(export: Path, root: Path, log=print) -> list[str]:
    """Copy the export's shared files (``SHARED_FILES``) that ``root`` lacks into it, so a slice in a fresh checkout
    trains on the pairs the committed runs trained on; a file ``root`` already has is left as it is."""
    restored = []
    for path in sorted(Path(export).glob(SHARED_FILES)):
        local = Path(root) / path.name
        if path.is_file() and not local.exists():
            atomic_write_text(local, path.read_text())
            restored.append(path.name)
    if restored:
        log(f"[shared] restored from {export}: {', '.join(restored)}")
    return restored


def _write_samples(model, tokenizer, study: StudyConfig, run_dir: Path, seed: int) -> None:
    """A few held-out responses of the final model with their per-token signals (for the report's heatmaps); on a
    task that marks prompt roles, the counterfactual signals too, and each row's spans."""
    from ..rollout import generate_rollout
    from ..signals import compute_signals, parse_signal_specs, required_roles
    from .analyze import counterfactual_inputs, token_rows

    roles = [role for role in ROLE_SIGNALS if role in study.task.roles]
    examples = study.task.examples("test", study.samples, seed) if roles else None
    prompts = [e.prompt for e in examples] if examples else study.task.sample_prompts(study.samples, seed)
    rollout = generate_rollout(model, tokenizer, prompts, max_new_tokens=study.eval.max_new_tokens)
    specs = parse_signal_specs([*SAMPLE_SIGNALS, *(spec for role in roles for spec in ROLE_SIGNALS[role])])
    marks, contexts = ({}, {}) if not roles else counterfactual_inputs(
        tokenizer, rollout, [e.spans for e in examples], required_roles(specs), specs, seed)
    values = compute_signals(model, rollout.batch, specs, marks=marks, contexts=contexts)
    rows = token_rows(rollout, values, tokenizer)
    for row, example in zip(rows, examples or ()):
        row["spans"] = {role: [list(s) for s in ranges] for role, ranges in example.spans.items()}
    write_jsonl(run_dir / SAMPLES_FILE, rows)
