"""Block attention (C9): hand-derived masks, equivalence to plain and per-block forwards, the chunked KL against a
naive float64 one, block sinks, segmenters, block distillation and bad input."""

from __future__ import annotations

import copy
import json
from itertools import pairwise

import pytest
import torch
from helpers import tiny

from tokenfocus.probes.block_attention import (
    BlockSensitivity,
    block_allowed,
    block_hidden,
    block_mask,
    block_position_ids,
    block_sensitivity,
    head_logits,
    insert_block_sinks,
    probe_block_sensitivity,
)
from tokenfocus.probes.block_distill import block_distill, merge_blocks
from tokenfocus.probes.segment import segment, token_blocks

BOS = 1
# The 6-token example: BOS (global), block 0 = positions 1-2, block 1 = positions 3-4, query block 2 = position 5.
SIX = torch.tensor([[-1, 0, 0, 1, 1, 2]])


def _batch(ids, blocks, mask=None):
    ids = torch.as_tensor(ids)
    mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    return ids, mask, torch.as_tensor(blocks)


def _random_ids(rows, width, seed=0):
    ids = torch.randint(3, 90, (rows, width), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS
    return ids


def test_block_mask_by_hand_on_six_tokens():
    """Row i lists the keys query i may see. BOS sees itself; a block token sees BOS (global_bos) and the earlier
    tokens of its own block; the query token (the last block) sees everything before it, causally."""
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],  # BOS
        [1, 1, 0, 0, 0, 0],  # block 0
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],  # block 1: not block 0
        [1, 0, 0, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],  # query
    ], dtype=torch.bool)
    mask = torch.ones(1, 6, dtype=torch.bool)
    assert torch.equal(block_allowed(SIX, mask)[0], expected)
    no_bos = expected.clone()
    no_bos[1:5, 0] = False  # without global_bos the blocks lose the BOS column; BOS and the query keep theirs
    assert torch.equal(block_allowed(SIX, mask, global_bos=False)[0], no_bos)
    additive = block_mask(SIX, mask, dtype=torch.float16)
    assert additive.shape == (1, 1, 6, 6) and additive.dtype == torch.float16
    assert torch.equal(additive[0, 0] == 0, expected)
    assert (additive[0, 0][~expected] == torch.finfo(torch.float16).min).all()
    # query_block=1 makes block 1 the one that sees everything; block 2 then only sees itself and BOS
    as_query = block_allowed(SIX, mask, query_block=1)[0]
    assert as_query[3].tolist() == [1, 1, 1, 1, 0, 0] and as_query[5].tolist() == [1, 0, 0, 0, 0, 1]


