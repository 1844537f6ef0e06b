"""Phantom edits (B6): trial labels from constructed outputs, the 8-type classifier on hand cases, and the
decoding mask against a brute-force scan of the vocabulary and inside ``model.generate``."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.tokenizers import VocabTrie
from tokenfocus.tokenizers.metrics import train_bpe
from tokenfocus.tokenizers.phantom import (
    BREAKS,
    PHANTOM_TYPES,
    PhantomMask,
    bracket_words,
    classify_phantom,
    label_trial,
    probe_texts,
    run_probe,
    summarize,
)

TEXT = "Officials in Riverton opened the new library on Monday. NASA workers' cats watched."


@pytest.fixture(scope="module")
def trie():
    corpus = probe_texts(200, seed=1) + [TEXT] * 20
    return VocabTrie.from_tokenizer(train_bpe(corpus, 600))


def span_of(word):
    start = TEXT.index(word)
    return start, start + len(word)


def test_a_faithful_copy_is_unchanged(trie):
    trial = label_trial(trie, TEXT, span_of("library"), trie.encode(TEXT))
    assert trial.label == "unchanged" and trial.output_pieces == trial.original_pieces
    assert "".join(trial.original_pieces).strip() == "library"


def test_a_new_word_is_replaced(trie):
    trial = label_trial(trie, TEXT, span_of("library"), trie.encode(TEXT.replace("library", "stadium")))
    assert trial.label == "replaced" and trial.output_word == "stadium"


def test_the_same_word_through_other_tokens_is_a_phantom_edit(trie):
    ids = trie.encode(TEXT)
    [space_library] = trie.ids_of(b" library")
    at = ids.index(space_library)
    detached = ids[:at] + trie.ids_of(b" ") + trie.encode("library") + ids[at + 1:]
    assert trie.decode_bytes(detached) == TEXT.encode()
    trial = label_trial(trie, TEXT, span_of("library"), detached)
    assert trial.label == "phantom" and trial.phantom_type == "whitespace_detach_reattach"
    assert trial.output_pieces[0] == " " and trial.original_pieces == (" library",)


def test_brackets_kept_and_garbage_are_counted_apart(trie):
    kept = label_trial(trie, TEXT, span_of("library"), trie.encode(TEXT.replace("library", "[library]")))
    assert kept.label == "kept_brackets"
    moved = label_trial(trie, TEXT, span_of("Monday"), trie.encode(TEXT.replace("on Monday.", "on [Monday, NASA].")))
    assert moved.label == "kept_brackets"  # a bracket that moved but still touches the word is not a phantom
    assert label_trial(trie, TEXT, span_of("library"), trie.encode("zzzz qqqq")).label == "unaligned"
    summary = summarize([kept, label_trial(trie, TEXT, span_of("library"), trie.encode(TEXT))])
    assert summary["judged"] == 1 and summary["phantom_rate"] == 0.0 and summary["kept_brackets"] == 1


@pytest.mark.parametrize("word, before, after, expected", [
    ("cat", (" cat",), (" ", "cat"), "whitespace_detach_reattach"),
    ("cat", ("big", " cat"), ("big ", "cat"), "whitespace_boundary_shift"),
    ("cat", (" cat", "\n"), (" cat", "\n", ""), "newline_substitution"),
    ("table", (" table",), (" ta", "ble"), "intra_word_resegmentation"),
    ("Riverton", (" Riverton",), (" River", "ton"), "proper_noun_segmentation"),
    ("walking", (" walking",), (" walk", "ing"), "morphological_boundary"),
    ("NASA", (" NASA",), (" NA", "SA"), "acronym_split"),
    ("cats", (" cats",), (" cat", "s"), "plural_possessive_tail"),
    ("workers'", (" workers'",), (" workers", "'"), "intra_word_resegmentation"),
    ("Helen's", (" Helen's",), (" Helen", "'s"), "plural_possessive_tail"),
])
def test_phantom_types(word, before, after, expected):
    assert expected in PHANTOM_TYPES
    assert classify_phantom(word, before, after) == expected


def test_a_newline_before_the_word_is_a_newline_substitution(trie):
    """"on Monday" copied as "on\nMonday": the word's own tokens lose their space to the newline token."""
    output = trie.encode(TEXT.replace("library on Monday", "library on\nMonday"))
    trial = label_trial(trie, TEXT, span_of("Monday"), output)
    assert trial.label == "phantom" and trial.phantom_type == "newline_substitution"
    assert classify_phantom("Monday", (" Monday",), ("Monday",), before="\n") == "newline_substitution"


