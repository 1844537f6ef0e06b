"""Random DFAs and the in-context language learning task (PRUNING_TOKENIZERS_MECHANISMS.md C5).

Paper: Akyurek et al., "In-Context Language Learning: Architectures and Algorithms", arXiv 2401.12973 (ICML
2024); code github berlino/seq_icl. Verified in ``src/dataloaders/dfa.py`` (``RandomDFASampler.sample``,
``DFA.sample``, ``ICLDFADataModule``) and in ``ngram.py`` (``predict_with_n_gram_back_off``):

- **DFA** (the paper's construction): states 0..S-1, start state 0, *every state accepting*. Each state gets
  ``rng.integers(1, max_outgoing)`` outgoing edges, i.e. 1..max_outgoing-1 (numpy's upper bound is exclusive;
  the paper's config has max_outgoing_edges=4, so out-degree 1..3), labelled with distinct symbols drawn from the
  alphabet and going to distinct states other than itself (no self loops). The DFA is then minimized and trimmed.
  As every state accepts and has an outgoing edge, the language is prefix-closed with no dead ends: a string is
  in it iff every step follows an edge, and ``allowed_next`` is the set of edge labels of the current state.
- **Strings**: from the start state, a uniformly random outgoing edge per step; lengths ``rng.integers(1,
  max_len)`` (paper max_len_per_example=50). **Task**: several strings of one DFA joined by a separator
  (paper: 10..19 strings, " | "); each sequence has its own DFA, so the language must be learnt in context.
- **Paper task distribution** (``task_dfa``): S ~ U[max_outgoing, max_states] (paper 12), alphabet size ~
  U[max_outgoing, n_letters] (paper 18 letters), alphabet a random subset of the letters.
- **In-context n-gram estimator** (``ngram_probabilities``): counts of all k-grams (k <= N) in the strings seen so
  far, each string left-padded with N-1 start symbols, conditional ``c(prefix + s) / c(prefix)`` where the
  order-N context has been seen followed by s, and otherwise the left-over mass ``1 - sum(seen)`` spread over the
  unseen symbols in proportion to the order N-1 estimate (recursively; order 1 = unigram counts, whose total
  includes the padding symbols, as in the paper). Symbols are those seen in context so far. Our one change:
  the returned distribution is renormalized to sum to 1 (the paper's does not, which changes no argmax).
  Checked against the paper's ``predict_with_n_gram_back_off`` on 30 random task sequences, orders 2-4: equal to
  2e-16 after normalization. Order 1 here is the plain in-context unigram; the paper's N=1 is broken (its prefix
  ``text[-(N-1):]`` is then the whole current string).

Our defaults: symbols are ints (the paper's letters ``chr(97 + k)``); the separator is any int outside the
alphabet. Minimization is Moore's partition refinement (the paper calls pythomata's ``minimize().trim()``);
it changes only the state count, never the language or ``allowed_next``.

Cost: sampling is O(length); ``ngram_probabilities`` is incremental, O(T * N * |alphabet|) per sequence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_PAD = ("<s>",)  # the start-of-string padding symbol of the n-gram estimator: never equal to a DFA symbol


@dataclass(frozen=True)
class DFA:
    """A deterministic automaton with every state accepting; ``transitions[s]`` maps symbol -> next state."""

    transitions: tuple[dict, ...]
    alphabet: tuple
    start: int = 0

    @property
    def n_states(self) -> int:
        return len(self.transitions)

    def state_after(self, prefix: Iterable[Hashable]) -> int | None:
        """State reached by reading ``prefix`` from the start; None if some step has no edge (rejected)."""
        state = self.start
        for symbol in prefix:
            state = self.transitions[state].get(symbol)
            if state is None:
                return None
        return state

    def accepts(self, string: Iterable[Hashable]) -> bool:
        return self.state_after(string) is not None


def random_dfa(
    n_states: int, alphabet: int | Sequence[Hashable], seed: int | np.random.Generator, *,
    max_outgoing: int = 4, minimize: bool = True,
) -> DFA:
    """The paper's random DFA (module docstring); ``alphabet`` is a sequence of symbols or an int k (0..k-1)."""
    symbols = tuple(range(alphabet)) if isinstance(alphabet, int) else tuple(alphabet)
    if max_outgoing < 2:
        raise ValueError(f"max_outgoing={max_outgoing}: the out-degree is drawn from 1..max_outgoing-1; use >= 2")
    if n_states < max_outgoing or len(symbols) < max_outgoing - 1 or len(set(symbols)) != len(symbols):
        raise ValueError(
            f"random_dfa needs n_states >= max_outgoing ({n_states} < {max_outgoing}?) and at least max_outgoing-1 "
            f"distinct symbols (got {len(symbols)}): every state draws up to max_outgoing-1 distinct labels and "
            "distinct non-self targets. Raise n_states / the alphabet or lower max_outgoing"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    transitions = []
    for state in range(n_states):
        degree = int(rng.integers(1, max_outgoing))
        labels = rng.choice(len(symbols), size=degree, replace=False)
        others = [s for s in range(n_states) if s != state]  # no self loops
        targets = rng.choice(others, size=degree, replace=False)
        transitions.append({symbols[int(a)]: int(t) for a, t in zip(labels, targets)})
    dfa = DFA(tuple(transitions), symbols)
    return minimize_dfa(dfa) if minimize else dfa


def task_dfa(
    rng: np.random.Generator, *, max_states: int = 12, n_letters: int = 18, max_outgoing: int = 4,
) -> DFA:
    """One DFA from the paper's task distribution (module docstring); symbols are ints 0..n_letters-1."""
    if n_letters < max_outgoing:
        raise ValueError(f"n_letters={n_letters} < max_outgoing={max_outgoing}: the alphabet size is drawn from "
                         "[max_outgoing, n_letters]; raise n_letters")
    n_states = int(rng.integers(max_outgoing, max_states + 1))
    size = int(rng.integers(max_outgoing, n_letters + 1))
    alphabet = sorted(int(a) for a in rng.choice(n_letters, size=size, replace=False))
    return random_dfa(n_states, alphabet, np.random.default_rng(rng.integers(0, 2**32)), max_outgoing=max_outgoing)


def minimize_dfa(dfa: DFA) -> DFA:
    """Trim to the states reachable from the start, then merge equivalent states (Moore refinement: all states
    accept, so two states are equivalent iff they have the same labels and equivalent successors)."""
    reachable, stack = {dfa.start}, [dfa.start]
    while stack:
        for nxt in dfa.transitions[stack.pop()].values():
            if nxt not in reachable:
                reachable.add(nxt)
                stack.append(nxt)
    states = sorted(reachable)
    block = {s: 0 for s in states}
    while True:
        signature = {s: (block[s], tuple(sorted((str(a), block[t]) for a, t in dfa.transitions[s].items())))
                     for s in states}
        names: dict = {}
        refined = {s: names.setdefault(signature[s], len(names)) for s in states}
        if len(names) == len(set(block.values())):
            break
        block = refined
    # Renumber blocks in order of first appearance from the start state, so the start is state 0.
    order: dict[int, int] = {}
    for s in [dfa.start] + states:
        order.setdefault(block[s], len(order))
    merged: list[dict] = [{} for _ in order]
    for s in states:
        merged[order[block[s]]] = {a: order[block[t]] for a, t in dfa.transitions[s].items()}
    return DFA(tuple(merged), dfa.alphabet, 0)


def sample_string(dfa: DFA, length: int, rng: np.random.Generator) -> list:
    """A string of ``length`` symbols: from the start state, a uniformly random outgoing edge per step."""
    state, out = dfa.start, []
    for _ in range(length):
        edges = list(dfa.transitions[state].items())
        symbol, state = edges[int(rng.integers(len(edges)))]
        out.append(symbol)
    return out


def icl_sequence(
    dfa: DFA, n_strings: int, rng: np.random.Generator, sep: Hashable, *, max_len: int = 50,
) -> list:
    """``n_strings`` strings of lengths ``rng.integers(1, max_len)`` joined by ``sep`` (no leading/trailing sep)."""
    if n_strings < 1 or max_len < 2:
        raise ValueError(f"icl_sequence needs n_strings >= 1 and max_len >= 2 (lengths are 1..max_len-1); got "
                         f"n_strings={n_strings}, max_len={max_len}")
    if sep in dfa.alphabet:
        raise ValueError(f"separator {sep!r} is a symbol of the DFA's alphabet; pick a value outside it")
    out: list = []
    for k in range(n_strings):
        if k:
            out.append(sep)
        out += sample_string(dfa, int(rng.integers(1, max_len)), rng)
    return out


def allowed_next(dfa: DFA, prefix: Iterable[Hashable]) -> frozenset:
    """Symbols the DFA allows after ``prefix`` (a prefix of the current string); empty if ``prefix`` is rejected."""
    state = dfa.state_after(prefix)
    return frozenset() if state is None else frozenset(dfa.transitions[state])


def allowed_per_position(dfa: DFA, sequence: Sequence[Hashable], sep: Hashable) -> list[frozenset | None]:
    """Entry t: the symbols allowed at position t given the current string before it; None where the paper does
    not score (t = 0, separators: the end of a string is not predicted). After a separator, the start state's set."""
    out: list[frozenset | None] = []
    current: list = []
    for t, symbol in enumerate(sequence):
        if symbol == sep:
            out.append(None)
            current = []
            continue
        out.append(None if t == 0 else allowed_next(dfa, current))
        current.append(symbol)
    return out


def ngram_probabilities(sequence: Sequence[Hashable], sep: Hashable, order: int = 3) -> list[dict]:
    """Entry t: the in-context n-gram estimate (module docstring) of the symbol at position t from sequence[:t],
    as {symbol: probability} over the symbols seen so far ({} at t = 0, or when no symbol has been seen)."""
    if order < 1:
        raise ValueError(f"order={order}: the n-gram order counts the predicted symbol too; use order >= 1")
    counts = {k: Counter() for k in range(1, order + 1)}
    vocab: set = set()  # the symbols seen so far (sorted when used: ties then go to the smallest symbol)
    text: list = []
    out: list[dict] = []

    def start_string() -> None:
        text[:] = [_PAD] * (order - 1)
        for end in range(1, len(text) + 1):  # the padding's own k-grams, as the paper's padded text counts them
            for k in range(1, min(order, end) + 1):
                counts[k][tuple(text[end - k:end])] += 1

    start_string()
    for symbol in sequence:
        out.append(_backoff(tuple(text[len(text) - order + 1:]) if order > 1 else (), sorted(vocab), counts)
                   if vocab else {})
        if symbol == sep:
            start_string()
            continue
        vocab.add(symbol)
        text.append(symbol)
        for k in range(1, order + 1):
            counts[k][tuple(text[len(text) - k:])] += 1
    return out


def _backoff(prefix: tuple, vocab: list, counts: dict) -> dict:
    memo: dict = {}

    def probs(context: tuple) -> dict:
        if context in memo:
            return memo[context]
        n = len(context) + 1
        table = counts[n]
        if n == 1:
            total = sum(table.values())
            result = {s: table[(s,)] / total for s in vocab}
        else:
            seen = {s: table[context + (s,)] / counts[n - 1][context] for s in vocab if table[context + (s,)]}
            unseen = [s for s in vocab if s not in seen]
            result = dict(seen)
            if unseen:
                lower = probs(context[1:])
                spread = sum(lower[s] for s in unseen)
                left = 1.0 - sum(seen.values())
                for s in unseen:
                    result[s] = left * lower[s] / spread if spread > 0 else 0.0
        memo[context] = result
        return result

    raw = probs(prefix)
    total = sum(raw.values())
    return {s: p / total for s, p in raw.items()} if total > 0 else raw
