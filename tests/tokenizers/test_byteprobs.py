"""Exact byte-level probabilities (B5) against brute force on the tiny BPE: every token sequence of up to four
tokens is scored by its own forward pass, the canonical ones that cover the bytes are summed, and the results
must equal the cover computation (which scores one sequence per split point)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tokenfocus.tokenizers import VocabTrie
from tokenfocus.tokenizers.byteprobs import END, ByteState, split_last_pretoken

ALPHABET = b"ab "


@pytest.fixture(scope="module")
def trie(bpe_tokenizer):
    return VocabTrie.from_tokenizer(bpe_tokenizer)


class Brute:
    """log P(sequence | head) for every sequence of ordinary tokens up to ``depth``, one forward each."""

    def __init__(self, model, trie, head_ids, depth):
        self.trie, self.head = trie, head_ids
        ordinary = [i for i, b in enumerate(trie.token_bytes) if b]
        self.special = [i for i, b in enumerate(trie.token_bytes) if b is None]
        self.logp: dict[tuple, float] = {}
        self.end: dict[tuple, float] = {}  # log P(a special token next | head + seq)
        for n in range(1, depth + 1):
            seqs = list(itertools.product(ordinary, repeat=n))
            ids = torch.tensor([head_ids + list(s) for s in seqs])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits.double(), -1)
            h = len(head_ids)
            for row, seq in enumerate(seqs):
                self.logp[seq] = sum(logp[row, h - 1 + k, t].item() for k, t in enumerate(seq))
                self.end[seq] = torch.logsumexp(logp[row, -1, self.special], 0).item()

    def canonical(self, seq) -> bool:
        return self.trie.encode(self.trie.decode_bytes(seq)) == list(seq)

    def prefix_mass(self, x: bytes) -> float:
        """P(x comes next): canonical minimal covers (all but the last token end before x does)."""
        total = 0.0
        for seq, lp in self.logp.items():
            data = self.trie.decode_bytes(seq)
            before = len(self.trie.decode_bytes(seq[:-1]))
            if before < len(x) and data.startswith(x) and self.canonical(seq):
                total += math.exp(lp)
        return total

    def end_mass(self, x: bytes) -> float:
        return sum(math.exp(lp + self.end[seq]) for seq, lp in self.logp.items()
                   if self.trie.decode_bytes(seq) == x and self.canonical(seq))

    def next_byte(self, x: bytes) -> np.ndarray:
        mass = np.zeros(257)
        for b in ALPHABET:
            mass[b] = self.prefix_mass(x + bytes([b]))
        mass[END] = self.end_mass(x)
        return mass / mass.sum()


@pytest.mark.parametrize("prompt", ["ab b", "ba", "b  a", "aa ab", "bab ", "a  "])
def test_prefix_and_next_byte_equal_brute_force(bpe_model, trie, prompt):
    state = ByteState.from_prompt(bpe_model, trie, prompt)
    head_text, tail = split_last_pretoken(trie.tokenizer, prompt)
    assert head_text.encode() + tail == prompt.encode()
    brute = Brute(bpe_model, trie, state.head_ids, depth=len(tail) + 1)
    assert math.exp(state.prefix_logprob()) == pytest.approx(brute.prefix_mass(tail), rel=1e-9, abs=1e-12)
    got = state.next_byte_distribution()
    assert got.sum() == pytest.approx(1.0, abs=1e-12)
    assert got[[b for b in range(256) if b not in ALPHABET]].sum() == 0
    np.testing.assert_allclose(got, brute.next_byte(tail), rtol=1e-9, atol=1e-12)
    assert state.forwards == len(tail) + 1  # one sequence per split point


def test_unnormalized_next_byte_mass_is_the_longer_prefix_probability(bpe_model, trie):
    """mass_b(x) = P(x b) across appends (each append costs one forward), and the states stay exact."""
    state = ByteState.from_prompt(bpe_model, trie, "ab")
    _, tail = split_last_pretoken(trie.tokenizer, "ab")
    for byte in b" ba":
        mass = state.next_byte_distribution(normalize=False)
        assert mass[:256].sum() + mass[END] <= math.exp(state.prefix_logprob()) + 1e-15
        before = state.forwards
        state.append(bytes([byte]))
        assert state.forwards == before + 1
        assert math.log(mass[byte]) == pytest.approx(state.prefix_logprob(), abs=1e-12)
    assert state.tail == tail + b" ba"
    brute = Brute(bpe_model, trie, state.head_ids, depth=4)
    assert math.exp(state.prefix_logprob()) == pytest.approx(brute.prefix_mass(state.tail), rel=1e-9)
    np.testing.assert_allclose(state.next_byte_distribution(), brute.next_byte(state.tail), rtol=1e-9, atol=1e-12)


def test_a_state_extended_by_bytes_equals_a_fresh_state(bpe_model, trie):
    """The head of a fresh state ends at the last pre-token boundary of the longer prompt; a stable boundary
    gives the same next-byte distribution either way."""
    grown = ByteState.from_prompt(bpe_model, trie, "ab").append(b" b")
    fresh = ByteState.from_prompt(bpe_model, trie, "ab b")
    assert fresh.head_ids != grown.head_ids
    np.testing.assert_allclose(grown.next_byte_distribution(), fresh.next_byte_distribution(), rtol=1e-9)


def test_check_modes_bound_their_error(bpe_model, trie):
    exact = ByteState.from_prompt(bpe_model, trie, "ab b")
    fast = ByteState.from_prompt(bpe_model, trie, "ab b", check="none")
    mass = ByteState.from_prompt(bpe_model, trie, "ab b", check="mass", min_mass=1e-3)
    p_exact = math.exp(exact.prefix_logprob())
    assert exact.unchecked_mass == 0
    for approx in (fast, mass):
        p = math.exp(approx.prefix_logprob())
        assert p_exact <= p <= p_exact + approx.unchecked_mass + 1e-12
    assert fast.unchecked_mass > mass.unchecked_mass


def test_a_tail_no_token_spells_is_a_clear_error(bpe_model, trie):
    state = ByteState.from_prompt(bpe_model, trie, "ab")
    with pytest.raises(ValueError, match=r"b'abz' cannot be spelled by this vocabulary"):
        state.append(b"z")


# --- generation, healing, ensembles ------------------------------------------------------------------------


def test_greedy_bytes_follow_the_argmax_and_their_logprob(bpe_model, trie):
    from tokenfocus.tokenizers.bytegen import generate_bytes

    state = ByteState.from_prompt(bpe_model, trie, "aa")
    probe = ByteState.from_prompt(bpe_model, trie, "aa")
    data, logprob = generate_bytes(state, 4)
    assert len(data) == 4
    expected = 0.0
    for byte in data:
        p = probe.next_byte_distribution()
        assert byte == int(np.argmax(p))
        expected += math.log(p[byte])
        probe.append(bytes([byte]))
    assert logprob == pytest.approx(expected, abs=1e-12)
    assert state.tail == b"aa" + data and state.forwards == 3 + 4  # 3 splits for "aa", then one per byte


def test_generation_stops_before_a_stop_byte_and_at_the_end_of_text(bpe_model, trie):
    from tokenfocus.tokenizers.bytegen import complete_word, generate_bytes

    state = ByteState.from_prompt(bpe_model, trie, "aa")
    word, _ = complete_word(state)
    assert word == "aba" and state.tail == b"aaaba"  # greedy "aba " stops before the space
    ended = ByteState.from_prompt(bpe_model, trie, "ab")  # greedy: a special token first
    assert generate_bytes(ended, 4) == (b"", 0.0) and ended.tail == b"ab"


def test_sampling_follows_the_distribution(bpe_model, trie):
    from tokenfocus.tokenizers.bytegen import generate_bytes

    p = ByteState.from_prompt(bpe_model, trie, "ab").next_byte_distribution()
    draws = [generate_bytes(ByteState.from_prompt(bpe_model, trie, "ab"), 1, temperature=1.0, seed=s)[0]
             for s in range(300)]
    freq_a = sum(d == b"a" for d in draws) / len(draws)
    assert abs(freq_a - p[ord("a")]) < 4 * np.sqrt(p[ord("a")] * (1 - p[ord("a")]) / len(draws)) + 1e-9


def test_ensemble_is_the_weighted_mixture_and_stays_in_step(bpe_model, trie):
    from tokenfocus.models import build_tiny_llama
    from tokenfocus.tokenizers.bytegen import ByteEnsemble

    char_model, char_tok = build_tiny_llama(seed=1)
    char_trie = VocabTrie.from_tokenizer(char_tok)
    a = ByteState.from_prompt(bpe_model, trie, "ab b")
    b = ByteState.from_prompt(char_model, char_trie, "ab b")
    pa, pb = a.next_byte_distribution(), b.next_byte_distribution()
    ensemble = ByteEnsemble([a, b], weights=[3, 1])
    np.testing.assert_allclose(ensemble.next_byte_distribution(), 0.75 * pa + 0.25 * pb, atol=1e-15)
    assert ensemble.next_byte_distribution().sum() == pytest.approx(1.0)
    ensemble.append(b"a")
    assert a.tail.endswith(b"ba") and b.tail.endswith(b"ba")
    with pytest.raises(ValueError, match="non-negative"):
        ByteEnsemble([a, b], weights=[1, -1])


def test_healing_on_a_vocabulary_whose_canonical_split_hides_the_word(bpe_model, trie):
    """The result carries both completions; they are compared to the ones computed step by step."""
    from tokenfocus.tokenizers.bytegen import complete_word, heal, token_word_completion

    result = heal(bpe_model, trie, "ab b", check="all")
    expected, _ = complete_word(ByteState.from_prompt(bpe_model, trie, "ab b"))
    assert result.byte_completion == expected
    tokens, first = token_word_completion(bpe_model, trie.tokenizer, [0], "ab b")
    assert (result.token_completion, result.token_next) == (tokens, first)
    assert result.changed == (tokens != expected)


# --- the canonicality shortcut -------------------------------------------------------------------------------


def rule_vs_encoding(trie, tail: str):
    """Validity of canonical(tail) + [t] for every token t: through the shortcut, and by re-encoding each."""
    from tokenfocus.tokenizers.byteprobs import _Split

    left = trie.encode(tail) if tail else []
    state = ByteState(model=None, trie=trie, head_ids=[0], tail=b"", splits=[])
    ids = np.array([i for i, b in enumerate(trie.token_bytes) if b is not None])
    split = _Split(len(tail), left, 0.0, np.zeros(len(trie)))
    fast = state._validate(split, ids, np.zeros(ids.size))
    slow = np.array([trie.encode(trie.decode_bytes(left + [t]).decode("utf-8", "replace")) == left + [t]
                     if _whole_text(trie.decode_bytes(left + [t])) else True for t in ids.tolist()])
    return fast, slow, ids


def _whole_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


TAILS = ["", " oranges", "Hello", "x=12", "end.", " a", "ab ", "\n", "it's", " 3"]


def test_canonicality_shortcut_equals_re_encoding_on_a_gpt2_style_bpe():
    from tokenfocus.tokenizers.metrics import train_bpe
    from tokenfocus.tokenizers.phantom import probe_texts

    trie = VocabTrie.from_tokenizer(train_bpe(probe_texts(300) + ["it's x=12 end.\n\n a ab  3"] * 5, 700))
    assert trie.gpt2_split
    invalid = {}
    for tail in TAILS:
        fast, slow, ids = rule_vs_encoding(trie, tail)
        assert (fast == slow).all(), (tail, [trie.token_bytes[i] for i in ids[fast != slow]])
        invalid[tail] = int((~slow).sum())
    assert invalid[" oranges"] > 0 and invalid["Hello"] > 0 and invalid["ab "] > 0  # the checks have work to do


@pytest.mark.slow
def test_canonicality_shortcut_equals_re_encoding_on_smollm2():
    from tokenfocus.models import load_model

    trie = VocabTrie.from_tokenizer(load_model("default")[1])
    assert trie.gpt2_split
    for tail in TAILS[:6]:
        fast, slow, ids = rule_vs_encoding(trie, tail)
        assert (fast == slow).all(), (tail, [trie.token_bytes[i] for i in ids[fast != slow]][:10])


@pytest.mark.slow
def test_smollm2_heals_a_cut_word_and_survives_hostile_prompts():
    """On the packaged model: " Pa" continues with "r" (plain tokens say "ix"); prompts in other scripts, with
    emoji, empty or all whitespace give proper distributions, and generation may pass through partial UTF-8."""
    from tokenfocus.models import load_model
    from tokenfocus.tokenizers.bytegen import complete_word, generate_bytes

    model, tok = load_model("default")
    trie = VocabTrie.from_tokenizer(tok)
    state = ByteState.from_prompt(model, trie, "The capital of France is Pa", check="mass", min_mass=1e-4)
    assert state.tail == b" Pa" and state.next_byte_distribution()[ord("r")] > 0.9
    assert complete_word(state)[0] == "ris"
    for prompt in ["日本", "I love 🍕", "", "   ", "Line one\n"]:
        state = ByteState.from_prompt(model, trie, prompt, check="mass", min_mass=1e-4)
        p = state.next_byte_distribution()
        assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
        data, logprob = generate_bytes(state, 4)
        assert state.tail.endswith(data) and np.isfinite(logprob)
