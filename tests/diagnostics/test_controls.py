"""Diagnostic controls (diagnostics/controls.py): group-shared prefixes by hand and against a naive loop; matched
random subsets of the target's size and histogram, seeded and not the target itself."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.diagnostics import group_shared_prefix, matched_random, position_bins, quantile_bins
from tokenfocus.types import relative_position


def naive_shared_prefix(ids, mask, groups):
    """The definition, one position at a time: (b, c) is shared when every row of b's group (>= 2 rows) is valid
    at 0..c and equal to row b there."""
    out = torch.zeros_like(mask)
    for b in range(ids.shape[0]):
        members = [r for r in range(ids.shape[0]) if groups[r] == groups[b]]
        for c in range(ids.shape[1]):
            out[b, c] = len(members) > 1 and all(
                bool(mask[r, : c + 1].all()) and torch.equal(ids[r, : c + 1], ids[b, : c + 1]) for r in members)
    return out


def test_shared_prefix_by_hand():
    """Group 0 agrees on tokens 0-1 and differs at 2 (so c = 3, equal again, is not in the prefix); group 1's
    second row ends after token 0, so only c = 0 is shared; group 2 is a single row (nothing to share)."""
    ids = torch.tensor([[5, 6, 7, 9], [5, 6, 8, 9], [4, 4, 4, 4], [4, 3, 3, 3], [1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]).bool()
    groups = torch.tensor([0, 0, 1, 1, 2])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]).bool()
    assert torch.equal(group_shared_prefix(ids, mask, groups), expected)


@pytest.mark.parametrize("seed", range(5))
def test_shared_prefix_matches_the_naive_definition(seed):
    g = torch.Generator().manual_seed(seed)
    b, c, G = 12, 9, 4
    ids = torch.randint(0, 3, (b, c), generator=g)  # a small vocabulary, so prefixes are often shared
    ids[: G] = ids[0]  # group 0: identical completions ...
    lengths = torch.randint(0, c + 1, (b,), generator=g)
    mask = torch.arange(c)[None] < lengths[:, None]  # ... of different lengths
    groups = torch.arange(b) // G
    assert torch.equal(group_shared_prefix(ids, mask, groups), naive_shared_prefix(ids, mask, groups))


def matched_setup(seed=0, b=16, c=20):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, c + 1, (b,), generator=g)
    mask = torch.arange(c)[None] < lengths[:, None]
    values = torch.rand(b, c, generator=g) * mask
    return mask, values


def test_position_matched_subset_has_the_targets_size_and_position_histogram():
    """A target concentrated at the start of the rows (half the tokens with r < 0.3): the matched subset has the
    same count per relative-position bin, drawn from all of the bin's tokens, so it is not the target. (A target
    that fills its bins would be matched by itself: position would explain it entirely.)"""
    mask, _ = matched_setup()
    r = relative_position(mask)
    target = mask & (r < 0.3) & (torch.rand(mask.shape, generator=torch.Generator().manual_seed(5)) < 0.5)
    bins = position_bins(mask, 10)
    matched = matched_random(target, mask, bins, seed=3, step=7)
    assert int(matched.sum()) == int(target.sum()) and not bool((matched & ~mask).any())
    assert torch.equal(torch.bincount(bins[matched], minlength=10), torch.bincount(bins[target], minlength=10))
    assert not torch.equal(matched, target)
    assert torch.equal(matched, matched_random(target, mask, bins, seed=3, step=7))  # seeded, deterministic
    assert not torch.equal(matched, matched_random(target, mask, bins, seed=4, step=7))
    assert not torch.equal(matched, matched_random(target, mask, bins, seed=3, step=7, run_seed=1))


def test_entropy_matched_subset_has_the_targets_size_and_entropy_histogram():
    """A target chosen by another signal but correlated with the predictive entropy (the lowest 20% of
    entropy + noise): the matched subset follows its entropy-decile histogram (exactly where every bin has
    enough tokens, which holds here) and its mean entropy, not the universe's."""
    mask, entropy = matched_setup(seed=1)
    g = torch.Generator().manual_seed(9)
    score = (entropy + 0.3 * torch.rand(entropy.shape, generator=g)).masked_fill(~mask, float("inf"))
    k = int(0.2 * mask.sum())
    target = torch.zeros_like(mask).view(-1)
    target[score.view(-1).argsort()[:k]] = True
    target = target.view(mask.shape) & mask
    bins = quantile_bins(entropy, mask, 10)
    have = torch.bincount(bins[mask], minlength=10)
    assert int(have.min()) >= int(have.max()) - 1  # deciles: equal counts up to rounding
    matched = matched_random(target, mask, bins, seed=0)
    want = torch.bincount(bins[target], minlength=10)
    assert torch.equal(torch.bincount(bins[matched], minlength=10), want)
    assert int(matched.sum()) == int(target.sum()) and not torch.equal(matched, target)
    assert float(entropy[matched].mean()) == pytest.approx(float(entropy[target].mean()), abs=0.05)
    assert float(entropy[mask].mean()) - float(entropy[target].mean()) > 0.2


def test_matched_subset_stays_inside_a_smaller_universe():
    """Universe: half the rows (the informative groups); the target (late tokens) restricted to it is matched there."""
    mask, _ = matched_setup(seed=2)
    universe = mask & (torch.arange(mask.shape[0]) < 8)[:, None]
    bins = position_bins(mask, 10)
    target = mask & (bins >= 8)
    matched = matched_random(target, universe, bins, seed=1)
    assert int(matched.sum()) == int((target & universe).sum()) and not bool((matched & ~universe).any())
    assert torch.equal(torch.bincount(bins[matched], minlength=10), torch.bincount(bins[target & universe],
                                                                                   minlength=10))
    assert not bool(matched_random(torch.zeros_like(mask), universe, bins).any())  # an empty target
