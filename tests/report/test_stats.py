"""report/stats.py: the paired two-level bootstrap against known cases and a naive loop, the seed spread, and
pairing outcomes by prompt."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenfocus.report.stats import (
    Interval,
    mean_interval,
    mean_sd,
    outcome_matrices,
    paired_difference,
    t_interval,
    t_quantile_975,
)


def naive_paired_interval(a, b, resamples, seed, level=0.95):
    """The definition, one resample at a time: draw P problems (shared) and each arm's seeds with replacement;
    the difference of the drawn seeds' mean accuracy on the drawn problems."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        problems = rng.integers(a.shape[1], size=a.shape[1])
        seeds_a, seeds_b = rng.integers(len(a), size=len(a)), rng.integers(len(b), size=len(b))
        diffs.append(a[seeds_a][:, problems].mean() - b[seeds_b][:, problems].mean())
    return np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])


def test_identical_arms_give_the_interval_zero_zero():
    rng = np.random.default_rng(1)
    one = (rng.random(150) < 0.4).astype(float)
    interval = paired_difference(one, one)
    assert (interval.estimate, interval.low, interval.high, interval.n) == (0.0, 0.0, 0.0, 150)
    seeds = np.tile(one, (3, 1))  # three seeds that agree on every problem: seed resampling changes nothing
    interval = paired_difference(seeds, seeds[:2])
    assert (interval.low, interval.high) == (0.0, 0.0) and interval.text() == "+0.000 [+0.000, +0.000]"


def test_a_constant_shift_on_every_problem_is_recovered():
    """Sampled (mean@k) outcomes: b = a - 0.1 on every problem. With one seed every resample differs by exactly
    0.1; with several seeds the interval still centres on 0.1 and contains it."""
    rng = np.random.default_rng(2)
    a = rng.uniform(0.2, 0.9, size=120)
    interval = paired_difference(a, a - 0.1)
    assert interval.estimate == pytest.approx(0.1)
    assert interval.low == pytest.approx(0.1) and interval.high == pytest.approx(0.1)
    seeds = rng.uniform(0.2, 0.9, size=(3, 120))
    interval = paired_difference(seeds, seeds - 0.1)
    assert interval.estimate == pytest.approx(0.1) and interval.low < 0.1 < interval.high
    assert interval.high - interval.low < 0.1


def test_the_interval_narrows_with_more_problems():
    """Independent 0/1 outcomes at 0.5 and 0.4: the width scales like 1/sqrt(P), so 16x the problems is ~4x
    narrower."""
    rng = np.random.default_rng(3)
    widths = {}
    for n in (50, 800):
        a, b = (rng.random(n) < 0.5).astype(float), (rng.random(n) < 0.4).astype(float)
        interval = paired_difference(a, b)
        widths[n] = interval.high - interval.low
    assert 2.5 < widths[50] / widths[800] < 6.5


def test_one_seed_matches_the_normal_approximation():
    """For one seed per arm the bootstrap of a mean difference is close to mean ± 1.96·sd/sqrt(P)."""
    rng = np.random.default_rng(4)
    a, b = (rng.random(400) < 0.6).astype(float), (rng.random(400) < 0.5).astype(float)
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    interval = paired_difference(a, b, resamples=4000)
    assert interval.estimate == pytest.approx(d.mean())
    assert interval.low == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert interval.high == pytest.approx(d.mean() + half, abs=0.1 * half)


@pytest.mark.parametrize("seeds_a, seeds_b, sampled", [(1, 1, False), (3, 3, False), (3, 1, True), (2, 4, True)])
def test_against_a_naive_loop(seeds_a, seeds_b, sampled):
    """The vectorised two-level bootstrap and the one-resample-at-a-time definition agree (different random
    draws, so within Monte Carlo error)."""
    rng = np.random.default_rng(seeds_a * 10 + seeds_b)

    def outcomes(rows, p):
        base = rng.random((1, 200)) < p
        noise = rng.random((rows, 200)) < 0.15  # seeds flip a few problems
        values = (base ^ noise).astype(float)
        return values * rng.uniform(0.5, 1.0, values.shape) if sampled else values

    a, b = outcomes(seeds_a, 0.55), outcomes(seeds_b, 0.45)
    interval = paired_difference(a, b, resamples=4000)
    low, high = naive_paired_interval(a, b, resamples=4000, seed=99)
    assert interval.estimate == pytest.approx(a.mean() - b.mean())
    assert interval.low == pytest.approx(low, abs=0.012) and interval.high == pytest.approx(high, abs=0.012)


