"""Byte-level generation on top of ``ByteState`` (B5): a byte sampler, exact token healing for prompts that end
mid-word, and an ensemble of models with different vocabularies averaged at the byte level.

Token healing here is the exact form: the last word of a prompt is not forced into its canonical tokens (which
a model rarely saw followed by a continuation of the same word, e.g. " Pa" then "ris"); instead the next bytes are
drawn from P(next byte | prompt bytes), summed over every token sequence that spells the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .byteprobs import END, ByteState, Check, start_ids

WORD_BREAK = frozenset(b" \t\n\r.,;:!?()[]{}\"'")


def word_ends(byte: int) -> bool:
    """True for bytes that end a word: whitespace, punctuation, or the end of the text (256)."""
    return byte == END or byte in WORD_BREAK


class ByteEnsemble:
    """Models with different vocabularies averaged at the byte level: P(b) = sum_k w_k P_k(b | bytes so far).

    Each member is a ``ByteState`` on the same prompt; appending a byte extends every member, so the mixture
    stays a proper distribution over the next byte whatever the members' token boundaries (paper §ensembles).
    """

    def __init__(self, states: Sequence[ByteState], weights: Sequence[float] | None = None):
        if not states:
            raise ValueError("an ensemble needs at least one ByteState")
        weights = np.ones(len(states)) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(states),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {len(states)} non-negative numbers with a positive sum, got {weights}")
        self.states = list(states)
        self.weights = weights / weights.sum()

    def next_byte_distribution(self) -> np.ndarray:
        return sum(w * s.next_byte_distribution() for w, s in zip(self.weights, self.states))

    def append(self, data: bytes) -> "ByteEnsemble":
        for state in self.states:
            state.append(data)
        return self


ByteModel = ByteState | ByteEnsemble


def generate_bytes(model: ByteModel, max_bytes: int, *, temperature: float = 0.0, seed: int = 0,
                   stop: Callable[[int], bool] | None = None) -> tuple[bytes, float]:
    """Extend ``model`` byte by byte; returns ``(bytes, log-probability of them)``.

    temperature 0 is greedy. Stops after ``max_bytes``, at the end of the text, or before a byte for which
    ``stop(byte)`` is true (that byte is not appended). Each appended byte costs one forward per member.
    """
    rng = np.random.default_rng(seed)
    out, logprob = bytearray(), 0.0
    for _ in range(max_bytes):
        p = model.next_byte_distribution()
        if temperature > 0:
            q = p ** (1.0 / temperature)
            choice = int(rng.choice(p.size, p=q / q.sum()))
        else:
            choice = int(np.argmax(p))
        if choice == END or (stop is not None and stop(choice)):
            break
        logprob += float(np.log(p[choice]))
        out.append(choice)
        model.append(bytes([choice]))
    return bytes(out), logprob


def complete_word(model: ByteModel, max_bytes: int = 24) -> tuple[str, float]:
    """Greedy bytes until the word ends: the healed completion of a prompt that ends mid-word."""
    data, logprob = generate_bytes(model, max_bytes, stop=word_ends)
    return data.decode("utf-8", errors="replace"), logprob


@dataclass(frozen=True)
class HealingResult:
    """How one prompt that ends mid-word continues, with and without byte-level healing."""

    prompt: str
    token_completion: str  # greedy tokens after the canonical encoding, up to the end of the word
    byte_completion: str  # greedy bytes from P(next byte | prompt bytes), up to the end of the word
    token_next: str  # the single most likely next token after the canonical encoding
    byte_next: str  # the most likely next byte, after healing

    @property
    def changed(self) -> bool:
        return self.token_completion != self.byte_completion


def token_word_completion(model, tokenizer, prefix_ids: list[int], prompt: str, max_new_tokens: int = 8
                          ) -> tuple[str, str]:
    """Greedy token-level continuation after the prompt's canonical encoding, cut at the end of the word:
    ``(completion, first token)``. This is what plain generation does."""
    import torch

    ids = torch.tensor([prefix_ids + tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(ids.to(device), attention_mask=torch.ones_like(ids).to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    specials = set(tokenizer.all_special_ids)
    text = tokenizer.decode([t for t in new if t not in specials]) if new and new[0] not in specials else ""
    first = tokenizer.decode(new[:1]) if new else ""
    cut = next((k for k, ch in enumerate(text.encode("utf-8")) if word_ends(ch)), None)
    data = text.encode("utf-8")
    return (data[:cut] if cut is not None else data).decode("utf-8", errors="replace"), first


def heal(model, trie, prompt: str, *, prefix_ids: list[int] | None = None, check: Check = "mass",
         min_mass: float = 1e-4, max_bytes: int = 24) -> HealingResult:
    """Compare plain greedy generation with exact byte-level healing on one prompt."""
    prefix_ids = start_ids(trie.tokenizer) if prefix_ids is None else prefix_ids
    state = ByteState.from_prompt(model, trie, prompt, prefix_ids=prefix_ids, check=check, min_mass=min_mass)
    best = int(np.argmax(state.next_byte_distribution()))
    byte_next = "<end>" if best == END else bytes([best]).decode("utf-8", errors="replace")
    healed, _ = complete_word(state, max_bytes)
    token_completion, token_next = token_word_completion(model, trie.tokenizer, prefix_ids, prompt)
    return HealingResult(prompt, token_completion, healed, token_next, byte_next)


def byte_logprob(model: ByteModel, data: bytes) -> float:
    """log P(data | what ``model`` has seen), byte by byte from the normalized next-byte distributions; extends
    ``model`` by ``data``. Comparable across vocabularies and across ensembles (a byte-level likelihood)."""
    total = 0.0
    for byte in data:
        p = model.next_byte_distribution()[byte]
        total += float(np.log(p)) if p > 0 else float("-inf")
        model.append(bytes([byte]))
    return total