def completes(chunk: bytes, token: bytes, word: bytes) -> bool:
    """Brute force: after ``chunk`` (bytes since the last break), does ``token`` finish a run equal to ``word``?"""
    data = chunk + token
    runs, start = [], 0
    for k, b in enumerate(data + b" "):
        if b in BREAKS:
            if k > start and k > len(chunk):  # the run ends inside (or at the end of) the new token
                runs.append(data[start:k])
            start = k + 1
    return word in runs


@pytest.mark.parametrize("generated, word", [("", "library"), ("The new ", "library"), ("The new lib", "library"),
                                             ("The new", "library"), ("library on ", "Monday"), ("x", "Riverton")])
def test_mask_bans_exactly_the_completing_tokens(trie, generated, word):
    ids = trie.encode(generated) if generated else []
    mask = PhantomMask(trie, [[word]])
    mask.start = 0
    scores = torch.zeros(1, len(trie))
    mask(torch.tensor([ids], dtype=torch.long), scores)
    text = trie.decode_bytes(ids)
    cut = max((k for k, b in enumerate(text) if b in BREAKS), default=-1)
    chunk = text[cut + 1:]
    expected = {i for i, b in enumerate(trie.token_bytes) if b and completes(chunk, b, word.encode())}
    assert expected, "the case must ban something"
    assert set(torch.nonzero(scores[0] == float("-inf")).flatten().tolist()) == expected


class Script:
    """A logits processor that makes greedy decoding spell ``text`` token by token (a perfect copier)."""

    def __init__(self, ids, eos):
        self.ids, self.eos, self.start = ids, eos, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = input_ids.shape[1] - self.start
        target = self.ids[step] if step < len(self.ids) else self.eos
        bonus = torch.zeros_like(scores)
        bonus[:, target] = 1e4
        return scores + bonus


def test_mask_in_generate_forces_a_replacement(trie):
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

    tok = trie.tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    ids = trie.encode(TEXT)
    prompt = torch.tensor([[tok.bos_token_id]])

    def run(mask):
        procs = [Script(ids, tok.eos_token_id)] + ([PhantomMask(trie, [["library"]])] if mask else [])
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=len(ids) + 4,
                             logits_processor=LogitsProcessorList(procs), pad_token_id=tok.pad_token_id)
        return out[0, 1:].tolist()

    assert label_trial(trie, TEXT, span_of("library"), run(False)).label == "unchanged"
    masked = trie.decode_bytes([i for i in run(True) if trie.token_bytes[i]]).decode()
    # the copier's " library" is banned, greedy takes the model's next choice, then the copy goes on
    assert "library" not in masked and masked.startswith("Officials in Riverton opened the new")
    assert masked.endswith(" on Monday. NASA workers' cats watched.")


def test_bracketing_and_the_probe_run_end_to_end():
    from tokenfocus.models import build_tiny_llama

    text = probe_texts(1, seed=3)[0]
    bracketed, spans = bracket_words(text, rate=0.1, seed=0)
    assert bracketed.replace("[", "").replace("]", "") == text and spans
    for s, e in spans:
        assert f"[{text[s:e]}]" in bracketed
    model, tok = build_tiny_llama()
    trials = run_probe(model, tok, probe_texts(3), mask=True, batch_size=2, max_new_tokens=8)
    assert len(trials) >= 3 and {t.label for t in trials} <= {"unchanged", "replaced", "phantom", "kept_brackets",
                                                               "unaligned"}
    assert summarize(trials)["trials"] == len(trials)


def test_sampled_probe_is_reproducible_from_its_seed():
    from tokenfocus.models import build_tiny_llama

    model, tok = build_tiny_llama()
    texts = probe_texts(2)
    runs = [run_probe(model, tok, texts, temperature=1.0, seed=4, batch_size=2, max_new_tokens=12) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) >= 2
