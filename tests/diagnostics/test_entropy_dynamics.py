"""Entropy dynamics (diagnostics/entropy_dynamics.py): Spearman correlation and the per-subset means by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tokenfocus.diagnostics import entropy_dynamics, spearman


def test_spearman_and_entropy_dynamics_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x * 10) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(math.sqrt(3) / 2)
    attention = torch.tensor([[0.1, 0.5, 0.9, 0.0], [0.2, 0.8, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    anchors = attention < 0.15
    explorers = attention > 0.85
    out = entropy_dynamics(attention, mask, anchors & mask, explorers & mask, correct=torch.tensor([True, False]),
                           predictive=attention * 2, pred_bottom=anchors, pred_top=explorers)
    assert out["diag/attention_entropy/all"] == pytest.approx(0.5)
    assert out["diag/attention_entropy/anchors"] == pytest.approx(0.1)
    assert out["diag/attention_entropy/explorers"] == pytest.approx(0.9)
    assert out["diag/attention_entropy/correct"] == pytest.approx(0.5) and out["diag/attention_entropy/incorrect"] == pytest.approx(0.5)
    assert out["diag/corr/attention_vs_predictive_entropy"] == pytest.approx(1.0)
    assert out["diag/jaccard/anchors_vs_pred_entropy_bottom"] == 1.0
    mass = torch.tensor([[0.9, 0.4, 0.2, 0.7], [0.6, 0.3, 0.5, 0.5]])
    out = entropy_dynamics(attention, mask, anchors & mask, explorers & mask, correct=torch.tensor([True, False]),
                           mass=mass)
    assert out["diag/prompt_mass/all"] == pytest.approx((0.9 + 0.4 + 0.2 + 0.6 + 0.3) / 5)
    assert out["diag/prompt_mass/anchors"] == pytest.approx(0.9)  # the token with entropy 0.1
    assert out["diag/prompt_mass/explorers"] == pytest.approx(0.2)  # the token with entropy 0.9
    assert out["diag/prompt_mass/correct"] == pytest.approx(0.5) and out["diag/prompt_mass/incorrect"] == pytest.approx(0.45)
    # entropies 0.1 0.5 0.9 0.2 0.8 vs masses 0.9 0.4 0.2 0.6 0.3: ranks exactly reversed
    assert out["diag/corr/attention_vs_prompt_mass"] == pytest.approx(-1.0)
