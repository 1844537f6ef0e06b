"""Tokenizer metrics (B9): hand-derived entropies, the Renyi family's limits, `tokenization-scorer` where the
metrics overlap, and BPEs trained locally."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenfocus.tokenizers import VocabTrie
from tokenfocus.tokenizers.metrics import (
    entropy_bits,
    kgram_entropies,
    renyi_entropy_bits,
    tokenizer_metrics,
    train_bpe,
)

CORPUS = [f"Natalia sold {n} clips to {n + 3} of her friends in April, and then she sold half as many clips in May."
          for n in range(40)] + ["Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes."] * 5


def test_entropy_of_uniform_and_degenerate_counts():
    assert entropy_bits([5] * 8) == pytest.approx(3.0)  # uniform over 8 symbols: log2 8
    assert entropy_bits([7]) == 0.0 and entropy_bits([]) == 0.0
    assert entropy_bits([1, 1, 2]) == pytest.approx(1.5)  # 1/4, 1/4, 1/2


def test_renyi_limits():
    counts = [1, 2, 3, 10]
    assert renyi_entropy_bits(counts, 1.0) == pytest.approx(entropy_bits(counts))
    assert renyi_entropy_bits(counts, 0.0) == pytest.approx(2.0)  # Hartley: log2 of the support
    assert renyi_entropy_bits(counts, 1.0 + 1e-7) == pytest.approx(entropy_bits(counts), abs=1e-5)
    p = np.array(counts) / sum(counts)
    assert renyi_entropy_bits(counts, 2.0) == pytest.approx(-math.log2((p ** 2).sum()))  # collision entropy
    assert renyi_entropy_bits([4] * 16, 3.0) == pytest.approx(4.0)  # every order agrees on uniform


def test_kgram_entropies_of_a_period_two_stream():
    """abab...: unigrams {a, b} 1 bit; bigrams {ab, ba} 1 bit, so H_2|1 = 0 (the next token is determined)."""
    h = kgram_entropies([[0, 1] * 50], k_max=3)
    assert h["H_1"] == pytest.approx(1.0) and h["H_2"] == pytest.approx(1.0, abs=1e-3)
    assert h["H_2|1"] == pytest.approx(0.0, abs=1e-3) and h["H_3|2"] == pytest.approx(0.0, abs=1e-3)


def test_kgrams_never_cross_documents():
    assert kgram_entropies([[0], [1]], k_max=2)["H_2"] == 0.0  # no bigram at all


def test_renyi_and_shannon_efficiency_agree_with_tokenization_scorer(bpe_tokenizer):
    import tokenization_scorer  # a test extra (pyproject.toml), installed by `make test`

    tokenizer = train_bpe(CORPUS, 300)
    metrics = tokenizer_metrics(tokenizer, CORPUS, renyi_alpha=2.5)
    lines = [" ".join(f"t{i}" for i in tokenizer(t, add_special_tokens=False)["input_ids"]) for t in CORPUS]
    ours = metrics["renyi_efficiency_2.5"]
    theirs = tokenization_scorer.score("\n".join(lines), metric="renyi", power=2.5, vocab=len(tokenizer))
    assert ours == pytest.approx(theirs, rel=1e-9)
    shannon = tokenization_scorer.score("\n".join(lines), metric="shannon", vocab=len(tokenizer))
    assert metrics["capacity_utilization"] == pytest.approx(shannon, rel=1e-9)


def test_metrics_of_local_bpes_order_by_vocabulary_size():
    small, large = train_bpe(CORPUS, 280), train_bpe(CORPUS, 400)
    m_small, m_large = tokenizer_metrics(small, CORPUS), tokenizer_metrics(large, CORPUS)
    assert m_large["bytes_per_token"] > m_small["bytes_per_token"] > 1.0
    assert m_large["tokens"] < m_small["tokens"]
    assert m_small["bytes_per_token"] == pytest.approx(sum(len(t) for t in CORPUS) / m_small["tokens"])
    for m in (m_small, m_large):
        assert 0 < m["capacity_utilization"] <= 1 and m["H_1"] <= math.log2(m["vocab_size"])
        assert m["bits_per_char_lzma"] > 0 and m["H_2|1"] <= m["H_1"]


def test_a_trained_bpe_is_byte_exact_for_the_probes():
    tokenizer = train_bpe(CORPUS, 300)
    trie = VocabTrie.from_tokenizer(tokenizer)
    assert trie.kind == "byte_level" and trie.decode_bytes(trie.encode("Weng earns $12")) == b"Weng earns $12"
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        train_bpe(CORPUS, 100)


def test_empty_texts_are_a_clear_error(bpe_tokenizer):
    with pytest.raises(ValueError, match="no tokens"):
        tokenizer_metrics(bpe_tokenizer, ["", ""])
