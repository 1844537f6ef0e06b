"""Exact byte-level probabilities from a tokenized language model (B5).

Paper: *Exact Byte-Level Probabilities from Tokenized Language Models for FIM-Tasks and Model Ensembles*,
arXiv 2410.09303. Re-implemented from the method (the reference code is CC-BY-NC).

A prompt is split at its last pre-token boundary: the head is encoded canonically and fixed, the tail's bytes
``x`` are free. A *cover* of ``x`` is a token sequence ``left + [t]`` with ``left`` the canonical encoding of
``x[:i]`` and ``t`` any token whose bytes start with ``x[i:]``; it is kept when ``left + [t]`` is canonical for
its own bytes (the model is assumed to put no mass on other encodings). The Byte-Token Representation Lemma:

    P(x) = sum over covers of P(left | head) * P(t | head + left)

and the next byte is read from each cover's last token, or, for the canonical encoding of ``x`` itself, from
the first byte of the token after it. One forward per split point ``i`` gives both factors; a state extended
by one byte needs exactly one new forward (the canonical encoding of the longer tail), which is the paper's
cost of about one LM call per byte.

Outcome 256 of a next-byte distribution is "a special token next" (end of text), so the 257 entries sum to 1.
Covers whose bytes end inside a multi-byte UTF-8 character cannot be re-encoded as text; they are kept without
the canonicality check (the paper's ``fast_mode`` for those covers only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .vocab import VocabTrie

END = 256  # index of "a special token next" in a next-byte distribution
Check = Literal["all", "mass", "none"]


def split_last_pretoken(tokenizer, text: str) -> tuple[str, bytes]:
    """``(head, tail)``: the text before its last pre-token and that pre-token's bytes.

    Token boundaries never cross a pre-token boundary, so the head's encoding is fixed whatever follows.
    """
    backend = tokenizer.backend_tokenizer
    pieces = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer is not None else []
    if not pieces:
        return "", text.encode("utf-8")
    start = pieces[-1][1][0]
    return text[:start], text[start:].encode("utf-8")


def start_ids(tokenizer) -> list[int]:
    """The document start a text is conditioned on by default: the BOS token, else EOS."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("the tokenizer has no BOS or EOS token to start a text: pass prefix_ids")
    return [start]


@dataclass
class _Split:
    """Covers that start at byte ``start`` of the tail: ``left`` spells tail[:start] canonically."""

    start: int
    left: list[int]
    left_logprob: float
    next_logprobs: np.ndarray  # (V,) float64: log P(token | head + left)
    valid: np.ndarray = field(default=None)  # (V,) int8: canonicality of left + [t]; -1 = not checked yet

    def __post_init__(self):
        if self.valid is None:
            self.valid = np.full(self.next_logprobs.shape[0], -1, dtype=np.int8)


