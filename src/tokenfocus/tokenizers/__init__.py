"""Tokenizer probes: the vocabulary trie and canonicality, exact byte-level probabilities, phantom edits,
information-theoretic tokenizer metrics and tokenizer transfer (PRUNING_TOKENIZERS_MECHANISMS.md B5-B9)."""

from .vocab import DEFAULT_ENCODING_CAP, TooManyEncodings, UnsupportedTokenizer, VocabTrie, byte_level_alphabet

__all__ = ["DEFAULT_ENCODING_CAP", "TooManyEncodings", "UnsupportedTokenizer", "VocabTrie", "byte_level_alphabet"]
