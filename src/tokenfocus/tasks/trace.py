"""HyperEyes' TRACE trajectory reward and its efficiency score (arXiv 2605.07177; RL_TOKEN_CREDIT.md §4), as the
released code implements them, for one group of rollouts of one question.

    r = acc + bonus;   no answer: acc = -0.5, bonus 0
    wrong (acc <= 0):  bonus -0.1 if tc < tc_ref or tc > 1.5 tc_ref, else 0
    correct, tc = 0:   bonus 0 (no reward for answering without tools)
    correct, tc > 0:   "good" (tc <= tc_ref and total <= n_ref): the unique (tc, total) keys, ascending (best
                       first), get bonuses spaced linearly from +0.20 down to +0.05; "bad": -0.02 down to -0.10;
                       key k of m gets hi + (lo - hi) k / (m - 1), a single key hi; ties share a bonus

``tc`` = tool-call rounds, ``total`` = parallel searches summed over rounds (one per call for a calculator).
``ReferenceCache``: per question, the best correct rollout with tc >= 1 (lexicographic minimum of (tc, total))
replaces the reference only when strictly better, and persists to JSON (the paper's monotonic tightening; the
released reward bypasses it, ``tighten=False``).

    CAS = Acc^2 x 100 / (N_tok / 1000 + 2 N_tool + 1)
"""

from __future__ import annotations

import json
from pathlib import Path

GOOD = (0.20, 0.05)
BAD = (-0.02, -0.10)
NO_ANSWER = -0.5
WRONG_CALLS = -0.1


def _ranked(keys: list[tuple[int, int]], hi: float, lo: float) -> dict[tuple[int, int], float]:
    unique = sorted(set(keys))
    if len(unique) == 1:
        return {unique[0]: hi}
    return {key: hi + (lo - hi) * k / (len(unique) - 1) for k, key in enumerate(unique)}


def trace_rewards(acc: list[float | None], tool_calls: list[int], totals: list[int], tc_ref: float,
                  n_ref: float) -> list[float]:
    """TRACE rewards of one group: ``acc`` 1.0 / 0.0 per rollout, None when it gave no answer."""
    if not len(acc) == len(tool_calls) == len(totals):
        raise ValueError(f"one value per rollout: {len(acc)} acc, {len(tool_calls)} tool_calls, {len(totals)} totals")
    good = [(tc, n) for a, tc, n in zip(acc, tool_calls, totals) if a and a > 0 and tc > 0 and tc <= tc_ref
            and n <= n_ref]
    bad = [(tc, n) for a, tc, n in zip(acc, tool_calls, totals) if a and a > 0 and tc > 0
           and not (tc <= tc_ref and n <= n_ref)]
    bonus = {**(_ranked(good, *GOOD) if good else {}), **(_ranked(bad, *BAD) if bad else {})}
    rewards = []
    for a, tc, n in zip(acc, tool_calls, totals):
        if a is None:
            rewards.append(NO_ANSWER)
        elif a <= 0:
            rewards.append(a + (WRONG_CALLS if tc < tc_ref or tc > 1.5 * tc_ref else 0.0))
        elif tc == 0:
            rewards.append(a)
        else:
            rewards.append(a + bonus[(tc, n)])
    return rewards


def failed(acc: list[float | None]) -> list[bool]:
    """HyperEyes' OPD gate: rollouts with acc <= 0, the no-answer ones included."""
    return [a is None or a <= 0 for a in acc]


class ReferenceCache:
    """Per-question reference (tc_ref, n_ref), tightened to the best correct rollout with tc >= 1 when ``tighten``;
    persisted to ``path`` (JSON, written aside and renamed)."""

    def __init__(self, path: Path | None = None, tighten: bool = True):
        self.path = Path(path) if path is not None else None
        self.tighten = tighten
        self.best: dict[str, tuple[int, int]] = {}
        if self.path is not None and self.path.is_file():
            self.best = {q: tuple(v) for q, v in json.loads(self.path.read_text()).items()}

    def reference(self, question: str, scripted: tuple[int, int]) -> tuple[int, int]:
        """The reference for ``question``: the cached best when tighter than the scripted solution's."""
        cached = self.best.get(question)
        return min(cached, scripted) if cached is not None and self.tighten else scripted

    def update(self, question: str, acc: list[float | None], tool_calls: list[int], totals: list[int]) -> None:
        if not self.tighten:
            return
        candidates = [(tc, n) for a, tc, n in zip(acc, tool_calls, totals) if a and a > 0 and tc >= 1]
        if not candidates:
            return
        best = min(candidates)
        if question not in self.best or best < self.best[question]:
            self.best[question] = best
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text(json.dumps({q: list(v) for q, v in self.best.items()}))
                tmp.replace(self.path)


def cas(accuracy: float, mean_tokens: float, mean_tool_calls: float) -> float:
    """The efficiency score CAS = Acc^2 x 100 / (N_tok[thousands] + 2 N_tool + 1)."""
    return accuracy ** 2 * 100 / (mean_tokens / 1000 + 2 * mean_tool_calls + 1)