@dataclass
class ByteState:
    """The byte-level state of one prompt: covers of the free tail, extendable one byte at a time."""

    model: torch.nn.Module
    trie: VocabTrie
    head_ids: list[int]
    tail: bytes
    splits: list[_Split]
    check: Check = "all"
    min_mass: float = 1e-6
    unchecked_mass: float = 0.0  # cover mass counted as valid without a check (check="mass"/"none")
    forwards: int = 0  # sequences scored so far (the cost the benchmark reports)

    # --- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_prompt(cls, model, trie: VocabTrie, prompt: str, *, prefix_ids: list[int] | None = None,
                    check: Check = "all", min_mass: float = 1e-6) -> "ByteState":
        """State after ``prompt`` (plain text, encoded canonically after ``prefix_ids``).

        ``prefix_ids`` default to the tokenizer's BOS (else EOS) token, a document start, so that the first byte
        of a text has a distribution too; pass a chat header, or ``[]`` to condition on the prompt alone.
        """
        prefix_ids = start_ids(trie.tokenizer) if prefix_ids is None else prefix_ids
        head_text, tail = split_last_pretoken(trie.tokenizer, prompt)
        head_ids = list(prefix_ids) + (_spell(trie, head_text.encode("utf-8")) if head_text else [])
        if not head_ids:
            raise ValueError("nothing to condition on: an empty head and prefix_ids=[]; pass a start token")
        state = cls(model, trie, head_ids, b"", [], check=check, min_mass=min_mass)
        points = [i for i in range(len(tail) + 1) if _is_text(tail[:i])]
        lefts = [_spell(trie, tail[:i]) for i in points]
        state.splits = state._score(points, lefts)
        state.tail = tail
        return state

    def _score(self, points: list[int], lefts: list[list[int]]) -> list[_Split]:
        """One batched forward: log P(left | head) and the next-token log-probs after head + left, per left."""
        rows = [self.head_ids + left for left in lefts]
        width = max(len(r) for r in rows)
        pad = self.trie.tokenizer.pad_token_id or 0
        device = next(self.model.parameters()).device
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        with torch.no_grad():  # right padding: real tokens keep positions 0..len-1
            logits = self.model(input_ids=ids, attention_mask=mask).logits.double()
        logp = torch.log_softmax(logits, dim=-1)
        self.forwards += len(rows)
        splits = []
        h = len(self.head_ids)
        for b, (start, left) in enumerate(zip(points, lefts)):
            positions = torch.arange(h - 1, h - 1 + len(left), device=device)  # row t-1 predicts token t
            left_lp = logp[b, positions, torch.tensor(left, device=device, dtype=torch.long)].sum().item() if left else 0.0
            splits.append(_Split(start, left, left_lp, logp[b, len(rows[b]) - 1].cpu().numpy()))
        return splits

    # --- queries ---------------------------------------------------------------------------------------------

    def _covers(self, split: _Split, suffix: bytes) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, logmass)`` of the kept covers ``split.left + [t]`` with t starting with ``suffix``."""
        ids = self.trie.extensions(suffix)
        if ids.size == 0:
            return ids, np.empty(0)
        logmass = split.left_logprob + split.next_logprobs[ids]
        keep = self._validate(split, ids, logmass)
        return ids[keep], logmass[keep]

    def _validate(self, split: _Split, ids: np.ndarray, logmass: np.ndarray) -> np.ndarray:
        """Keep-mask over candidates: canonicality of left + [t], checked once per (split, t) and cached."""
        todo = np.nonzero(split.valid[ids] < 0)[0]
        if todo.size and self.check != "all":
            order = todo[np.argsort(-logmass[todo], kind="stable")]
            if self.check == "none":
                cut = 0
            else:  # check the heaviest covers until the rest weighs less than min_mass of what was seen
                masses = np.exp(logmass[order])
                rest = np.cumsum(masses[::-1])[::-1]
                below = np.nonzero(rest < self.min_mass * max(masses.sum(), 1e-300))[0]
                cut = int(below[0]) if below.size else order.size
            split.valid[ids[order[cut:]]] = 1
            self.unchecked_mass += float(np.exp(logmass[order[cut:]]).sum())
            todo = order[:cut]
        if todo.size:
            left_bytes = self.trie.decode_bytes(split.left)
            todo = self._by_rule(split, left_bytes, ids[todo], todo)
        if todo.size:
            texts, where = [], []
            for t in ids[todo].tolist():
                data = left_bytes + self.trie.token_bytes[t]
                if _is_text(data):
                    texts.append(data.decode("utf-8"))
                    where.append(t)
                else:  # ends inside a character: no text to re-encode (module docstring)
                    split.valid[t] = 1
            expected = split.left
            for t, encoded in zip(where, _encode_many(self.trie, texts)):
                split.valid[t] = len(encoded) == len(expected) + 1 and encoded[-1] == t and encoded[:-1] == expected
        return split.valid[ids] > 0

    def _by_rule(self, split: _Split, left_bytes: bytes, candidates: np.ndarray, todo: np.ndarray) -> np.ndarray:
        """Settle, without re-encoding, the covers whose canonicality follows from the token alone; return the
        rest. With nothing before the token (the head's boundary is fixed), or under GPT-2's pre-tokenizer after
        a non-space byte when the token starts with ASCII whitespace (a pre-token boundary: the encoding splits
        there), left + [t] is canonical exactly when [t] is canonical for its own bytes."""
        if left_bytes and not (self.trie.gpt2_split and left_bytes[-1] not in _SPACE_BYTES):
            return todo
        settled = np.ones(candidates.size, dtype=bool) if not left_bytes else np.isin(
            self.trie.first_byte[candidates], list(_SPACE_BYTES))
        split.valid[candidates[settled]] = self.trie.self_canonical[candidates[settled]]
        return todo[~settled]

    def prefix_logprob(self) -> float:
        """log P(the tail's bytes come next | head), summed over every kept cover."""
        if not self.tail:
            return 0.0
        parts = []
        for split in self.splits:
            if split.start < len(self.tail):
                parts.append(self._covers(split, self.tail[split.start:])[1])
        values = np.concatenate(parts) if parts else np.empty(0)
        return float(np.logaddexp.reduce(values)) if values.size else float("-inf")

    def next_byte_distribution(self, normalize: bool = True) -> np.ndarray:
        """(257,) P(next byte | head, tail); entry 256 = a special token next. Sums to 1.

        Unnormalized (``normalize=False``), entry b is P(tail + b) exactly: the covers of the longer tail are the
        covers of this one whose token continues with b. Their sum falls short of P(tail) by the mass the model
        puts on non-canonical continuations of the tail's own encoding, which the normalization removes.
        """
        n = len(self.tail)
        mass = np.zeros(257)
        for split in self.splits:
            ids, logmass = self._covers(split, self.tail[split.start:])
            if split.start < n:
                longer = self.trie.token_len[ids] > n - split.start  # a cover that ends exactly at n continues in split n
                nxt = np.array([self.trie.token_bytes[i][n - split.start] for i in ids[longer].tolist()], dtype=np.int64)
                np.add.at(mass, nxt, np.exp(logmass[longer]))
            else:  # split n: left is the canonical encoding of the whole tail; any next token may follow
                np.add.at(mass, self.trie.first_byte[ids], np.exp(logmass))
                special = self.trie.first_byte < 0
                mass[END] += float(np.exp(split.left_logprob + split.next_logprobs[special]).sum())
        total = mass.sum()
        if total <= 0:
            raise ValueError(f"no cover of {self.tail!r} has mass: the tail cannot be spelled by this vocabulary")
        return mass / total if normalize else mass

    # --- extension -------------------------------------------------------------------------------------------

    def append(self, data: bytes) -> "ByteState":
        """Extend the tail by ``data`` in place: one forward per byte that ends on a character boundary."""
        for byte in data:
            tail = self.tail + bytes([byte])
            if _is_text(tail):
                self.splits += self._score([len(tail)], [_spell(self.trie, tail)])
            self.tail = tail
            # a split whose suffix no token extends can hold no cover any more
            self.splits = [s for s in self.splits
                           if s.start >= len(tail) or self.trie.extensions(tail[s.start:]).size]
        return self


_SPACE_BYTES = frozenset(b" \t\n\r\x0b\x0c")


def _spell(trie: VocabTrie, data: bytes) -> list[int]:
    """The canonical encoding of ``data``; a clear error when the vocabulary cannot spell it (unknown bytes)."""
    ids = trie.encode(data) if data else []
    if any(trie.token_bytes[i] is None for i in ids) or trie.decode_bytes(ids) != data:
        raise ValueError(f"{data!r} cannot be spelled by this vocabulary (its encoding reads "
                         f"{trie.tokenizer.decode(ids)!r}): the tokenizer drops or replaces some of its bytes")
    return ids


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _encode_many(trie: VocabTrie, texts: list[str]) -> list[list[int]]:
    backend = trie.tokenizer.backend_tokenizer
    if not texts:
        return []
    fast = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
    return [list(e.ids) for e in fast(texts, add_special_tokens=False)]
