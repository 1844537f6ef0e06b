"""Reading a study (or one run) for the report: the runs, their eval sets in order, what failed or is missing.

A study directory holds ``study.json`` and one directory per run (the committed light copy has the same files
without models or checkpoints). Two index formats render:

- current: the starting model is evaluated once, ``{"arm": "initial", "seed": null, "dir": "initial"}``, on the
  eval sets of ``eval.sets`` (files ``eval/<set>-final.json``, with per-problem outcomes);
- older: ``initial-s<seed>`` per seed, eval files named after splits (``test-final.json``, ``hard-test-final.json``).

Beside the runs, ``diagnose/<name>/`` may hold the light files of ``tokenfocus diagnose`` (``diagnosis.jsonl``, one
line per batch of informative prompt groups): the gradient claims pool those batches with the training runs'.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io import POLICY_WEIGHTS_FILE, latest_metrics, read_jsonl

INITIAL = "initial"
TEACHER = "teacher"  # a study's own teacher, evaluated beside the arms (config.study.TEACHER_ARM)
DIAGNOSES_DIR = "diagnose"  # <study>/diagnose/<name>/diagnosis.jsonl: ``tokenfocus diagnose --out`` results
HARD_SETS = ("hard", "hard-test")  # the hard set of claim 4, current and older name
IN_DIST_SETS = ("in-dist", "test")  # the in-distribution set when the index does not order the sets


def read_index(root: Path) -> dict | None:
    index = Path(root) / "study.json"
    return json.loads(index.read_text()) if index.is_file() else None


def _entries(index: dict) -> list[dict]:
    """The index's runs; when the starting model was evaluated once (seed null), older per-seed ``initial``
    entries of the same study (a study resumed under the current format) are superseded by it."""
    entries = index.get("runs", [])
    if any(e["arm"] == INITIAL and e.get("seed") is None for e in entries):
        entries = [e for e in entries if e["arm"] != INITIAL or e.get("seed") is None]
    return entries


def load_runs(root: Path, allow_empty: bool = False) -> list[dict]:
    """[{arm, seed, dir, metrics: {step: row}, evals: {set: result}, samples, weights, evidence, drift}] for a
    study or one run (arm = the directory's name, seed 0). ``seed`` is None for the starting model evaluated once.

    A study's failed runs and runs without a directory are left out (``incomplete_runs`` lists them)."""
    root = Path(root)
    index = read_index(root)
    if index is not None:
        entries = [e for e in _entries(index)
                   if e.get("status") != "failed" and e.get("dir") and (root / e["dir"]).is_dir()]
        dirs = [(e["arm"], e.get("seed"), root / e["dir"]) for e in entries]
    else:
        dirs = [(root.name, 0, root)]
    runs = []
    for arm, seed, run_dir in dirs:
        evals = {p.name.removesuffix("-final.json"): json.loads(p.read_text())
                 for p in sorted((run_dir / "eval").glob("*-final.json"))}
        samples = run_dir / "samples" / "tokens.jsonl"
        weights = run_dir / POLICY_WEIGHTS_FILE  # the last record per step (a resumed run logs its steps again)
        runs.append({"arm": arm, "seed": seed, "dir": run_dir, "metrics": latest_metrics(run_dir / "metrics.jsonl"),
                     "evals": evals, "samples": read_jsonl(samples) if samples.is_file() else [],
                     "weights": {r["step"]: r for r in read_jsonl(weights)} if weights.is_file() else {},
                     "evidence": _json(run_dir / "evidence.json"), "drift": _json(run_dir / "drift.json")})
    if not allow_empty and (not runs or not any(r["metrics"] for r in runs)):
        raise ValueError(f"{root} holds no run with metrics.jsonl steps; point report at a run or study directory")
    return runs


def load_diagnoses(root: Path) -> list[dict]:
    """[{arm: "diagnose <name>", seed: None, dir, metrics: {batch: line}, summary}] for each
    ``root/diagnose/<name>/diagnosis.jsonl`` with at least one batch, in name order (none for a single run)."""
    found = []
    for lines_file in sorted((Path(root) / DIAGNOSES_DIR).glob("*/diagnosis.jsonl")):
        lines = read_jsonl(lines_file)
        if lines:
            found.append({"arm": f"{DIAGNOSES_DIR} {lines_file.parent.name}", "seed": None, "dir": lines_file.parent,
                          "metrics": {int(line["batch"]): line for line in lines},
                          "summary": _json(lines_file.parent / "diagnosis.json")})
    return found


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def default_set_order(name: str) -> tuple:
    """Sort key of eval set names when no index orders them: the in-distribution set first, the hard set last."""
    return (name in HARD_SETS, name not in IN_DIST_SETS, name)


def eval_set_names(root: Path, runs: list[dict]) -> list[str]:
    """The eval sets in order, the in-distribution set first: ``eval.sets`` (or older ``eval.splits``) of the
    index, then any other set the runs were scored on. Without an index: ``in-dist`` / ``test`` first, the hard
    set last."""
    index = read_index(root) or {}
    spec = index.get("eval") if isinstance(index.get("eval"), dict) else {}
    # study.json is written with sorted keys, so the hard set may come first there: it goes last.
    named = sorted(spec.get("sets") or spec.get("splits") or [], key=lambda name: name in HARD_SETS)
    found = {name for run in runs for name in run["evals"]}
    return named + sorted(found - set(named), key=default_set_order)


def incomplete_runs(root: Path) -> dict[str, list[dict]]:
    """A study's runs that did not finish: ``failed`` [{arm, seed, error}] (from study.json) and ``missing``
    [{arm, seed, reason}]: the starting model never evaluated, or an arm x seed of study.json's arms and seeds
    with no finished run (never ran, or stopped part way)."""
    index = read_index(root)
    if index is None:
        return {"failed": [], "missing": []}
    entries = _entries(index)
    failed = [{"arm": e["arm"], "seed": e.get("seed"), "error": e.get("error", "unknown error")}
              for e in entries if e.get("status") == "failed"]
    by_run = {(e["arm"], e.get("seed")): e for e in entries}
    missing = []
    initial = [e for e in entries if e["arm"] == INITIAL]
    if not initial:
        missing.append({"arm": INITIAL, "seed": None, "reason": "the starting model was never evaluated"})
    for e in initial:
        if e.get("status") == "done" and not (Path(root) / e["dir"]).is_dir():
            missing.append({"arm": INITIAL, "seed": e.get("seed"), "reason": "its run directory is gone"})
    for seed in index.get("seeds", []):
        for arm in index.get("arms", {}):
            entry = by_run.get((arm, seed))
            state = entry and entry.get("status")
            if state == "partial":
                missing.append({"arm": arm, "seed": seed, "reason": "stopped part way (resume the study to finish it)"})
            elif entry is None:
                missing.append({"arm": arm, "seed": seed, "reason": "never ran"})
            elif state == "done" and not (Path(root) / entry.get("dir", f"{arm}-s{seed}")).is_dir():
                missing.append({"arm": arm, "seed": seed, "reason": "its run directory is gone"})
    return {"failed": failed, "missing": missing}
