"""Tokenizer transfer baselines (B7): each initialization by its definition, a transfer onto the same vocabulary
that changes nothing, bits per byte against a naive sum, and continued training that lowers the loss."""

from __future__ import annotations

import math

import pytest
import torch

from tokenfocus.models import build_tiny_llama
from tokenfocus.tokenizers import VocabTrie
from tokenfocus.tokenizers.metrics import train_bpe
from tokenfocus.tokenizers.transfer import (
    _sparsemax,
    bits_per_byte,
    continue_training,
    init_embeddings,
    transfer_model,
)

TEXTS = ["Natalia sold 48 clips in April and half as many in May.", "Weng earns 12 dollars an hour.",
         "Betty has only half of the money she needs for a new wallet."] * 10


@pytest.fixture(scope="module")
def old():
    return train_bpe(TEXTS, 300)


@pytest.fixture(scope="module")
def new():
    return train_bpe(TEXTS, 340)


@pytest.fixture(scope="module")
def model(old):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(old), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=old.bos_token_id, eos_token_id=old.eos_token_id, pad_token_id=old.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_sparsemax_hand_case():
    """z = (1, 0.5, -1): support {1, 2}, tau = (1.5 - 1) / 2 = 0.25 -> (0.75, 0.25, 0)."""
    got = _sparsemax(torch.tensor([[1.0, 0.5, -1.0]]))
    assert torch.allclose(got, torch.tensor([[0.75, 0.25, 0.0]]))
    many = _sparsemax(torch.randn(5, 9) * 3)
    assert torch.allclose(many.sum(-1), torch.ones(5)) and (many >= 0).all()


def test_mean_init_keeps_shared_tokens_and_averages_the_pieces(model, old, new):
    o, n = VocabTrie.from_tokenizer(old), VocabTrie.from_tokenizer(new)
    emb = model.get_input_embeddings().weight
    got = init_embeddings(emb, o, n, "mean")
    checked_new = 0
    for i, data in enumerate(n.token_bytes):
        if data is None:
            name = new.convert_ids_to_tokens(i)
            assert torch.equal(got[i], emb[old.convert_tokens_to_ids(name)])  # <|im_end|> keeps its vector
        elif o.ids_of(data):
            assert torch.equal(got[i], emb[o.ids_of(data)[0]])
        else:
            pieces = o.encode(data.decode())
            assert len(pieces) >= 2 and torch.allclose(got[i], emb[pieces].mean(0))
            checked_new += 1
    assert checked_new >= 20  # the larger BPE has merges the smaller one lacks


def test_focus_init_is_a_convex_combination_of_shared_tokens(model, old, new):
    o, n = VocabTrie.from_tokenizer(old), VocabTrie.from_tokenizer(new)
    emb = model.get_input_embeddings().weight.detach()
    mean = init_embeddings(emb, o, n, "mean")
    focus = init_embeddings(emb, o, n, "focus", focus_temperature=1e-4)
    shared = [i for i, b in enumerate(n.token_bytes) if b and o.ids_of(b)]
    other = [i for i, b in enumerate(n.token_bytes) if b and not o.ids_of(b)]
    assert torch.equal(focus[shared], mean[shared])
    # at a tiny temperature sparsemax puts all weight on the most similar shared token
    anchors = torch.nn.functional.normalize(mean[shared], dim=-1)
    nearest = (torch.nn.functional.normalize(mean[other], dim=-1) @ anchors.T).argmax(-1)
    expected = emb[[o.ids_of(n.token_bytes[shared[k]])[0] for k in nearest.tolist()]]
    assert torch.allclose(focus[other], expected, atol=1e-6)


def test_random_init_matches_the_old_statistics_and_its_seed(model, old, new):
    o, n = VocabTrie.from_tokenizer(old), VocabTrie.from_tokenizer(new)
    emb = model.get_input_embeddings().weight.detach()
    a, b = init_embeddings(emb, o, n, "random", seed=1), init_embeddings(emb, o, n, "random", seed=1)
    assert torch.equal(a, b) and not torch.equal(a, init_embeddings(emb, o, n, "random", seed=2))
    with pytest.raises(ValueError, match="choose mean, focus or random"):
        init_embeddings(emb, o, n, "zett")


def test_transfer_onto_the_same_vocabulary_changes_nothing(model, old):
    moved = transfer_model(model, old, old, "mean")
    ids = torch.tensor([old("Weng earns 12 dollars")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(moved(ids).logits, model(ids).logits)
    assert bits_per_byte(moved, old, TEXTS[:3]) == pytest.approx(bits_per_byte(model, old, TEXTS[:3]))


def test_transfer_onto_a_new_vocabulary(model, old, new):
    moved = transfer_model(model, old, new, "focus")
    assert moved.get_input_embeddings().weight.shape[0] == len(new)
    assert moved.get_output_embeddings().weight.data_ptr() == moved.get_input_embeddings().weight.data_ptr()
    assert model.get_input_embeddings().weight.shape[0] == len(old)  # the original is untouched
    assert all(math.isfinite(x) and x > 0 for x in bits_per_byte(moved, new, TEXTS[:4]))


def test_bits_per_byte_is_the_naive_sum(model, old):
    text = TEXTS[1]
    ids = [old.bos_token_id] + old(text, add_special_tokens=False)["input_ids"]
    nats = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            logits = model(torch.tensor([ids[:t]])).logits[0, -1]
            nats -= torch.log_softmax(logits, -1)[ids[t]].item()
    expected = nats / math.log(2) / len(text.encode())
    got = bits_per_byte(model, old, [text, TEXTS[0]], batch_size=2)  # padded next to a longer document
    assert got[0] == pytest.approx(expected, rel=1e-5)


def test_continued_training_lowers_held_in_loss(model, old, new):
    moved = transfer_model(model, old, new, "mean")
    before = sum(bits_per_byte(moved, new, TEXTS[:3]))
    losses = continue_training(moved, new, TEXTS, steps=15, learning_rate=3e-3)
    assert len(losses) == 15 and sum(bits_per_byte(moved, new, TEXTS[:3])) < before
