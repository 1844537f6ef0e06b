"""Study files written the way the study recipe writes them (study.json, eval/<set>-final.json with per-problem
outcomes, metrics.jsonl with diag/grad rows, drift.json), for the report tests. No model directories: the same
shape as a committed light copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

N_IN_DIST, N_HARD = 200, 100


def outcomes(correct: int, n: int) -> list[int]:
    """Greedy 0/1 outcomes: the first ``correct`` problems solved. Arms built this way are nested (an arm that
    solves more solves a superset), so a paired difference of k problems is k ones and n - k zeros."""
    return [1] * correct + [0] * (n - correct)


def prompts(set_name: str, n: int) -> list[str]:
    # A repeated prompt (problem 0 and 1 of the hard set) must pair by occurrence, not collapse into one.
    return [f"{set_name}: compute {i % 97}+{i // 97}?" if set_name != "hard" or i > 1 else f"{set_name}: 1+1?"
            for i in range(n)]


class StudyFiles:
    """Writes one study under ``root``: call ``initial``/``run`` for each run, then ``index``."""

    def __init__(self, root: Path):
        self.root = root
        self.entries: list[dict] = []

    def eval_file(self, run_dir: Path, set_name: str, greedy: list[int], sampled: list[float] | None = None,
                  split: str = "test", per_problem: bool = True) -> None:
        n = len(greedy)
        tiers = ["D2", "D3"] if set_name != "hard" else ["H3", "H4"]
        result = {"set": set_name, "split": split, "n": n, "k": 4 if sampled else 0, "pass@1": sum(greedy) / n,
                  "mean@4": sum(sampled) / n if sampled else None,
                  "pass@1_by_tier": {t: sum(greedy[i::2]) / len(greedy[i::2]) for i, t in enumerate(tiers)},
                  "examples": []}
        if per_problem:
            result["problems"] = [{"prompt": p, "tier": tiers[i % 2], "greedy": g,
                                   "sampled": sampled[i] if sampled else None}
                                  for i, (p, g) in enumerate(zip(prompts(set_name, n), greedy))]
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / f"{set_name}-final.json").write_text(json.dumps(result))

    def initial(self, in_dist: int, hard: int = 20, sampled: bool = False) -> None:
        run_dir = self.root / "initial"
        self._evals(run_dir, in_dist, hard, sampled)
        self.entries.append({"arm": "initial", "seed": None, "dir": "initial", "status": "done"})

    def _evals(self, run_dir: Path, in_dist: int | None, hard: int | None, sampled: bool) -> None:
        if in_dist is not None:
            greedy = outcomes(in_dist, N_IN_DIST)
            self.eval_file(run_dir, "in-dist", greedy, [0.5 * g + 0.25 for g in greedy] if sampled else None)
        if hard is not None:
            self.eval_file(run_dir, "hard", outcomes(hard, N_HARD))

    def run(self, arm: str, seed: int, in_dist: int | None = None, hard: int | None = None, *,
            diag: list[dict] | None = None, drift: dict | None = None, sampled: bool = False,
            status: str = "done", steps: int = 3) -> Path:
        """One arm x seed: ``in_dist`` / ``hard`` problems solved (greedy); ``diag``: one dict of
        ``diag/grad/...`` values per diagnosed step."""
        run_dir = self.root / f"{arm}-s{seed}"
        self.entries.append({"arm": arm, "seed": seed, "dir": run_dir.name, "status": status})
        if status == "failed":
            self.entries[-1]["error"] = "RuntimeError: boom"
            return run_dir
        run_dir.mkdir(parents=True)
        self._evals(run_dir, in_dist, hard, sampled)
        diag = diag or []
        rows = [{"step": s, "reward/mean": 0.2 * s + 0.01 * seed, "completion/mean_length": 10.0 + s}
                for s in range(1, max(steps, len(diag)) + 1)]
        for row, values in zip(rows, diag):  # one diagnosis per step, in that step's record
            row.update(values)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if drift:
            (run_dir / "drift.json").write_text(json.dumps(drift))
        return run_dir

    def index(self, arms=("full", "random20", "low2high"), seeds=(0, 1, 2), sets=("in-dist", "hard"),
              claims=None) -> Path:
        eval_spec = {"sets": {s: {"split": "test", "tiers": {}} for s in sets}, "splits": ["test", "hard-test"],
                     "n": 64, "k": 4, "temperature": 1.0, "max_new_tokens": 48, "seed": 0, "batch_size": 32}
        (self.root / "study.json").write_text(json.dumps({
            "description": "constructed", "model": "tiny", "task": {"name": "arithmetic"},
            "arms": {a: a for a in arms}, "seeds": list(seeds), "eval": eval_spec, "warmup_fingerprint": "abc",
            "runs": self.entries, **({"claims": claims} if claims else {})}))
        return self.root


@pytest.fixture
def study(tmp_path):
    return StudyFiles(tmp_path / "study")
