"""Combinators (policies/combinators.py): product of weights, union / intersection of kept sets."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.policies import apply_policy
from tokenfocus.types import PolicyInputs

FRONT, BACK = {"name": "front", "ratio": 0.5}, {"name": "back", "ratio": 0.5}


def _inputs():
    """Row 0: 6 valid tokens then 2 pads; row 1: 8 valid tokens. ratio 0.5 -> front keeps 3 / 4, back 3 / 4."""
    mask = torch.tensor([[True] * 6 + [False] * 2, [True] * 8])
    return PolicyInputs(mask, {"attention_entropy": torch.linspace(0, 1, 8).repeat(2, 1) * mask})


def test_union_and_intersection_by_hand():
    """front 50 % and back 50 % cover every token once: union = the mask, intersection = nothing; with
    front 50 % and front 50 % again, both equal the front tokens."""
    inputs = _inputs()
    union = apply_policy({"name": "union", "policies": [FRONT, BACK]}, inputs)
    assert torch.equal(union.weights, inputs.mask.float())
    assert apply_policy({"name": "intersection", "policies": [FRONT, BACK]}, inputs).weights.sum() == 0
    front = apply_policy(FRONT, inputs).weights
    assert front[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert torch.equal(apply_policy({"name": "intersection", "policies": [FRONT, FRONT]}, inputs).weights, front)
    assert union.stats["policy/part0/kept_fraction"] == pytest.approx(0.5)
    assert union.stats["policy/part1/kept_fraction"] == pytest.approx(0.5)


def test_product_multiplies_the_child_weights():
    """low2high weights times a 0/1 front mask: the soft weights on the front tokens, 0 elsewhere."""
    inputs = _inputs()
    soft = apply_policy({"name": "low2high"}, inputs).weights
    front = apply_policy(FRONT, inputs).weights
    product = apply_policy({"name": "product", "policies": [{"name": "low2high"}, FRONT]}, inputs).weights
    torch.testing.assert_close(product, soft * front, atol=0, rtol=0)
    assert (product[front == 0] == 0).all() and (product[front > 0] > 0).all()


@pytest.mark.parametrize("policies", [[], "front", {"name": "front"}])
def test_a_combinator_needs_a_list_of_specs(policies):
    with pytest.raises(ValueError, match="non-empty list of policy specs"):
        apply_policy({"name": "union", "policies": policies}, _inputs())
