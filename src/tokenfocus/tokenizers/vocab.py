"""The vocabulary as byte strings: a prefix trie over token bytes, canonical encodings and every encoding of a
short string. Shared by the byte-level probabilities (B5), the phantom-edit probe (B6), the tokenizer metrics
(B9) and the tokenizer transfer (B7) of PRUNING_TOKENIZERS_MECHANISMS.md.

A tokenizer is byte-exact here when every ordinary token stands for a fixed byte string and a text's canonical
encoding concatenates to the text's UTF-8 bytes. Two kinds are supported, read from the backend's decoder:
byte-level BPE (GPT-2's byte-to-unicode alphabet: SmolLM2, the BPEs trained by ``train_bpe``) and plain
vocabularies whose token strings are the text itself (a character tokenizer, a BPE without byte mapping).
Special and added tokens stand for no bytes (``token_bytes[i] is None``) and never enter the trie.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DEFAULT_ENCODING_CAP = 10_000


class TooManyEncodings(ValueError):
    """A string has more encodings than the caller allowed."""


class UnsupportedTokenizer(ValueError):
    """The tokenizer's tokens are not fixed byte strings (e.g. WordPiece's ## pieces or a normalizer)."""


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's reversible byte-to-unicode map, inverted: the character that stands for each byte -> the byte.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes map to code points 256, 257, ... in order.
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def _decoder_kind(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedTokenizer(
            f"{type(tokenizer).__name__} has no fast (Rust) backend; load the tokenizer with use_fast=True")
    spec = json.loads(backend.to_str())
    if spec.get("normalizer"):
        raise UnsupportedTokenizer(
            f"the tokenizer normalizes text ({spec['normalizer'].get('type')}), so its tokens do not spell the "
            "input bytes; byte-level probes need a byte-level BPE (GPT-2 style) or a plain vocabulary")
    decoder = spec.get("decoder") or {}
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", [])}
    if "ByteLevel" in kinds:
        return "byte_level"
    if kinds <= {None, "Fuse"} and spec["model"]["type"] in {"WordLevel", "BPE"}:
        return "plain"
    raise UnsupportedTokenizer(
        f"decoder {sorted(k for k in kinds if k)} with model {spec['model']['type']} is not supported; "
        "byte-level probes need a byte-level BPE (GPT-2 style) or a plain vocabulary (Fuse or no decoder)")


def _token_bytes(tokenizer, kind: str) -> list[bytes | None]:
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    alphabet = byte_level_alphabet()
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif kind == "byte_level":
            out.append(bytes(alphabet[c] for c in piece) if all(c in alphabet for c in piece) else None)
        else:
            out.append(piece.encode("utf-8"))
    return out


@dataclass
class VocabTrie:
    """Byte strings of a vocabulary with prefix queries.

    The trie is stored flat: token byte strings sorted, so the tokens below any trie node (the tokens that start
    with a given prefix) are one contiguous range found by two binary searches, and the tokens on the path to a
    node (the tokens that are prefixes of a string) are found by one dictionary lookup per length.
    """

    tokenizer: object
    token_bytes: list[bytes | None]
    kind: str

    def __post_init__(self):
        entries = sorted((b, i) for i, b in enumerate(self.token_bytes) if b)
        self._sorted = [b for b, _ in entries]
        self._sorted_ids = np.array([i for _, i in entries], dtype=np.int64)
        self._by_bytes: dict[bytes, list[int]] = {}
        for b, i in entries:
            self._by_bytes.setdefault(b, []).append(i)
        self.max_len = max(len(b) for b in self._sorted)
        self._first_byte = np.full(len(self.token_bytes), -1, dtype=np.int64)  # -1: a special token
        self.token_len = np.zeros(len(self.token_bytes), dtype=np.int64)  # (V,) bytes per token, 0 for specials
        for i, b in enumerate(self.token_bytes):
            if b:
                self._first_byte[i] = b[0]
                self.token_len[i] = len(b)

    @property
    def gpt2_split(self) -> bool:
        """True when the pre-tokenizer is GPT-2's regex alone (byte-level, no prefix space): then no pre-token
        runs from a non-space character into a following whitespace (the pattern's only leading class)."""
        if not hasattr(self, "_gpt2_split"):
            spec = json.loads(self.tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
            self._gpt2_split = (self.kind == "byte_level" and spec.get("type") == "ByteLevel"
                                and spec.get("use_regex", True) and not spec.get("add_prefix_space", False))
        return self._gpt2_split

    @property
    def self_canonical(self) -> np.ndarray:
        """(V,) bool: token t alone is the canonical encoding of its bytes (computed once, one batch encode).
        Special tokens are False; a token that is not whole UTF-8 text is True (it cannot be re-encoded)."""
        if not hasattr(self, "_self_canonical"):
            out = np.zeros(len(self.token_bytes), dtype=bool)
            ids, texts = [], []
            for i, data in enumerate(self.token_bytes):
                if data is None:
                    continue
                try:
                    texts.append(data.decode("utf-8"))
                    ids.append(i)
                except UnicodeDecodeError:
                    out[i] = True
            for i, encoded in zip(ids, self.encode_batch(texts)):
                out[i] = encoded == [i]
            self._self_canonical = out
        return self._self_canonical

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "VocabTrie":
        """Build from a Hugging Face fast tokenizer; an error names the problem if it is not byte-exact."""
        kind = _decoder_kind(tokenizer)
        trie = cls(tokenizer, _token_bytes(tokenizer, kind), kind)
        probe = "The 3 cats' toys:\n  café, naïve; x=12.5!"
        if kind == "plain":
            probe = "".join(c for c in probe if trie.ids_of(c.encode()))  # a character vocabulary spells less
        ids = trie.encode(probe)
        if any(trie.token_bytes[i] is None for i in ids) or trie.decode_bytes(ids) != probe.encode():
            raise UnsupportedTokenizer(
                f"the tokenizer does not spell its input byte for byte ({probe!r} -> {tokenizer.decode(ids)!r}); "
                "byte-level probes need a byte-level BPE (GPT-2 style) or a plain vocabulary")
        return trie

    # --- bytes <-> ids ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.token_bytes)

    @property
    def first_byte(self) -> np.ndarray:
        """(V,) first byte of every token, -1 for tokens without bytes (special tokens)."""
        return self._first_byte

    def decode_bytes(self, ids) -> bytes:
        missing = [int(i) for i in ids if self.token_bytes[int(i)] is None]
        if missing:
            raise ValueError(f"token ids {missing} are special tokens: they stand for no bytes")
        return b"".join(self.token_bytes[int(i)] for i in ids)

    def encode(self, text: str | bytes) -> list[int]:
        """The canonical encoding (what the tokenizer produces), without special tokens."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def is_canonical(self, ids) -> bool:
        """True when ``ids`` is what the tokenizer produces for the text they spell: encode(decode(ids)) == ids.

        A byte string that is not valid UTF-8 is no text, so no encoding of it is canonical.
        """
        ids = [int(i) for i in ids]
        try:
            text = self.decode_bytes(ids).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self.encode(text) == ids

    # --- trie queries ----------------------------------------------------------------------------------------

    def ids_of(self, data: bytes) -> list[int]:
        """Every token whose bytes are exactly ``data`` (usually zero or one)."""
        return list(self._by_bytes.get(data, ()))

    def extensions(self, prefix: bytes) -> np.ndarray:
        """Ids of every token whose bytes start with ``prefix`` (all ordinary tokens for b'')."""
        lo = bisect.bisect_left(self._sorted, prefix)
        after = _successor(prefix)
        hi = bisect.bisect_left(self._sorted, after, lo) if after else len(self._sorted)
        return self._sorted_ids[lo:hi]

    def prefixes(self, data: bytes) -> list[tuple[int, int]]:
        """``(length, id)`` of every token whose bytes are a prefix of ``data``, shortest first."""
        found = []
        for length in range(1, min(len(data), self.max_len) + 1):
            found += [(length, i) for i in self._by_bytes.get(data[:length], ())]
        return found

    # --- all encodings ---------------------------------------------------------------------------------------

    def count_encodings(self, data: bytes) -> int:
        """How many token sequences spell ``data`` exactly (dynamic programming, no enumeration)."""
        ways = [0] * (len(data) + 1)
        ways[len(data)] = 1
        for start in range(len(data) - 1, -1, -1):
            ways[start] = sum(ways[start + length] for length, _ in self.prefixes(data[start:]))
        return ways[0]

    def encodings(self, text: str | bytes, cap: int = DEFAULT_ENCODING_CAP) -> list[tuple[int, ...]]:
        """Every token sequence that spells ``text`` exactly, canonical or not, in lexicographic order of lengths.

        Raises ``TooManyEncodings`` (before enumerating) when there are more than ``cap``.
        """
        data = text.encode("utf-8") if isinstance(text, str) else text
        count = self.count_encodings(data)
        if count > cap:
            raise TooManyEncodings(
                f"{data!r} ({len(data)} bytes) has {count:,} encodings, more than cap={cap:,}; pass a larger cap "
                "or a shorter string (the count grows about 2x per byte)")
        out: list[tuple[int, ...]] = []

        def walk(start: int, path: tuple[int, ...]) -> None:
            if start == len(data):
                out.append(path)
                return
            for length, i in self.prefixes(data[start:]):
                walk(start + length, path + (i,))

        walk(0, ())
        return out


def _successor(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with ``prefix`` (b'' if none is)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b""
    return stripped[:-1] + bytes([stripped[-1] + 1])