def test_seed_noise_widens_the_interval():
    """Two seeds that disagree on many problems carry more uncertainty than their average taken as one run."""
    rng = np.random.default_rng(5)
    a = (rng.random((2, 300)) < 0.5).astype(float)
    b = (rng.random(300) < 0.5).astype(float)
    two = paired_difference(a, b)
    averaged = paired_difference(a.mean(0), b)
    assert two.estimate == pytest.approx(averaged.estimate)
    assert two.high - two.low > averaged.high - averaged.low


def test_fixed_seed_gives_the_same_interval_and_bad_inputs_fail():
    rng = np.random.default_rng(6)
    a, b = rng.random((3, 80)), rng.random((2, 80))
    assert paired_difference(a, b) == paired_difference(a, b)
    with pytest.raises(ValueError, match="same non-zero number of problems"):
        paired_difference(a, b[:, :79])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([0.0, float("nan")], [0.0, 1.0])


def test_mean_sd_is_the_sample_sd_and_none_for_one_seed():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof=1: sqrt((1 + 0 + 1) / 2)
    assert mean_sd([0.4, None, float("nan")]) == (0.4, None)
    mean, sd = mean_sd([])
    assert math.isnan(mean) and sd is None


def test_mean_interval_over_units():
    constant = mean_interval([0.3] * 5)
    assert (constant.low, constant.high) == pytest.approx((0.3, 0.3))
    positive = mean_interval([0.2, 0.4, 0.3, 0.5])
    assert positive.estimate == pytest.approx(0.35)
    assert positive.above(0) and 0.2 <= positive.low < 0.35 < positive.high <= 0.5
    mixed = mean_interval([0.2, -0.2, 0.2, -0.2, 0.1])
    assert not mixed.above(0) and not mixed.below(0)
    assert Interval(0.05, 0.01, 0.09, 10).text() == "+0.050 [+0.010, +0.090]"


def test_outcomes_pair_by_prompt_and_occurrence():
    """Arm b lists the problems in another order; "x" appears twice and pairs by occurrence; a problem without
    a sampled outcome in any run is left out of the sampled matrices."""
    a = [[{"prompt": "x", "greedy": 1, "sampled": 0.5}, {"prompt": "y", "greedy": 0, "sampled": 0.25},
          {"prompt": "x", "greedy": 0, "sampled": None}]]
    b = [[{"prompt": "y", "greedy": 1, "sampled": 0.75}, {"prompt": "x", "greedy": 0, "sampled": 0.0},
          {"prompt": "x", "greedy": 1, "sampled": 1.0}],
         [{"prompt": "x", "greedy": 1, "sampled": 1.0}, {"prompt": "x", "greedy": 1, "sampled": 1.0},
          {"prompt": "y", "greedy": 0, "sampled": 0.0}]]
    x, y = outcome_matrices(a, b, "greedy")
    assert x.tolist() == [[1, 0, 0]] and y.tolist() == [[0, 1, 1], [1, 0, 1]]  # order x, y, x(2nd)
    x, y = outcome_matrices(a, b, "sampled")
    assert x.tolist() == [[0.5, 0.25]] and y.tolist() == [[0.0, 0.75], [1.0, 0.0]]
    assert outcome_matrices(a, [[{"prompt": "z", "greedy": 1}]], "greedy") is None


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")  # in the test extra through scikit-learn
    for df in [*range(1, 60), 100, 500, 5000]:
        assert t_quantile_975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=2e-6), df
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile_975(0)


def test_t_interval_by_hand():
    """[1, 2, 3, 4]: mean 2.5, sd sqrt(5/3), se sqrt(5/12); t(0.975, 3) = 3.182446."""
    got = t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446 * math.sqrt(5 / 12)
    assert (got.estimate, got.n) == (2.5, 4)
    assert got.low == pytest.approx(2.5 - half) and got.high == pytest.approx(2.5 + half)
    with pytest.raises(ValueError, match="at least two"):
        t_interval([1.0])


def test_t_interval_is_wider_than_the_bootstrap_at_few_units():
    """Four batches all above 0: the percentile bootstrap's interval excludes 0 (no resample mean can be <= 0),
    Student t's does not."""
    values = [0.01, 0.30, 0.02, 0.05]
    assert mean_interval(values).above(0)
    assert not t_interval(values).above(0)
