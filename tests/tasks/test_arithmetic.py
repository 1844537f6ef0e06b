"""Generated arithmetic (tasks/arithmetic.py): seeded, disjoint, tiered splits."""

from __future__ import annotations

import pytest

from tokenfocus.tasks import generate_problems


def test_arithmetic_splits_are_seeded_disjoint_and_tiered():
    train = generate_problems(300, split="train", seed=1)
    test = generate_problems(60, split="test", seed=1)
    hard = generate_problems(40, split="hard-test", seed=1)
    assert [p.expression for p in train] == [p.expression for p in generate_problems(300, split="train", seed=1)]
    assert not {p.expression for p in train} & {p.expression for p in test}
    assert {p.tier for p in train} == {"D1", "D2", "D3"} and {p.tier for p in hard} == {"H1", "H2"}
    for p in train + test + hard:
        assert p.answer == eval(p.expression) and f"Compute {p.expression}." in p.prompt  # noqa: S307
    with pytest.raises(ValueError, match="valid tiers"):
        generate_problems(3, tiers=["D9"])
    with pytest.raises(ValueError, match="ask for fewer"):
        generate_problems(500, split="test", tiers=["D1"])  # only 200 distinct 1-digit problems exist
