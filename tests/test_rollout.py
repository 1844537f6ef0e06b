"""Generation layout: [left-padded prompt | right-padded completion], EOS included, masks from lengths."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny
from tokenfocus.rollout import PromptError, _cut_at_eos, generate_rollout, token_pieces


def test_rollout_layout_and_masks():
    model, tok = tiny()
    prompts = ["Compute 1+2.", "Hi", "A longer prompt than the others."]
    rollout = generate_rollout(model, tok, prompts, max_new_tokens=6, temperature=1.0, seed=3, batch_size=2)
    batch, p = rollout.batch, rollout.prompt_width
    assert not batch.response_mask[:, :p].any()
    for r, prompt in enumerate(prompts):
        prompt_ids = tok(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True), add_special_tokens=False).input_ids
        n = len(prompt_ids)
        assert batch.input_ids[r, p - n : p].tolist() == prompt_ids  # the prompt ends right before column P
        assert batch.attention_mask[r, p - n :p].all() and not batch.attention_mask[r, : p - n].any()
        length = int(batch.response_mask[r].sum())
        assert 1 <= length <= 6
        assert batch.response_mask[r, p : p + length].all()  # contiguous from column P
        assert tok.decode(batch.input_ids[r, p : p + length]) == rollout.completions[r]


def test_eos_is_kept_in_the_response_even_when_pad_equals_eos():
    assert _cut_at_eos([5, 6, 2, 2, 2], {2}) == [5, 6, 2]
    assert _cut_at_eos([5, 6, 7], {2}) == [5, 6, 7]


def test_same_seed_same_samples():
    model, tok = tiny()
    a = generate_rollout(model, tok, ["x", "y"], max_new_tokens=5, temperature=1.0, seed=11)
    b = generate_rollout(model, tok, ["x", "y"], max_new_tokens=5, temperature=1.0, seed=11)
    assert torch.equal(a.batch.input_ids, b.batch.input_ids)


def test_bad_prompts_are_refused_with_the_fix():
    model, tok = tiny()
    with pytest.raises(PromptError, match="No prompts"):
        generate_rollout(model, tok, [])
    with pytest.raises(PromptError, match="empty"):
        generate_rollout(model, tok, ["ok", "   "])
    with pytest.raises(PromptError, match="do not fit the model context of 512"):
        generate_rollout(model, tok, ["x" * 600], max_new_tokens=4)


def test_token_pieces_cover_the_text_with_offsets():
    _, tok = tiny()
    ids = tok("Answer: 85\n").input_ids
    pieces, offsets = token_pieces(tok, ids)
    text = tok.decode(ids)
    assert "".join(pieces) == text
    assert all(text[s:e] == piece for piece, (s, e) in zip(pieces, offsets))


@pytest.mark.parametrize("batch_size", [4, 7, 64])
def test_samples_sharing_one_prompt_forward_continue_it_exactly(batch_size):
    """samples_per_prompt = k: each prompt runs through the model once and its cache is copied to k rows. Greedy, the
    k rows must equal generating each prompt k times from scratch: a wrong cache row, position or padding changes
    the tokens. Prompts of different lengths (left padding); one or several prompts per generate call."""
    model, tok = tiny()
    prompts = ["Compute 1+2.", "Hi", "A longer prompt than the others, with more words.", "x"]
    plain = generate_rollout(model, tok, [p for p in prompts for _ in range(3)], max_new_tokens=8, temperature=0.0,
                             batch_size=batch_size)
    shared = generate_rollout(model, tok, prompts, max_new_tokens=8, temperature=0.0, batch_size=batch_size,
                              samples_per_prompt=3)
    assert torch.equal(shared.batch.input_ids, plain.batch.input_ids)
    assert torch.equal(shared.batch.response_mask, plain.batch.response_mask)
    assert shared.prompts == plain.prompts and shared.completions == plain.completions
    sampled = generate_rollout(model, tok, prompts, max_new_tokens=8, temperature=1.0, seed=5, batch_size=batch_size,
                               samples_per_prompt=4)
    assert len(sampled.completions) == 16 and sampled.prompts[4:8] == [prompts[1]] * 4
    assert all(len(set(sampled.completions[4 * i:4 * i + 4])) > 1 for i in range(4))  # k draws, not one copied
    again = generate_rollout(model, tok, prompts, max_new_tokens=8, temperature=1.0, seed=5, batch_size=batch_size,
                             samples_per_prompt=4)
    assert torch.equal(again.batch.input_ids, sampled.batch.input_ids)
    with pytest.raises(ValueError, match="samples_per_prompt must be >= 1"):
        generate_rollout(model, tok, prompts, samples_per_prompt=0)
