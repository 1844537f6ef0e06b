"""Position controls (policies/controls.py): front / back and the position-matched random subset."""

from __future__ import annotations

import torch

from helpers import policy_inputs
from tokenfocus.policies import apply_policy
from tokenfocus.types import PolicyInputs


def test_front_back_hand_example():
    """L = 7, ratio 0.2: ceil(1.4) = 2 tokens at each end."""
    mask = torch.tensor([[False, True, True, True, True, True, True, True]])
    inputs = PolicyInputs(mask)
    assert apply_policy({"name": "front"}, inputs).weights[0].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert apply_policy({"name": "back"}, inputs).weights[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


def test_position_matched_random_has_the_reference_histogram():
    inputs = policy_inputs(b=8, t=40, seed=2, p_valid=0.9)
    spec = {"name": "quantile", "side": "high", "scope": "batch"}
    reference = apply_policy(spec, inputs).weights > 0
    matched = apply_policy({**spec, "name": "position_matched", "kind": "relative"}, inputs).weights > 0
    mask = inputs.mask
    r = ((mask.long().cumsum(-1) - 1).double() / mask.sum(-1, keepdim=True).double() * 10).floor().long()
    assert torch.equal(torch.bincount(r[reference], minlength=10), torch.bincount(r[matched], minlength=10))
    assert not torch.equal(reference, matched)
