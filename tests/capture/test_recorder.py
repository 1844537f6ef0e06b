"""The recorder inside a real HF model: equality with eager attentions, hook hygiene, recompute, chunking, key mass."""

from __future__ import annotations

import pytest
import torch

from helpers import eager_entropies, eager_probabilities, padded_batch, reference_entropy, tiny
from tokenfocus.capture import AttentionEntropyRecorder, find_decoder_layers, record_attention_entropy


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("backend", ["lse", "chunked"])
@pytest.mark.parametrize("base", ["sdpa", "eager"])
def test_recorder_equals_eager_output_attentions_with_gqa_and_padding(side, backend, base):
    model, _ = tiny(attn=base, layers=3, hidden=48, heads=6, kv_heads=2)
    ids, mask = padded_batch([12, 7, 3, 12], 12, side=side)
    reference = eager_entropies(model, ids, mask)
    with torch.no_grad(), record_attention_entropy(model, "all", backend=backend) as recorder:
        model(input_ids=ids, attention_mask=mask.long())
    records = recorder.result()
    assert sorted(records) == [0, 1, 2]
    for layer, ref in enumerate(reference):
        got = records[layer].entropy
        assert got.shape == (4, 6, 12)  # one value per *query* head, not per KV head
        err = ((got.double() - ref).abs() * mask[:, None, :]).max().item()
        assert err <= 1e-4, (layer, err)
        n_keys = records[layer].n_keys
        expected_n = mask.long().cumsum(-1).float() if side == "left" else torch.arange(1, 13).float().expand(4, 12).minimum(mask.sum(-1, keepdim=True).float())
        assert torch.equal(n_keys * mask, expected_n * mask)


def test_logits_unchanged_and_implementation_restored():
    model, _ = tiny()
    ids, mask = padded_batch([10, 6], 10)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask.long()).logits
        with record_attention_entropy(model, "all"):
            during = model(input_ids=ids, attention_mask=mask.long()).logits
        after = model(input_ids=ids, attention_mask=mask.long()).logits
    assert torch.equal(before, during)
    assert torch.equal(before, after)
    assert model.config._attn_implementation == "sdpa"
    assert not any(hasattr(layer.self_attn, "_tokenfocus_recorder") for layer in find_decoder_layers(model))


def test_recorder_removed_after_exception():
    model, _ = tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with record_attention_entropy(model, "all"):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert not any(hasattr(layer.self_attn, "_tokenfocus_recorder") for layer in find_decoder_layers(model))


def test_gradient_checkpoint_recompute_records_once():
    model, _ = tiny()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids, mask = padded_batch([8, 8], 8)
    with record_attention_entropy(model, "all") as recorder:
        loss = model(input_ids=ids, attention_mask=mask.long()).logits.sum()
        loss.backward()
    assert all(len(calls) == 1 for calls in recorder.calls.values())
    assert sorted(recorder.calls) == [0, 1]


def test_row_chunks_concatenate_in_call_order():
    model, _ = tiny()
    ids, mask = padded_batch([9, 4, 7, 2, 9], 9)
    with torch.no_grad(), record_attention_entropy(model, [1]) as whole:
        model(input_ids=ids, attention_mask=mask.long())
    with torch.no_grad(), record_attention_entropy(model, [1]) as chunked:
        for start in range(0, 5, 2):
            model(input_ids=ids[start : start + 2], attention_mask=mask[start : start + 2].long())
    a, b = whole.result()[1], chunked.result()[1]
    assert (a.entropy - b.entropy).mul(mask[:, None]).abs().max() < 1e-6
    assert torch.equal(a.n_keys * mask, b.n_keys * mask)


def test_kv_cached_decoding_is_refused():
    model, tok = tiny()
    ids, mask = padded_batch([4], 4)
    with record_attention_entropy(model, "all"), pytest.raises(RuntimeError, match="KV-cached"):
        model.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=2, do_sample=False, pad_token_id=2)


def test_bad_layers_and_backend_are_rejected():
    model, _ = tiny()
    with pytest.raises(ValueError, match="out of range"):
        with record_attention_entropy(model, [7]):
            pass
    with pytest.raises(ValueError, match="attention_entropy: backend='magic' is not one of"):
        with record_attention_entropy(model, "all", backend="magic"):
            pass


class _FakeAttention(torch.nn.Module):
    layer_idx = 0


