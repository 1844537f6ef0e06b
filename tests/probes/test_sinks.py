"""Sink probe: column sums equal the eager attention matrix's, massive activations and cos-to-first by hand."""

from __future__ import annotations

import pytest
import torch

from helpers import causal, eager_probabilities, padded_batch, tiny
from tokenfocus.capture.kernels import received_mass
from tokenfocus.probes.sinks import (cosine_to_first, massive_activations, probe_sinks, queries_per_key,
                                     sink_scores)


def test_received_mass_matches_materialized_column_sums():
    """R_j = sum_i softmax(s_i)_j over allowed rows, chunked (chunk 3 < S) == the dense fp64 definition."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    allowed = causal(7).expand(2, 1, 7, 7).clone()
    allowed[1, :, :, :2] = False  # row 1: two left-padding keys
    allowed[1, :, :2, :] = False  # ... and their query rows see nothing
    s = (q.double() @ k.double().transpose(-1, -2)) * 0.3
    s = s.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    expected = p.sum(2)
    valid = allowed.any(-1)  # (B, 1, S)
    row_lse = torch.where(valid, lse, torch.full_like(lse, float("inf"))).float()
    got = received_mass(q, k, allowed, 0.3, row_lse, chunk_size=3)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    # each real row is a distribution: the columns sum to the number of real rows
    torch.testing.assert_close(got.sum(-1), valid[:, 0].sum(-1, keepdim=True).float().expand(2, 3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_probe_sinks_matches_eager_attention(side):
    """The probe's sink score is the head mean of the eager matrix's column sums over n_queries(j)."""
    model, _ = tiny()
    ids, mask = padded_batch([9, 6], 9, side=side)
    report = probe_sinks(model, ids, mask, layers="all", min_queries=1)
    probs = eager_probabilities(model, ids, mask)
    counts = queries_per_key(mask)
    for layer, p in enumerate(probs):
        p = p * mask[:, None, :, None]  # padding query rows do not count
        expected = p.sum(2).mean(1) / counts.clamp_min(1)
        expected = torch.where(mask, expected, torch.zeros_like(expected))
        torch.testing.assert_close(report.sink_score[layer].double(), expected, atol=1e-5, rtol=1e-4)
    # shares sum to one per row (each real row spreads probability 1)
    torch.testing.assert_close(report.share.sum(-1), torch.ones(2, 2), atol=1e-4, rtol=0)
    assert report.sink_score.shape == (2, 2, 9) and report.cos_first.shape == (2, 2, 9)
    first = mask.to(torch.uint8).argmax(-1)
    assert torch.allclose(report.cos_first[:, torch.arange(2), first], torch.ones(2, 2), atol=1e-5)
    assert (report.sink_score[:, ~mask] == 0).all() and (report.cos_first[:, ~mask] == 0).all()
    assert all(p != int(first[b]) for _, b, p, _ in report.intermediate)


def test_queries_per_key_by_hand():
    """Causal mask, 4 real tokens after 2 padding: key j is seen by the real rows i >= j: 4, 3, 2, 1."""
    mask = torch.tensor([[False, False, True, True, True, True]])
    assert queries_per_key(mask).tolist() == [[0, 0, 4, 3, 2, 1]]


def test_sink_scores_of_a_perfect_sink():
    """Every row puts all its attention on key 0: key 0 receives T rows -> score 1; the others 0."""
    t = 5
    received = torch.zeros(1, 2, t)
    received[..., 0] = t
    score = sink_scores(received, torch.ones(1, t, dtype=torch.bool))
    assert score.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]


def test_massive_activations_thresholds():
    """One entry of 500 in a layer whose median |h| is 0.1: 500 > 100 and > 1000 * 0.1 -> massive; 50 is not."""
    h = torch.full((1, 4, 8), 0.1)
    h[0, 2, 5] = -500.0
    h[0, 3, 1] = 50.0
    mask = torch.ones(1, 4, dtype=torch.bool)
    act = massive_activations([h], mask)
    assert act.dims == [[5]]
    assert act.massive[0] == [(0, 2, 5, -500.0)]
    assert act.ratio[0] == pytest.approx(5000.0)
    padded = mask.clone()
    padded[0, 2] = False  # the massive entry at a padding position does not count
    assert massive_activations([h], padded).dims == [[]]


def test_cosine_to_first_by_hand():
    """h_first = e0; h = e0 + e1 has cos 1/sqrt(2); -e0 has cos -1 (left padding: the first real token is 1)."""
    h = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[False, True, True, True]])
    cos = cosine_to_first(h, mask)
    torch.testing.assert_close(cos, torch.tensor([[0.0, 1.0, 2 ** -0.5, -1.0]]))


def test_bad_input_is_refused_before_the_forward():
    model, _ = tiny()
    with pytest.raises(ValueError, match="T >= 2"):
        probe_sinks(model, torch.tensor([[1]]))
    with pytest.raises(ValueError, match="sink_threshold"):
        probe_sinks(model, torch.tensor([[1, 2, 3]]), sink_threshold=0)
    with pytest.raises(ValueError, match="all False"):
        probe_sinks(model, torch.tensor([[1, 2, 3]]), torch.zeros(1, 3, dtype=torch.bool))


def test_fused_column_sums_equal_the_chunked_ones():
    """Pure causal attention: the one-call path (reversed positions, the row LSE as a bias column) equals the
    explicit chunked column sums, also with a row whose LSE is +inf (it adds nothing)."""
    from tokenfocus.capture.kernels import _block_scores, _received_fused, entropy_lse

    torch.manual_seed(1)
    q, k = torch.randn(2, 3, 37, 16), torch.randn(2, 3, 37, 16)
    _, lse = entropy_lse(q, k, None, 0.25)
    fused = received_mass(q, k, None, 0.25, lse)  # the fused path (no mask)
    scores = _block_scores(q, k.transpose(-1, -2), None, 0.25, 0)  # (B, H, S, S) with -inf above the diagonal
    dense = torch.exp(scores - lse[..., None]).sum(2)
    torch.testing.assert_close(fused, dense, atol=1e-5, rtol=1e-5)
    lse[0, 0, 5] = float("inf")
    masked = _received_fused(q, k, lse, 0.25)
    scores[0, 0, 5] = float("-inf")
    torch.testing.assert_close(masked, torch.exp(scores - lse[..., None]).nan_to_num(0.0).sum(2), atol=1e-5, rtol=1e-5)
