"""A tiny BPE over {a, b, space} with a GPT-2-like regex pre-tokenizer and a random llama of its vocabulary size:
small enough that every token sequence up to 4 tokens can be scored one by one (the brute-force references)."""

from __future__ import annotations

import pytest
import torch


def tiny_bpe():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # ranked merges: "ab" first, so "aab" -> a ab; " a" before "ba", so " ba" stays " b" a ... (non-trivial BPE)
    merges = [("a", "b"), (" ", "a"), ("b", "a"), (" ", "b"), ("a", "a"), (" a", "b"), ("b", "ab")]
    alphabet = ["a", "b", " "]
    vocab = {"<s>": 0, "</s>": 1}
    for piece in alphabet + ["".join(m) for m in merges]:
        vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # a word with its leading space, or a run of spaces (the run gives its last space to a following word)
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[ab]+|\s+(?!\S)|\s+"), behavior="isolated")
    backend.add_special_tokens(["<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")


@pytest.fixture(scope="module")
def bpe_tokenizer():
    return tiny_bpe()


@pytest.fixture(scope="module")
def bpe_model(bpe_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = LlamaForCausalLM(config)
        with torch.no_grad():  # sharper than init so the distributions are far from uniform
            model.lm_head.weight.mul_(40.0)
    return model.double().eval()  # float64: the brute force and the covers agree to rounding