def test_padding_keys_are_forbidden_and_padded_rows_keep_their_diagonal():
    """Left padding of two: the padded rows see only themselves (softmax stays finite), no row sees a pad key."""
    blocks = torch.tensor([[-1, -1, -1, 0, 0, 1], [-1, 0, 0, 1, 1, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    allowed = block_allowed(blocks, mask)
    assert allowed[0, 0].tolist() == [1, 0, 0, 0, 0, 0] and allowed[0, 1].tolist() == [0, 1, 0, 0, 0, 0]
    assert not allowed[0, 2:, :2].any()
    assert allowed[0, 5].tolist() == [0, 0, 1, 1, 1, 1]
    model, _ = tiny()
    ids = _random_ids(2, 6)
    logits = head_logits(model, block_hidden(model, ids, mask, blocks))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_one_block_equals_a_plain_forward(attn, side):
    """No split (BOS global, every other token in one block, which is the query block) = full causal attention."""
    model, _ = tiny(attn)
    ids = _random_ids(2, 9, seed=1)
    mask = torch.ones_like(ids, dtype=torch.bool)
    if side == "right":
        mask[1, 6:] = False
    else:
        mask[1, :3] = False
        ids[1, 3] = BOS
    blocks = torch.where(ids == BOS, -1, 0).masked_fill(~mask, -1)
    position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask.long(), position_ids=position_ids).logits
        blocked = head_logits(model, block_hidden(model, ids, mask, blocks))
    assert (plain - blocked)[mask].abs().max() < 1e-5


@pytest.mark.parametrize("positions", ["original", "local"])
def test_a_non_final_block_equals_a_fresh_forward_of_it_alone(positions):
    """Block 1 (positions 5-8) under block attention = a forward of [BOS, block 1] alone at positions [0, 5..8]
    (original: RoPE sees the same relative offsets) or [0, 1..4] (local)."""
    model, _ = tiny()
    ids = _random_ids(1, 12, seed=2)
    blocks = torch.tensor([[-1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    fresh_ids = torch.cat([ids[:, :1], ids[:, 5:9]], 1)
    fresh_pos = torch.tensor([[0, 5, 6, 7, 8]]) if positions == "original" else torch.tensor([[0, 1, 2, 3, 4]])
    assert block_position_ids(blocks, mask, positions=positions)[0, 5:9].tolist() == fresh_pos[0, 1:].tolist()
    with torch.no_grad():
        blocked = head_logits(model, block_hidden(model, ids, mask, blocks, positions=positions))
        fresh = model(input_ids=fresh_ids, position_ids=fresh_pos).logits
        full = model(input_ids=ids).logits
    assert (blocked[:, 5:9] - fresh[:, 1:]).abs().max() < 1e-5
    assert (blocked[:, :5] - full[:, :5]).abs().max() < 1e-5  # BOS + block 0 see what they see in full attention
    assert (blocked[:, 5:9] - full[:, 5:9]).abs().max() > 1e-4  # the test can fail: block 1 lost block 0


def test_local_positions_by_hand():
    """Two globals (BOS + a template token), then blocks of 2 and 3 tokens restart at 2, the query keeps 7, 8."""
    blocks = torch.tensor([[-1, -1, 0, 0, 1, 1, 1, 2, 2]])
    mask = torch.ones_like(blocks, dtype=torch.bool)
    assert block_position_ids(blocks, mask, positions="local")[0].tolist() == [0, 1, 2, 3, 2, 3, 4, 7, 8]
    assert block_position_ids(blocks, mask)[0].tolist() == list(range(9))


def _naive_sensitivity(model, ids, mask, blocks):
    """Definition: full softmax in float64 of both (B, T, V) logits, KL of row t-1 stored at t, 0 off the mask."""
    with torch.no_grad():
        position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)
        full = model(input_ids=ids, attention_mask=mask.long(), position_ids=position_ids).logits.double()
        blocked = head_logits(model, block_hidden(model, ids, mask, blocks)).double()
    p, logp, logq = full.softmax(-1), full.log_softmax(-1), blocked.log_softmax(-1)
    kl = (p * (logp - logq)).sum(-1)  # (B, T) at the predicting row
    out = torch.zeros_like(kl)
    out[:, 1:] = kl[:, :-1]
    valid = torch.zeros_like(mask)
    valid[:, 1:] = mask[:, 1:] & mask[:, :-1]
    return torch.where(valid, out, torch.zeros_like(out))


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_chunked_sensitivity_equals_the_naive_kl(chunk):
    model, _ = tiny(hidden=64, heads=4, kv_heads=2)
    ids = _random_ids(2, 14, seed=3)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :4] = False  # left padding
    ids[1, 4] = BOS
    blocks = torch.tensor([[-1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2], [-1, -1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 2, 2, 2]])
    got = block_sensitivity(model, ids, mask, blocks, chunk=chunk)
    ref = _naive_sensitivity(model, ids, mask, blocks)
    assert got.dtype == torch.float32 and got.shape == (2, 14)
    assert torch.allclose(got.double(), ref, atol=1e-7, rtol=1e-4)
    assert ref.max() > 1e-5


def test_sensitivity_is_zero_on_the_first_block_and_positive_on_the_query():
    """Tokens 1..5 (block 0 and the first token of block 1) are predicted from positions that see exactly what
    full attention sees; the query's predictions miss the blocks' cross-attention."""
    model, _ = tiny()
    ids = _random_ids(1, 14, seed=4)
    blocks = torch.tensor([[-1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    kl = block_sensitivity(model, ids, mask, blocks)[0]
    assert kl[:6].abs().max() < 1e-7
    assert kl[9:].max() > 1e-5 and (kl[6:] > 1e-7).all()


def test_summary_by_hand():
    """Hand values: block means, kind means, top-k order; the JSON is plain."""
    _, tokenizer = tiny()
    ids = torch.tensor([[BOS] + tokenizer.convert_tokens_to_ids(list("abcde"))])
    values = torch.tensor([[0.0, 0.0, 0.0, 0.2, 0.4, 0.9]])
    summary = BlockSensitivity.summarize(values, SIX, torch.ones(1, 6, dtype=torch.bool), input_ids=ids,
                                         tokenizer=tokenizer, top_k=2)
    assert summary.block_means[0] == pytest.approx({0: 0.0, 1: 0.3, 2: 0.9})
    assert summary.kind_means == pytest.approx({"first": 0.0, "context": 0.3, "query": 0.9})
    assert [(t["index"], t["token"], t["kind"]) for t in summary.top] == [(5, "e", "query"), (4, "d", "context")]
    json.dumps(summary.to_json())


def test_block_sinks_are_inserted_per_non_final_block_and_map_back():
    """Left-padded batch; sink id 7, two sinks before each run of blocks 0 and 1, none before the query."""
    ids = torch.tensor([[2, 2, 1, 10, 11, 12, 13], [1, 20, 21, 22, 23, 24, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    blocks = torch.tensor([[-1, -1, -1, 0, 1, 2, 2], [-1, 0, 0, 1, 1, 2, 2]])
    out = insert_block_sinks(ids, blocks, sink_id=7, n_sinks=2, attention_mask=mask)
    assert out.input_ids.tolist() == [[2, 2, 1, 7, 7, 10, 7, 7, 11, 12, 13],
                                      [1, 7, 7, 20, 21, 7, 7, 22, 23, 24, 25]]
    assert out.block_ids.tolist() == [[-1, -1, -1, 0, 0, 0, 1, 1, 1, 2, 2], [-1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2]]
    assert out.attention_mask[0].tolist() == [0, 0] + [1] * 9 and out.attention_mask[1].all()
    assert out.index.tolist() == [[-1, -1, 2, 5, 8, 9, 10], [0, 3, 4, 7, 8, 9, 10]]
    assert torch.equal(out.gather(out.input_ids), ids.masked_fill(~mask, 0))
    logits = torch.randn(2, 11, 3)
    assert torch.equal(out.gather(logits)[1, 3], logits[1, 7])
    # A sunk block equals a fresh forward of [BOS, sink, sink, block] at the same positions.
    model, _ = tiny()
    with torch.no_grad():
        hidden = block_hidden(model, out.input_ids, out.attention_mask, out.block_ids)
        fresh = model(input_ids=torch.tensor([[1, 7, 7, 22, 23]]), position_ids=torch.tensor([[0, 5, 6, 7, 8]])).logits
    assert (head_logits(model, hidden)[1, 5:9] - fresh[0, 1:]).abs().max() < 1e-5


def test_segment_spans_cover_the_text_and_paragraphs_split_on_blank_lines():
    text = "First para. Still first!\n\nSecond para?  Yes.\n \n\nThird."
    for method, options in [("paragraph", {}), ("sentence", {}), ("fixed", {"size": 7}), ("similarity", {})]:
        spans = segment(text, method, **options)
        assert "".join(text[a:b] for a, b in spans) == text and spans[0][0] == 0
        assert all(b0 == a1 for (_, b0), (a1, _) in pairwise(spans))
    pieces = [text[a:b] for a, b in segment(text, "paragraph")]
    assert pieces == ["First para. Still first!\n\n", "Second para?  Yes.\n \n\n", "Third."]
    sentences = [text[a:b] for a, b in segment(text, "sentence")]
    assert sentences == ["First para. ", "Still first!\n\n", "Second para?  ", "Yes.\n \n\n", "Third."]
    assert segment("", "paragraph") == []


def test_fixed_segments_count_tokens_with_a_tokenizer():
    _, tokenizer = tiny()  # one character per token
    assert segment("abcdefg", "fixed", size=3, tokenizer=tokenizer) == [(0, 3), (3, 6), (6, 7)]
    assert segment("abcdefg", "fixed", size=5) == [(0, 5), (5, 7)]


def test_similarity_split_finds_a_planted_topic_change():
    cats = ("The cat sleeps on the warm mat. A cat purrs when the cat is fed. Kittens and cats chase mice. "
            "The old cat naps near the mat. ")
    stocks = ("Stock prices fell as markets opened. Investors sold shares and bonds. Markets and stock "
              "traders feared rates. Bond yields rose while shares slid.")
    text = cats + stocks
    assert segment(text, "similarity", blocks=2) == [(0, len(cats)), (len(cats), len(text))]
    assert len(cats) in [a for a, _ in segment(text, "similarity")]  # default depth cutoff: among the cuts
    assert segment(text, "similarity", depth=10.0) == [(0, len(text))]


def test_token_blocks_from_offsets():
    """A chat-like text: '<s>' (empty offsets, global), a template header outside every span (global), two context
    sentences, the question, then a closing tag after it (query). ' The' belongs with the span its last char is in."""
    text = "user: Ann has 3. She buys 2. How many?</u>"
    spans = segment(text[6:38], "sentence")
    spans = [(6 + a, 6 + b) for a, b in spans]
    assert [text[a:b] for a, b in spans] == ["Ann has 3. ", "She buys 2. ", "How many?"]
    offsets = [(0, 0), (0, 4), (4, 5), (5, 9), (9, 13), (13, 15), (15, 16), (16, 20), (20, 25), (25, 27), (27, 28),
               (28, 32), (32, 37), (37, 38), (38, 42)]  # byte-level BPE style: the space starts the next token
    assert [text[a:b] for a, b in offsets][7] == " She"
    ids = token_blocks(offsets, spans)
    assert ids.tolist() == [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert token_blocks(offsets, spans[:2], query_start=29).tolist() == ids.tolist()
    special = [False] * 14 + [True]
    assert token_blocks(offsets, spans, special_mask=special).tolist() == ids.tolist()  # after the query: query


def test_block_distill_lowers_the_held_out_kl():
    """Fixed documents, new questions: rows are [BOS, doc a, doc b, question] over all ordered pairs of 4 random
    documents; training sees 4 questions, the held-out set 2 others. A few AdamW steps lower the held-out mean
    KL(teacher full || student block) on the question tokens, with either weighting."""
    teacher, _ = tiny()
    g = torch.Generator().manual_seed(0)
    docs, questions = torch.randint(3, 90, (4, 7), generator=g), torch.randint(3, 90, (6, 6), generator=g)
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    block_row = torch.tensor([-1] + [0] * 7 + [1] * 7 + [2] * 6)

    def batch(qs):
        ids = torch.stack([torch.cat([torch.tensor([BOS]), docs[a], docs[b], questions[q]]) for a, b in pairs for q in qs])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
                "block_ids": block_row.expand(len(ids), -1)}

    train, held_out = [batch([q]) for q in range(4)], [batch([4, 5])]
    for weighting in ("kl", "uniform"):
        student = copy.deepcopy(teacher)
        log = block_distill(student, teacher, train, steps=16, lr=3e-5, weighting=weighting, held_out=held_out)
        assert log.held_out_after < 0.9 * log.held_out_before, (weighting, log.to_json())
        assert len(log.losses) == 16
        json.dumps(log.to_json())
    frozen = [p.clone() for p in teacher.parameters()]
    student = copy.deepcopy(teacher)
    block_distill(student, teacher, train[:1], steps=2, lr=1e-3, sink_id=5, block_dropout=0.5, tokens="all")
    assert all(torch.equal(a, b) for a, b in zip(frozen, teacher.parameters()))  # the teacher never moves
    assert any(not torch.equal(a, b) for a, b in zip(frozen, student.parameters()))


def test_block_dropout_merges_neighbours():
    blocks = torch.tensor([[-1, 0, 0, 1, 1, 2, 3, 3]])
    mask = torch.ones_like(blocks, dtype=torch.bool)
    assert torch.equal(merge_blocks(blocks, mask, 0.0), blocks)
    assert merge_blocks(blocks, mask, 1.0).tolist() == [[-1, 0, 0, 0, 0, 0, 3, 3]]  # the query block 3 stays


def test_bad_input_names_the_fix():
    model, _ = tiny()
    ids, mask, blocks = _batch(_random_ids(1, 6), SIX)
    with pytest.raises(ValueError, match="block_ids has shape .* one block_id entry per token"):
        block_sensitivity(model, ids, mask, blocks[:, :5])
    with pytest.raises(ValueError, match="no query block .* block id >= 0"):
        block_mask(torch.full((1, 6), -1), mask)
    with pytest.raises(ValueError, match="query_block=4"):
        block_mask(blocks, mask, query_block=4)
    with pytest.raises(ValueError, match="unknown segmentation method 'words'.*paragraph"):
        segment("a b", "words")
    with pytest.raises(ValueError, match="positions='global' is not one of"):
        block_position_ids(blocks, mask, positions="global")
    with pytest.raises(ValueError, match="'paragraph' takes the options \\[\\]; got \\['size'\\]"):
        segment("a b", "paragraph", size=3)
    with pytest.raises(ValueError, match="must both be \\(B, T\\)"):
        block_mask(blocks, mask[:, :5])
    with pytest.raises(ValueError, match="fixed segmentation needs size >= 1"):
        segment("abc", "fixed", size=0)
    with pytest.raises(ValueError, match="no token reaches the query start"):
        token_blocks([(0, 1), (1, 2)], [(0, 1)], query_start=5)
    with pytest.raises(ValueError, match="copy.deepcopy"):
        block_distill(model, model, [{"input_ids": ids, "attention_mask": mask, "block_ids": blocks}], steps=1)
    with pytest.raises(ValueError, match="lacks \\['block_ids'\\]"):
        block_distill(copy.deepcopy(model), model, [{"input_ids": ids, "attention_mask": mask}], steps=1)
    model.config._attn_implementation = "flash_attention_2"  # only read by the check, never run
    with pytest.raises(ValueError, match="set_attn_implementation\\('sdpa'\\)"):
        block_sensitivity(model, ids, mask, blocks)


@pytest.mark.slow
def test_smollm2_block_sensitivity_on_a_three_paragraph_problem():
    """Three statement paragraphs as blocks and the question as the query block, in SmolLM2's chat template: the
    first paragraph costs nothing, the query block loses context (mean KL > 0), shapes are right."""
    from tokenfocus.models import load_model

    model, tokenizer = load_model("default")
    statement = ("Maria buys 4 boxes of pencils. Each box holds 12 pencils.\n\n"
                 "She gives 9 pencils to her brother and 5 to her friend.\n\n"
                 "Later she finds 3 more pencils in her bag.\n\n")
    question = "How many pencils does Maria have now?"
    text = tokenizer.apply_chat_template([{"role": "user", "content": statement + question}], tokenize=False,
                                         add_generation_prompt=True)
    start = text.index(statement)
    spans = [(start + a, start + b) for a, b in segment(statement, "paragraph")]
    spans.append((start + len(statement), start + len(statement) + len(question)))
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
    blocks = token_blocks(enc["offset_mapping"][0], spans)[None]
    assert sorted(blocks.unique().tolist()) == [-1, 0, 1, 2, 3]
    mask = enc["attention_mask"].bool()
    summary = probe_block_sensitivity(model, tokenizer, enc["input_ids"], mask, blocks, top_k=5)
    assert summary.values.shape == enc["input_ids"].shape
    assert summary.kind_means["first"] < 1e-4
    assert summary.kind_means["query"] > 1e-3 and summary.kind_means["context"] > 1e-3
    json.dumps(summary.to_json())
