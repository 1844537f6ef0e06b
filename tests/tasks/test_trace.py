"""TRACE as released: rank bonuses (ties share, one key gets hi, all-bad groups), the wrong and no-answer cases, the
OPD gate, the tightening cache (monotone, persisted, bypassed when off) and CAS."""

from __future__ import annotations

import pytest

from tokenfocus.tasks.trace import ReferenceCache, cas, failed, trace_rewards


def test_rank_bonuses_and_the_wrong_and_no_answer_cases():
    acc = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, None, 1.0]
    tc = [1, 1, 2, 3, 0, 2, 1, 0]
    totals = [1, 1, 2, 3, 0, 2, 1, 0]
    rewards = trace_rewards(acc, tc, totals, tc_ref=2, n_ref=2)
    # good keys (1,1) (tie: rows 0, 1) and (2,2): +0.20 and +0.05; bad (3,3) alone: -0.02
    assert rewards[:4] == pytest.approx([1.20, 1.20, 1.05, 0.98])
    assert rewards[4] == pytest.approx(-0.1)  # wrong with fewer calls than the reference
    assert rewards[5] == pytest.approx(0.0)   # wrong within [tc_ref, 1.5 tc_ref]
    assert rewards[6] == -0.5 and rewards[7] == 1.0  # no answer; correct without tools: no bonus
    assert failed(acc) == [False] * 4 + [True, True, True, False]
    all_bad = trace_rewards([1.0, 1.0, 1.0], [3, 4, 5], [3, 4, 5], tc_ref=1, n_ref=1)
    assert all_bad == pytest.approx([0.98, 0.94, 0.90])
    with pytest.raises(ValueError, match="one value per rollout"):
        trace_rewards([1.0], [1, 2], [1], 1, 1)


def test_the_reference_cache_only_tightens_and_persists(tmp_path):
    cache = ReferenceCache(tmp_path / "ref.json")
    assert cache.reference("q", (2, 2)) == (2, 2)
    cache.update("q", [1.0, 1.0, 0.0], [3, 1, 1], [3, 1, 1])
    assert cache.reference("q", (2, 2)) == (1, 1)
    cache.update("q", [1.0], [2], [2])  # worse: ignored
    assert ReferenceCache(tmp_path / "ref.json").reference("q", (2, 2)) == (1, 1)  # persisted
    off = ReferenceCache(tmp_path / "off.json", tighten=False)
    off.update("q", [1.0], [1], [1])
    assert off.reference("q", (2, 2)) == (2, 2) and not (tmp_path / "off.json").exists()


def test_cas():
    assert cas(0.5, 1000.0, 1.0) == pytest.approx(0.25 * 100 / 4)
