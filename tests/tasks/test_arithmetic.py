"""Generated arithmetic (tasks/arithmetic.py): seeded, disjoint, tiered splits."""

from __future__ import annotations

import re

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


def test_a_tier_mix_draws_exact_counts_each_tier_on_its_own_stream():
    """{tier: count}: exactly count distinct problems per tier, of that tier, held out; a tier's problems do not
    depend on the other tiers in the mix (a fixed evaluation set can grow a tier without reshuffling the rest)."""
    from tokenfocus.tasks.arithmetic import _evaluate
    from tokenfocus.tasks.generated import in_test_bucket as _in_test_bucket

    mix = generate_problems(0, split="test", tiers={"D2": 40, "H3": 25, "D3": 30}, seed=3)
    assert [sum(p.tier == t for p in mix) for t in ("D2", "H3", "D3")] == [40, 25, 30]
    assert len({p.expression for p in mix}) == 95
    assert all(_in_test_bucket(p.expression) and _evaluate(p.expression) == p.answer for p in mix)
    h3 = [p for p in mix if p.tier == "H3"]
    assert all(re.fullmatch(r"[1-9]\d\*[2-9]|[2-9]\*[1-9]\d", p.expression) for p in h3)
    assert {p.expression[1] == "*" for p in h3} == {True, False}  # both orders
    assert len(generate_problems(0, split="test", tiers={"H3": 250})) == 250  # room for a 200-problem hard set
    alone = generate_problems(0, split="test", tiers={"H3": 25}, seed=3)
    assert [p.expression for p in alone] == [p.expression for p in h3]
    assert generate_problems(0, split="test", tiers={"D2": 40, "H3": 25, "D3": 30}, seed=3) == mix
    train = generate_problems(0, split="train", tiers={"H3": 25}, seed=3)
    assert not {p.expression for p in train} & {p.expression for p in h3}


def test_a_tier_mix_asking_more_than_a_tier_holds_says_how_many_it_has():
    with pytest.raises(ValueError, match=r"Could not draw 64 distinct test problems of tier D1 \(it has 3\d\); ask "
                                         r"for at most 3\d"):
        generate_problems(0, split="test", tiers={"D1": 64})
    # tiers cycled in turn (a list, as `tokenfocus eval --n` draws them): the tier that runs out is named
    with pytest.raises(ValueError, match=r"each tier needs about 34, and D1 has only 3\d distinct test problems; ask "
                                         r"for fewer, or give counts per tier"):
        generate_problems(100, split="test", tiers=["D1", "D2", "D3"])
    assert len(generate_problems(90, split="test", tiers=["D1", "D2", "D3"])) == 90
    with pytest.raises(ValueError, match=r"count >= 1"):
        generate_problems(0, split="test", tiers={"D2": 0})
    with pytest.raises(ValueError, match=r"Unknown arithmetic tier\(s\) \['D9'\]"):
        generate_problems(0, split="test", tiers={"D9": 3})
