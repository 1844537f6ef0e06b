"""Signals on tiny random llama models: alignment, padding invariance, chunking, masking, registry errors."""

from __future__ import annotations

import pytest
import torch

from helpers import padded_batch, tiny
from test_capture import eager_entropies
from tokenfocus.signals import SIGNALS, compute_signals, parse_signal_spec
from tokenfocus.signals._vocab import chunked_logprobs_entropy
from tokenfocus.types import TokenBatch


def rollout_batch(prompt_lengths, completion_lengths, prompt_width, completion_width, seed=0):
    """[left-padded prompt | right-padded completion] as in TRL; pad id 2 also appears as a real EOS."""
    g = torch.Generator().manual_seed(seed)
    b = len(prompt_lengths)
    ids = torch.randint(3, 90, (b, prompt_width + completion_width), generator=g)
    attn = torch.zeros_like(ids, dtype=torch.bool)
    resp = torch.zeros_like(attn)
    for r, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        attn[r, prompt_width - p : prompt_width + c] = True
        resp[r, prompt_width : prompt_width + c] = True
        if c:
            ids[r, prompt_width + c - 1] = 2  # a real EOS equal to the pad id
    ids = ids.masked_fill(~attn, 2)
    return TokenBatch(ids, attn, resp)


def test_predicting_row_alignment_by_hand_from_eager_attentions():
    """Token t's value is row t-1 of the attention (row P-1, the last prompt token, for the first response token)."""
    model, _ = tiny(layers=2)
    batch = rollout_batch([5, 3], [4, 2], prompt_width=5, completion_width=4)
    ref = eager_entropies(model, batch.input_ids, batch.attention_mask)[1]  # (B, H, T) layer 1
    n = batch.attention_mask.long().cumsum(-1).double()
    normalized = torch.where(n[:, None] >= 2, ref / n.clamp_min(2).log()[:, None], torch.zeros_like(ref)).mean(1)
    got = compute_signals(model, batch, [{"name": "attention_entropy", "layers": [1]}])["attention_entropy"]
    for r in range(2):
        for t in range(9):
            expected = normalized[r, t - 1].item() if batch.response_mask[r, t] else 0.0
            assert abs(got[r, t].item() - expected) < 1e-5, (r, t)
    assert got[0, 5] == pytest.approx(normalized[0, 4].item(), abs=1e-5)  # first response token <- last prompt row
    self_rows = compute_signals(model, batch, [{"name": "attention_entropy", "layers": [1], "query_position": "self"}])
    assert self_rows["attention_entropy"][0, 5] == pytest.approx(normalized[0, 5].item(), abs=1e-5)


def test_left_padding_does_not_change_values():
    """The same prompt+response with 0 and with 7 left-pad tokens gives identical values (valid-key counts)."""
    model, _ = tiny()
    base = rollout_batch([6], [5], prompt_width=6, completion_width=5, seed=3)
    pad = 7
    padded = TokenBatch(
        torch.cat([torch.full((1, pad), 2), base.input_ids], 1),
        torch.cat([torch.zeros(1, pad, dtype=torch.bool), base.attention_mask], 1),
        torch.cat([torch.zeros(1, pad, dtype=torch.bool), base.response_mask], 1),
    )
    specs = ["attention_entropy", "predictive_entropy", "logprobs", {"name": "position", "kind": "absolute"}]
    a = compute_signals(model, base, specs)
    b = compute_signals(model, padded, specs)
    for name in a:
        assert (a[name] - b[name][:, pad:]).abs().max() < 1e-5, name
        assert b[name][:, :pad].abs().max() == 0


def test_right_padding_and_batch_mates_do_not_change_values():
    model, _ = tiny()
    batch = rollout_batch([6, 4, 2], [5, 1, 3], prompt_width=6, completion_width=5, seed=4)
    specs = ["attention_entropy", "predictive_entropy", "logprobs"]
    together = compute_signals(model, batch, specs)
    for r in range(3):
        alone = compute_signals(model, batch.rows(r, r + 1), specs)
        for name in specs:
            assert (alone[name][0] - together[name][r]).abs().max() < 1e-5


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


