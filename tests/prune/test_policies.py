"""Pruning policies on constructed layouts and features: the budget counts the pruneable segment only, fixed
positions always stay, diversity picks one token per cluster, SADS trades sensitivity against redundancy, and a
progressive schedule drops through LayerRunner to the planned counts, and "random beyond the horizon" uses its
method before the horizon and random draws from it on."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.models import load_model
from tokenfocus.prune import LayerRunner, TokenLayout
from tokenfocus.prune.policies import (
    divprune,
    drop_categories,
    keep_count,
    progressive,
    random_beyond,
    random_keep,
    sads,
    topk,
)

LAYOUT = TokenLayout.from_segments([("system", 2), ("context", 8), ("query", 2)], protect_last=True)
CONTEXT = list(range(2, 10))


def test_topk_keeps_the_highest_scores_and_every_fixed_position():
    scores = torch.zeros(12)
    scores[[4, 7, 9]] = torch.tensor([3.0, 2.0, 1.0])
    scores[0] = 99.0  # the sink's score is irrelevant: it is kept anyway, and never counted in the budget
    assert topk(LAYOUT, scores, 0.25) == [0, 1, 4, 7, 10, 11]
    assert topk(LAYOUT, torch.zeros(12), 0.25) == [0, 1, 2, 3, 10, 11]  # ties: the earlier positions
    assert keep_count(LAYOUT, 0.01) == 1 and keep_count(LAYOUT, 1.0) == 8


def test_random_keeps_the_same_count_reproducibly():
    first = random_keep(LAYOUT, 0.5, torch.Generator().manual_seed(3))
    assert first == random_keep(LAYOUT, 0.5, torch.Generator().manual_seed(3))
    assert len([p for p in first if p in CONTEXT]) == 4 and {0, 1, 10, 11} <= set(first)
    draws = {tuple(random_keep(LAYOUT, 0.5, torch.Generator().manual_seed(s))) for s in range(20)}
    assert len(draws) > 5


def clustered():
    """Two tight clusters of context features: positions 2-5 near e1, 6-9 near e2."""
    features = torch.randn(12, 6, generator=torch.Generator().manual_seed(0)) * 0.01
    features[2:6, 0] += 1.0
    features[6:10, 1] += 1.0
    return features


def test_divprune_takes_one_token_per_cluster_before_a_second_from_either():
    kept = [p for p in divprune(LAYOUT, clustered(), 0.25) if p in CONTEXT]
    assert len(kept) == 2 and len({p < 6 for p in kept}) == 2


def test_sads_prefers_the_sensitive_token_among_redundant_ones():
    sensitivity = torch.zeros(12)
    sensitivity[3], sensitivity[8] = 1.0, 0.8
    kept = [p for p in sads(LAYOUT, clustered(), sensitivity, 0.25) if p in CONTEXT]
    assert kept == [3, 8]  # the most sensitive of each cluster
    flat = torch.ones(12)  # constant sensitivity: plain max-min diversity from the first candidate
    assert len({p < 6 for p in sads(LAYOUT, clustered(), flat, 0.25) if p in CONTEXT}) == 2


def test_categories_drop_sink_and_dead_tokens_only():
    assert drop_categories(LAYOUT, {2: "dead", 3: "sink", 4: "alive"}) == [0, 1, 4, 5, 6, 7, 8, 9, 10, 11]


def test_budgets_and_inputs_a_policy_cannot_use_are_refused():
    for budget in (0, 1.5, -0.2, "half", True):
        with pytest.raises(ValueError, match="in \\(0, 1\\]"):
            topk(LAYOUT, torch.zeros(12), budget)
    with pytest.raises(ValueError, match="scores cover 5 positions, the layout 12"):
        topk(LAYOUT, torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="needs a pruneable segment"):
        random_keep(TokenLayout.from_segments([("system", 2), ("query", 2)]), 0.5)
    with pytest.raises(ValueError, match="ratios keep fewer tokens"):
        progressive(LAYOUT, [1, 2], [0.5, 0.75], lambda state, layout: torch.zeros(len(layout)))


@torch.no_grad()
def test_a_progressive_schedule_drops_to_the_planned_counts_through_the_runner():
    model, _ = load_model("tiny-llama:layers=4,hidden=32,heads=4,kv_heads=2")
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))
    seen = []

    def by_position(state, layout):  # later context tokens score higher
        seen.append(len(layout))
        return torch.arange(len(layout), dtype=torch.float64)

    drops = progressive(LAYOUT, [1, 3], [0.75, 0.25], by_position)
    out = LayerRunner(model.eval()).run(ids, drops=drops)
    assert seen == [12, 10]
    assert out.history[1] == [0, 1, 4, 5, 6, 7, 8, 9, 10, 11] and out.kept == [0, 1, 8, 9, 10, 11]


def test_random_beyond_the_horizon_runs_the_method_before_it_and_random_draws_after_it():
    """DivPrune + random (A3): before layer 2 the schedule keeps exactly DivPrune's choice on the hidden states
    entering that layer; at layer 3 (past the horizon) exactly the draw random_keep makes from the same generator
    state on what is left; counts follow the ratios of the original segment."""
    model, _ = load_model("tiny-llama:layers=4,hidden=32,heads=4,kv_heads=2")
    ids = torch.randint(0, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    runner = LayerRunner(model.eval())
    captured = {}

    def early(state, current, fraction):
        captured["divprune"] = divprune(current, state.hidden[0], fraction)
        return captured["divprune"]

    drops = random_beyond(LAYOUT, [1, 3], [0.5, 0.25], horizon=2, early=early,
                          generator=torch.Generator().manual_seed(7))
    out = runner.run(ids, drops=drops)
    assert out.history[1] == captured["divprune"]  # the method's choice, nothing else (layout 0..11 = positions)
    assert len([p for p in out.history[1] if p in CONTEXT]) == 4 and len([p for p in out.kept if p in CONTEXT]) == 2
    after = LAYOUT.kept(out.history[1])
    expected = random_keep(after, 0.5, torch.Generator().manual_seed(7))  # 2 of the 4 left: fraction 0.5
    assert out.kept == [out.history[1][i] for i in expected]
    runs = [runner.run(ids, drops=random_beyond(LAYOUT, [1, 3], [0.5, 0.25], 2, early,
                                                torch.Generator().manual_seed(s))) for s in range(8)]
    assert all(r.history[1] == out.history[1] for r in runs)  # the method's drop does not depend on the seed
    assert len({tuple(r.kept) for r in runs}) > 1  # the random one does
    with pytest.raises(ValueError, match="one ratio per layer"):
        random_beyond(LAYOUT, [1, 3], [0.5], 2, early)
