"""PGPO (policies/pgpo.py): the paper and development forms by hand, constant signals, padding, mass."""

from __future__ import annotations

import torch

from helpers import policy_inputs
from tokenfocus.policies import apply_policy
from tokenfocus.types import PolicyInputs


def test_pgpo_paper_and_development_forms_by_hand():
    """S = e^I - 1 makes log1p(S) = I, so I = minmax(I). Six tokens I = 0, .2, .4, .6, .8, 1; tau .4, beta 2.
    Paper form: w~ = [0, .5, 1, 1 + 2(.2/.6), 1 + 2(.4/.6), 3], then scaled so sum = 6.
    Development form: gate = sorted I at floor(6 * .4) = 2 -> 0.4 as well; floor 0.1; no mass normalization."""
    importance = torch.tensor([[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]])
    inputs = PolicyInputs(torch.ones(1, 6, dtype=torch.bool), {"context_dependency": importance.exp() - 1})
    raw = torch.tensor([0.0, 0.5, 1.0, 1 + 2 / 3, 1 + 4 / 3, 3.0])
    paper = apply_policy({"name": "pgpo"}, inputs).weights[0]
    torch.testing.assert_close(paper, (raw * 6 / raw.sum()).float(), atol=1e-5, rtol=0)
    development = apply_policy({"name": "pgpo", "threshold_mode": "quantile", "low_weight_floor": 0.1,
                                "mass_normalization": False}, inputs).weights[0]
    torch.testing.assert_close(development, torch.tensor([0.1, 0.5, 1.0, 1 + 2 / 3, 1 + 4 / 3, 3.0]), atol=1e-5, rtol=0)


def test_pgpo_constant_signal_is_uniform_and_padding_invariant():
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    constant = PolicyInputs(mask, {"context_dependency": torch.full((2, 7), 0.3) * mask})
    assert torch.equal(apply_policy({"name": "pgpo"}, constant).weights, mask.float())
    values = torch.rand(1, 4)
    padded = PolicyInputs(mask[:1], {"context_dependency": torch.cat([values, torch.full((1, 3), 9.0)], 1) * mask[:1]})
    unpadded = PolicyInputs(torch.ones(1, 4, dtype=torch.bool), {"context_dependency": values})
    torch.testing.assert_close(apply_policy({"name": "pgpo"}, padded).weights[:, :4],
                               apply_policy({"name": "pgpo"}, unpadded).weights)


def test_pgpo_mass_conservation():
    inputs = policy_inputs(b=6, t=20, seed=4)
    pgpo = apply_policy({"name": "pgpo"}, inputs).weights
    torch.testing.assert_close(pgpo.sum(-1), inputs.mask.sum(-1).float(), atol=1e-4, rtol=0)