def test_all_masked_rows_and_empty_completions_give_zeros_not_nan():
    model, _ = tiny()
    batch = rollout_batch([5, 3, 4], [3, 0, 2], prompt_width=5, completion_width=3)
    fully_padded = TokenBatch(
        torch.cat([batch.input_ids, torch.full((1, 8), 2)]),
        torch.cat([batch.attention_mask, torch.zeros(1, 8, dtype=torch.bool)]),
        torch.cat([batch.response_mask, torch.zeros(1, 8, dtype=torch.bool)]),
    )
    specs = list(SIGNALS) + [{"name": "attention_entropy", "sink": "exclude", "label": "ae_nosink"},
                             {"name": "attention_entropy", "head_reduce": "max", "layers": "all", "label": "ae_max"}]
    values = compute_signals(model, fully_padded, specs)
    for name, v in values.items():
        assert torch.isfinite(v).all(), name
        assert v[1].abs().max() == 0 and v[3].abs().max() == 0, name
        assert v[~fully_padded.response_mask].abs().max() == 0, name


def test_attention_entropy_is_temperature_invariant_predictive_entropy_is_not():
    model, _ = tiny()
    batch = rollout_batch([5], [4], prompt_width=5, completion_width=4)
    cold = compute_signals(model, batch, ["attention_entropy", "predictive_entropy"], temperature=0.5)
    hot = compute_signals(model, batch, ["attention_entropy", "predictive_entropy"], temperature=2.0)
    assert torch.equal(cold["attention_entropy"], hot["attention_entropy"])
    assert (hot["predictive_entropy"] - cold["predictive_entropy"]).abs().max() > 1e-3


def test_normalized_entropy_lies_in_unit_interval_and_head_reductions_order():
    model, _ = tiny(layers=3)
    batch = rollout_batch([6, 6], [5, 5], prompt_width=6, completion_width=5)
    specs = [{"name": "attention_entropy", "layers": "all", "head_reduce": r, "label": r} for r in ("min", "mean", "max")]
    specs.append({"name": "attention_entropy", "layers": "all", "normalize": "none", "label": "nats"})
    v = compute_signals(model, batch, specs)
    m = batch.response_mask
    assert (v["max"][m] <= 1 + 1e-6).all() and (v["min"][m] >= 0).all()
    assert (v["min"][m] <= v["mean"][m] + 1e-6).all() and (v["mean"][m] <= v["max"][m] + 1e-6).all()
    assert (v["nats"][m] > v["mean"][m]).all()  # log n > 1 for n >= 3 keys


def test_position_and_random_controls():
    batch = rollout_batch([3, 2], [4, 1], prompt_width=3, completion_width=4)
    model, _ = tiny()
    v = compute_signals(model, batch, [
        "position", {"name": "position", "kind": "relative", "label": "rel"},
        {"name": "position", "kind": "absolute", "label": "abs"},
        {"name": "random", "seed": 7, "label": "r7"}, {"name": "random", "seed": 7, "label": "r7b"},
        {"name": "random", "seed": 8, "label": "r8"},
    ])
    assert v["position"][0, 3:].tolist() == [0, 1, 2, 3] and v["position"][1, 3:].tolist() == [0, 0, 0, 0]
    assert v["rel"][0, 3:].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert v["abs"][1, 3].item() == 2  # two real prompt tokens before it, left padding not counted
    assert torch.equal(v["r7"], v["r7b"]) and not torch.equal(v["r7"], v["r8"])
    assert v["r7"][~batch.response_mask].abs().max() == 0


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="Registered: .*attention_entropy"):
        parse_signal_spec("attention_entropi")
    with pytest.raises(ValueError, match="unknown option.*Valid options: layers"):
        parse_signal_spec({"name": "attention_entropy", "layer": 3})
    model, _ = tiny()
    batch = rollout_batch([3], [2], prompt_width=3, completion_width=2)
    with pytest.raises(ValueError, match="unique"):
        compute_signals(model, batch, ["position", "position"])
    with pytest.raises(ValueError, match="head_reduce"):
        compute_signals(model, batch, [{"name": "attention_entropy", "head_reduce": "sum"}])
