"""The vocabulary trie: prefix queries against a linear scan, every encoding against a brute-force product,
canonicality against the tokenizer, and the byte alphabet of byte-level BPE."""

from __future__ import annotations

import itertools

import pytest

from tokenfocus.models import build_char_tokenizer
from tokenfocus.tokenizers import TooManyEncodings, UnsupportedTokenizer, VocabTrie, byte_level_alphabet


@pytest.fixture(scope="module")
def trie(bpe_tokenizer):
    return VocabTrie.from_tokenizer(bpe_tokenizer)


def test_token_bytes_and_specials(trie, bpe_tokenizer):
    assert trie.kind == "plain"
    assert trie.token_bytes[0] is None and trie.token_bytes[1] is None  # <s>, </s>
    assert trie.token_bytes[bpe_tokenizer.convert_tokens_to_ids(" ab")] == b" ab"
    assert trie.first_byte[0] == -1 and trie.first_byte[bpe_tokenizer.convert_tokens_to_ids(" ab")] == ord(" ")
    with pytest.raises(ValueError, match="special tokens"):
        trie.decode_bytes([0, 2])


@pytest.mark.parametrize("prefix", [b"", b"a", b"b", b" ", b" a", b"ab", b"bab", b"abb", b"\xff", b"z"])
def test_extensions_equal_a_linear_scan(trie, prefix):
    expected = sorted(i for i, b in enumerate(trie.token_bytes) if b is not None and b.startswith(prefix))
    assert sorted(trie.extensions(prefix).tolist()) == expected


def test_extensions_at_the_top_of_the_byte_range():
    """A prefix of 0xff bytes has no successor string: its range runs to the end of the sorted vocabulary."""
    tok = build_char_tokenizer()
    trie = VocabTrie.from_tokenizer(tok)
    trie.token_bytes = trie.token_bytes + [b"\xff", b"\xff\xfe", b"\xfe"]
    trie.__post_init__()
    assert sorted(trie.extensions(b"\xff").tolist()) == [len(trie) - 3, len(trie) - 2]


def test_prefixes_are_every_token_that_starts_the_string(trie):
    data = b" abab"
    expected = [(len(b), i) for i, b in enumerate(trie.token_bytes) if b is not None and data.startswith(b)]
    assert sorted(trie.prefixes(data)) == sorted(expected)


@pytest.mark.parametrize("text", ["a", "ab", " abab", "bab ba", "aaaa", "a b  a"])
def test_encodings_are_all_segmentations(trie, text):
    """Brute force: every tuple of ordinary tokens of length <= len(text) whose bytes spell the text."""
    data = text.encode()
    ordinary = [i for i, b in enumerate(trie.token_bytes) if b]
    brute = {seq for n in range(1, len(data) + 1) for seq in itertools.product(ordinary, repeat=n)
             if trie.decode_bytes(seq) == data}
    got = trie.encodings(text)
    assert len(got) == len(set(got)) == trie.count_encodings(data)
    assert set(got) == brute
    assert tuple(trie.encode(text)) in brute
    assert sum(trie.is_canonical(seq) for seq in got) == 1  # exactly one encoding is the tokenizer's


def test_encoding_cap_is_checked_before_enumerating(trie):
    count = trie.count_encodings(b"ababababab")
    assert count > 50
    with pytest.raises(TooManyEncodings, match=rf"{count:,} encodings.*cap=50.*larger cap or a shorter string"):
        trie.encodings("ababababab", cap=50)


def test_is_canonical(trie, bpe_tokenizer):
    ids = bpe_tokenizer.convert_tokens_to_ids
    assert trie.is_canonical(ids(["a", "ab"]))           # "aab": the (a, b) merge ranks first
    assert not trie.is_canonical(ids(["aa", "b"]))
    assert trie.is_canonical(ids(["a", " ", " b"]))      # a run of spaces gives its last one to the word
    assert not trie.is_canonical(ids(["a", " ", " ", "b"]))
    assert trie.is_canonical([])


def test_byte_level_alphabet_is_a_bijection_onto_bytes():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["a"] == ord("a") and alphabet["Ġ"] == ord(" ") and alphabet["Ċ"] == ord("\n")


def test_char_tokenizer_is_plain():
    trie = VocabTrie.from_tokenizer(build_char_tokenizer())
    assert trie.kind == "plain" and trie.encodings("ab") == [tuple(trie.encode("ab"))]


def test_normalizing_tokenizer_is_refused_with_the_reason():
    from tokenizers import Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    with pytest.raises(UnsupportedTokenizer, match="normalizes text"):
        VocabTrie.from_tokenizer(PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]"))
