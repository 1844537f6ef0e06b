"""Information-theoretic tokenizer metrics (B9) and local BPE training.

Paper: *An Information-Theoretic Perspective on LLM Tokenizers*, arXiv 2601.09039: a tokenizer is a
compressor; measure how short its token stream is (compression), how much information each token carries
(k-gram entropies, conditional entropies), how evenly it uses its vocabulary (capacity utilization
eta = H_1 / log2 K, and the Renyi efficiency of Zouhar et al. 2023, `tokenization-scorer`), and how much a
downstream compressor still finds in the stream (bits per character after LZMA).

All entropies are in bits, computed from counts of one token stream per document (k-grams never cross
documents). K is the tokenizer's vocabulary size (including special tokens), not the number of types seen.
"""

from __future__ import annotations

import lzma
import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np


def entropy_bits(counts: Iterable[int]) -> float:
    """Shannon entropy (bits) of the distribution given by counts."""
    c = np.array([x for x in counts if x > 0], dtype=np.float64)
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def renyi_entropy_bits(counts: Iterable[int], alpha: float) -> float:
    """Renyi entropy of order ``alpha`` (bits); alpha = 1 is Shannon's."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    c = np.array([x for x in counts if x > 0], dtype=np.float64)
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    if math.isclose(alpha, 1.0):
        return float(-(p * np.log2(p)).sum())
    return float(np.log2((p ** alpha).sum()) / (1.0 - alpha))


def kgram_counts(streams: Sequence[Sequence[int]], k: int) -> Counter:
    counts: Counter = Counter()
    for ids in streams:
        counts.update(tuple(ids[i:i + k]) for i in range(len(ids) - k + 1))
    return counts


def kgram_entropies(streams: Sequence[Sequence[int]], k_max: int = 5) -> dict[str, float]:
    """``H_k`` (entropy of the k-gram distribution) for k = 1..k_max and ``H_k|k-1 = H_k - H_{k-1}``."""
    out: dict[str, float] = {}
    previous = 0.0
    for k in range(1, k_max + 1):
        h = entropy_bits(kgram_counts(streams, k).values())
        out[f"H_{k}"] = h
        if k > 1:
            out[f"H_{k}|{k - 1}"] = h - previous
        previous = h
    return out


def lzma_bits_per_char(streams: Sequence[Sequence[int]], n_chars: int, vocab_size: int) -> float:
    """Bits per character of the token stream after LZMA: ids written at a fixed width (2 bytes up to 65,536
    tokens, else 4), documents separated by an id that cannot occur (``vocab_size``)."""
    width = 2 if vocab_size < 65_535 else 4
    dtype = np.uint16 if width == 2 else np.uint32
    parts = [np.asarray(list(ids) + [vocab_size], dtype=dtype).tobytes() for ids in streams]
    return 8.0 * len(lzma.compress(b"".join(parts), preset=6)) / max(n_chars, 1)


def tokenizer_metrics(tokenizer, texts: Sequence[str], *, k_max: int = 5, renyi_alpha: float = 2.5) -> dict:
    """Every B9 metric of ``tokenizer`` on ``texts`` (one document each)."""
    streams = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    n_tokens = sum(len(s) for s in streams)
    if n_tokens == 0:
        raise ValueError("the texts produced no tokens: pass non-empty documents")
    n_chars = sum(len(t) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    vocab = len(tokenizer)
    unigrams = kgram_counts(streams, 1).values()
    h1 = entropy_bits(unigrams)
    log_k = math.log2(vocab)
    return {
        "vocab_size": vocab,
        "documents": len(texts),
        "tokens": n_tokens,
        "bytes_per_token": n_bytes / n_tokens,
        "chars_per_token": n_chars / n_tokens,
        "tokens_per_char": n_tokens / n_chars,
        "types_used": len(unigrams),
        "vocab_used_fraction": len(unigrams) / vocab,
        **kgram_entropies(streams, k_max),
        "capacity_utilization": h1 / log_k,
        f"renyi_efficiency_{renyi_alpha:g}": renyi_entropy_bits(unigrams, renyi_alpha) / log_k,
        "bits_per_char_unigram": h1 * n_tokens / n_chars,
        "bits_per_char_lzma": lzma_bits_per_char(streams, n_chars, vocab),
    }


def train_bpe(texts: Sequence[str], vocab_size: int, *, min_frequency: int = 2):
    """A byte-level BPE (GPT-2 pre-tokenizer, SmolLM2's special tokens) trained on ``texts`` with `tokenizers`,
    wrapped as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(f"vocab_size must be >= {len(alphabet) + len(specials)} (256 bytes + 3 special tokens), "
                         f"got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
