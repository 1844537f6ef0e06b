"""The LSE identity H = LSE - scale * q . Attn(q, K, K), the chunked path and key mass against hand-derived
cases and an fp64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import causal, reference_entropy
from tokenfocus.capture.kernels import entropy_chunked, entropy_lse, key_mass


def left_padded_allowed(lengths, s):
    keys = torch.zeros(len(lengths), s, dtype=torch.bool)
    for r, n in enumerate(lengths):
        keys[r, s - n :] = True
    allowed = causal(s) & keys[:, None, None, :]
    return allowed, keys


@pytest.mark.parametrize("path", ["lse", "chunked"])
def test_uniform_causal_attention_has_entropy_log_t_plus_1(path):
    """q = 0 makes every score 0, so row t is uniform over its t+1 keys: H_t = log(t + 1)."""
    s = 9
    q = torch.zeros(1, 2, s, 8)
    k = torch.randn(1, 2, s, 8)
    if path == "lse":
        h, _ = entropy_lse(q, k, None, 0.3)
    else:
        h, _ = entropy_chunked(q, k, None, 0.3, chunk_size=4)
    expected = torch.log(torch.arange(1, s + 1, dtype=torch.float32))
    torch.testing.assert_close(h[0, 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(h[0, 1], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("path", ["lse", "chunked"])
def test_one_hot_attention_has_zero_entropy(path):
    """Orthogonal keys and q_i = 100 k_0: every row puts all its mass on key 0 (e^-100 elsewhere), so H = 0."""
    s, d = 6, 8
    k = torch.zeros(1, 1, s, d)
    k[0, 0, torch.arange(s), torch.arange(s)] = 1.0
    q = torch.zeros(1, 1, s, d)
    q[..., 0] = 100.0
    h = entropy_lse(q, k, None, 1.0)[0] if path == "lse" else entropy_chunked(q, k, None, 1.0)[0]
    assert h.abs().max() < 1e-4


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 3), h=st.integers(1, 4), s=st.integers(2, 40), d=st.sampled_from([4, 16, 64]),
    pad=st.booleans(), seed=st.integers(0, 10_000),
)
def test_lse_matches_fp64_reference(b, h, s, d, pad, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, s, d, generator=g)
    k = torch.randn(b, h, s, d, generator=g)
    scale = d**-0.5
    if pad:
        lengths = torch.randint(1, s + 1, (b,), generator=g).tolist()
        allowed, keys = left_padded_allowed(lengths, s)
        real_rows = keys[:, None, :]
    else:
        allowed, real_rows = causal(s).expand(b, 1, s, s), torch.ones(b, 1, s, dtype=torch.bool)
    ref = reference_entropy(q, k, allowed, scale)
    got, _ = entropy_lse(q, k, allowed if pad else None, scale)
    chunked, _ = entropy_chunked(q, k, allowed if pad else None, scale, chunk_size=7)
    err = ((got.double() - ref).abs() * real_rows).max().item()
    err_chunked = ((chunked.double() - ref).abs() * real_rows).max().item()
    assert err <= 1e-6 * max(1.0, math.log(s)), err
    assert err_chunked <= 1e-6 * max(1.0, math.log(s)), err_chunked


def test_chunked_path_handles_softcap_bias_and_sinks_exactly():
    g = torch.Generator().manual_seed(1)
    b, h, s, d = 2, 3, 17, 8
    q, k = torch.randn(b, h, s, d, generator=g) * 3, torch.randn(b, h, s, d, generator=g)
    allowed = causal(s).expand(b, 1, s, s)
    bias = -0.5 * (torch.arange(s)[:, None] - torch.arange(s)[None, :]).abs().float()[None, None].expand(b, h, s, s)
    sinks = torch.randn(h, generator=g)
    ref = reference_entropy(q, k, allowed, 0.35, softcap=5.0, sinks=sinks, bias=bias)
    got, _ = entropy_chunked(q, k, allowed, 0.35, softcap=5.0, sinks=sinks, position_bias=bias, chunk_size=5)
    assert (got.double() - ref).abs().max() < 1e-5


def test_all_keys_marked_gives_mass_one_and_none_marked_gives_zero():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    _, lse = entropy_chunked(q, k, None, 0.35)
    ones = key_mass(q, k, None, 0.35, lse, torch.ones(2, 9, dtype=torch.bool))
    assert (ones - 1).abs().max() < 1e-5
    zeros = key_mass(q, k, None, 0.35, lse, torch.zeros(2, 9, dtype=torch.bool))
    assert zeros.abs().max() == 0
    # soft-capped scores: the mass follows the capped distribution, summing to one over a partition
    _, lse_cap = entropy_chunked(q, k, None, 0.35, softcap=2.0)
    first = torch.zeros(2, 9, dtype=torch.bool)
    first[:, :4] = True
    total = key_mass(q, k, None, 0.35, lse_cap, first, softcap=2.0) + key_mass(q, k, None, 0.35, lse_cap, ~first,
                                                                                 softcap=2.0)
    assert (total - 1).abs().max() < 1e-5
