"""Is a re-created warm-up the study's starting model? A study grows slice by slice across machines, and each
machine re-creates the warm-up from the study config. On the same kind of CPU that gives the same weights (the
fingerprint in study.json matches); on another kind the float kernels differ and the SFT ends a few ulps away,
so the fingerprint differs although the model is, for the study, the same one.

``tokenfocus study --rebuilt-warmup`` then evaluates the re-created model on the study's fixed held-out sets and
compares it, problem by problem, with the committed evaluation of the original starting model (the export's
``initial`` run). It is accepted as equivalent when, on every set, the problems are the same, the greedy outcome
(correct or not) agrees on at least ``GREEDY_AGREEMENT_MIN`` of them and the sampled score (the fraction of the k
samples that are correct, same sampling seed) is identical on at least ``SAMPLED_SAME_MIN`` of them. The comparison
is recorded in the export's study.json under ``warmup_equivalents``, and every run entry trained afterwards names
the fingerprint it started from.

Calibration (study-arith, 2026-11-30): the warm-up re-created on another CPU matched the committed start on 300/300
greedy outcomes and 300/300 sampled scores; the 60-step RL run closest to its start (explorers20 s0, relative drift
~8e-5) matched 295/300 greedy outcomes (which ``GREEDY_AGREEMENT_MIN`` alone would not catch) but only 223/300
sampled scores (175/200 on the hard set).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

GREEDY_AGREEMENT_MIN = 0.99
SAMPLED_SAME_MIN = 0.95


def compare_starts(rebuilt: Path, committed: Path, sets: list[str]) -> dict:
    """Per eval set, the re-created start (``rebuilt``/eval) against the committed one (``committed``/eval):
    problems, greedy agreement, pass@1 and mean@k of both. ``equivalent``: every set passes (module docstring)."""
    rows, equivalent = {}, True
    for name in sets:
        new = json.loads((rebuilt / "eval" / f"{name}-final.json").read_text())
        old_path = committed / "eval" / f"{name}-final.json"
        if not old_path.is_file():
            raise ValueError(f"{old_path} is missing: the export has no evaluation of its starting model on set "
                             f"{name!r} to compare a re-created warm-up with")
        old = json.loads(old_path.read_text())
        same_problems = [p["prompt"] for p in new["problems"]] == [p["prompt"] for p in old["problems"]]
        pairs = list(zip(new["problems"], old["problems"], strict=False))
        agree = sum(a["greedy"] == b["greedy"] for a, b in pairs)
        sampled = sum(a["sampled"] == b["sampled"] for a, b in pairs)
        n = len(old["problems"])
        k = old["k"]
        rows[name] = {"problems": n, "same_problems": same_problems, "greedy_agree": agree, "sampled_same": sampled,
                      "pass@1": [new["pass@1"], old["pass@1"]], f"mean@{k}": [new[f"mean@{k}"], old[f"mean@{k}"]]}
        equivalent &= (same_problems and n > 0 and agree / n >= GREEDY_AGREEMENT_MIN
                       and sampled / n >= SAMPLED_SAME_MIN)
    return {"equivalent": equivalent, "greedy_agreement_min": GREEDY_AGREEMENT_MIN, "sampled_same_min":
            SAMPLED_SAME_MIN, "sets": rows, "date": time.strftime("%Y-%m-%d")}


def describe(check: dict) -> str:
    """One clause per set: 'in-dist: greedy outcome agrees on 300/300 problems, sampled score on 300/300, ...'."""
    parts = []
    for name, row in check["sets"].items():
        mean = next(key for key in row if key.startswith("mean@"))
        parts.append(f"{name}: greedy outcome agrees on {row['greedy_agree']}/{row['problems']} problems, sampled "
                     f"score on {row['sampled_same']}/{row['problems']}"
                     + ("" if row["same_problems"] else " (NOT the same problems)")
                     + f", pass@1 {row['pass@1'][0]:.3f} vs {row['pass@1'][1]:.3f}, {mean} {row[mean][0]:.3f} vs "
                     f"{row[mean][1]:.3f} (re-created vs committed)")
    return "; ".join(parts)


def known_fingerprints(index: dict) -> set[str]:
    """The study's starting-model fingerprint and those of re-created warm-ups accepted as equivalent to it."""
    found = {e["fingerprint"] for e in index.get("warmup_equivalents", [])}
    return found | ({index["warmup_fingerprint"]} if index.get("warmup_fingerprint") else set())


def merge_equivalents(*indexes: dict) -> list[dict]:
    """The union of the indexes' ``warmup_equivalents``, one record per fingerprint (the first kept)."""
    seen, merged = set(), []
    for index in indexes:
        for record in index.get("warmup_equivalents", []):
            if record["fingerprint"] not in seen:
                seen.add(record["fingerprint"])
                merged.append(record)
    return merged