def test_recorder_switches_to_exact_path_where_the_identity_breaks():
    """Soft-capping, learned sinks and additive biases are recorded exactly (chunked), and the reason is kept."""
    g = torch.Generator().manual_seed(5)
    b, h, s, d = 2, 4, 10, 8
    q, k = torch.randn(b, h, s, d, generator=g) * 2, torch.randn(b, 2, s, d, generator=g)
    k_rep = k.repeat_interleave(2, dim=1)
    allowed = torch.ones(s, s, dtype=torch.bool).tril()[None, None].expand(b, 1, s, s)
    sinks = torch.randn(h, generator=g)
    bias = torch.zeros(b, 1, s, s).masked_fill(~allowed, torch.finfo(torch.float32).min)
    bias = bias + torch.where(allowed, -0.3 * torch.arange(s).float().flip(0)[None, None, None, :], 0.0)
    cases = {
        "soft-capping": ({"softcap": 4.0}, allowed, dict(softcap=4.0)),
        "sink": ({"s_aux": sinks}, allowed, dict(sinks=sinks)),
        "additive position bias": ({}, bias, dict(bias=bias.clamp_min(-1e4))),
    }
    for reason, (kwargs, mask, ref_kwargs) in cases.items():
        recorder = AttentionEntropyRecorder([0])
        recorder.record(_FakeAttention(), q, k, mask, None, kwargs)
        got = recorder.result()[0].entropy
        ref = reference_entropy(q, k_rep, allowed, d**-0.5, **ref_kwargs)
        assert (got.double() - ref).abs().max() < 1e-5, reason
        assert reason in recorder.fallbacks[0]


def test_model_precision_on_a_bf16_model_is_close_to_fp32():
    model, _ = tiny()
    model.to(torch.bfloat16)
    ids, mask = padded_batch([12, 8], 12)
    with torch.no_grad():
        with record_attention_entropy(model, "all") as exact:
            model(input_ids=ids, attention_mask=mask.long())
        with record_attention_entropy(model, "all", precision="model") as fast:
            model(input_ids=ids, attention_mask=mask.long())
    for layer in (0, 1):
        diff = (exact.result()[layer].entropy - fast.result()[layer].entropy).abs() * mask[:, None]
        assert diff.max() < 5e-2, diff.max()
    with pytest.raises(ValueError, match="precision"):
        with record_attention_entropy(model, "all", precision="fp8"):
            pass


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("backend", ["lse", "chunked"])
def test_recorded_key_mass_equals_eager_sum_over_marked_columns(side, backend):
    model, _ = tiny(layers=2, hidden=48, heads=6, kv_heads=2)
    ids, mask = padded_batch([11, 6, 3, 11], 11, side=side, seed=4)
    g = torch.Generator().manual_seed(1)
    marks = (torch.rand(ids.shape, generator=g) < 0.4) & mask
    reference = eager_probabilities(model, ids, mask)
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    # two forwards of two rows each read consecutive rows of the marks
    with record_attention_entropy(model, "all", backend=backend, key_marks=marks) as recorder, torch.no_grad():
        for rows in (slice(0, 2), slice(2, 4)):
            model(input_ids=ids[rows], attention_mask=mask[rows].long(), position_ids=positions[rows])
    for layer, record in recorder.result().items():
        expected = (reference[layer] * marks[:, None, None, :].double()).sum(-1)  # (B, H, T)
        real_rows = mask[:, None, :].expand_as(expected)  # padding query rows carry no meaning
        assert (record.key_mass.double() - expected)[real_rows].abs().max() < 1e-5, layer
        assert record.key_mass.min() >= 0 and record.key_mass.max() <= 1 + 1e-5


def test_key_marks_given_at_construction_must_cover_every_forward_row():
    """Marks are consumed b rows per forward of b rows: a second forward past the last mark row is refused."""
    model, _ = tiny()
    ids, mask = padded_batch([6, 4], 6)
    with torch.no_grad(), record_attention_entropy(model, [0], key_marks=mask[:1]) as recorder:
        model(input_ids=ids[:1], attention_mask=mask[:1].long())
        assert recorder.result()[0].key_mass.shape == (1, 4, 6)
        with pytest.raises(ValueError, match="key_marks has shape"):
            model(input_ids=ids[1:], attention_mask=mask[1:].long())
