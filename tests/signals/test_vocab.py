"""The chunked LM-head pass behind the logprobs and predictive_entropy signals, against full logits."""

from __future__ import annotations

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.signals import compute_signals
from tokenfocus.signals._vocab import chunked_logprobs_entropy


def test_logprobs_and_predictive_entropy_match_full_logits():
    model, _ = tiny()
    batch = rollout_batch([4, 6], [6, 3], prompt_width=6, completion_width=6, seed=5)
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
            position_ids=(batch.attention_mask.long().cumsum(-1) - 1).clamp_min(0),
        ).logits.double()
    logp = torch.log_softmax(logits, -1)
    ref_lp = torch.zeros(batch.shape, dtype=torch.double)
    ref_lp[:, 1:] = logp[:, :-1].gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    ref_h = torch.zeros_like(ref_lp)
    ref_h[:, 1:] = -(logp.exp() * logp).sum(-1)[:, :-1]
    got = compute_signals(model, batch, ["logprobs", "predictive_entropy"])
    m = batch.response_mask
    assert ((got["logprobs"].double() - ref_lp) * m).abs().max() < 1e-5
    assert ((got["predictive_entropy"].double() - ref_h) * m).abs().max() < 1e-5
    assert got["logprobs"][~m].abs().max() == 0


@pytest.mark.parametrize("chunk", [1, 5, 64, 10_000])
def test_chunked_head_equals_unchunked(chunk):
    torch.manual_seed(1)
    hidden = torch.randn(3, 11, 16)
    head = torch.nn.Linear(16, 50, bias=False)
    ids = torch.randint(0, 50, (3, 11))
    lp, h = chunked_logprobs_entropy(hidden, head, ids, chunk_size=chunk)
    lp_ref, h_ref = chunked_logprobs_entropy(hidden, head, ids, chunk_size=10_000)
    logits = head(hidden).double()
    logp = torch.log_softmax(logits, -1)
    assert (lp[:, 1:].double() - logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)).abs().max() < 1e-5
    assert torch.equal(lp, lp_ref) or (lp - lp_ref).abs().max() < 1e-6
    assert (h - h_ref).abs().max() < 1e-6
    assert torch.equal(lp[:, 0], torch.zeros(3)) and torch.equal(h[:, 0], torch.zeros(3))
