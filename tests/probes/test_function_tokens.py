"""Function tokens (C1): the partition, the pair labels and the loss decomposition by hand; steering's hook."""

from __future__ import annotations

import pytest
import torch

from helpers import GSM8K_DIR, tiny
from tokenfocus.signals.function_token import FunctionPartition
from tokenfocus.probes.function_tokens import (function_partition, loss_decomposition,
                                               pair_labels, steer, steering, token_losses)


class WordTokenizer:
    """Whitespace tokenizer with a fixed vocabulary: enough for the partition's counting."""

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.name_or_path = "words"

    def __len__(self):
        return len(self.vocab)

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[self.vocab[w] for w in t.split()] for t in texts]}


def test_partition_takes_the_most_frequent_tokens_up_to_the_coverage():
    """Counts a:5, b:3, c:2 (10 occurrences). coverage 0.4: a alone covers 0.5 -> {a}; 0.6: a, b (0.8).
    Document coverage: a is in both documents, b only in the first."""
    tok = WordTokenizer(["a", "b", "c", "d"])
    texts = ["a a a b b b c", "a a c"]
    part = function_partition(tok, texts, coverage=0.4)
    assert part.ids == [0] and part.coverage == pytest.approx(0.5) and part.total == 10
    part = function_partition(tok, texts, coverage=0.6)
    assert part.ids == [0, 1] and part.share == pytest.approx([0.5, 0.3]) and part.documents == [1.0, 0.5]
    assert part.mask(torch.tensor([[0, 1, 2, 3]])).tolist() == [[True, True, False, False]]
    again = FunctionPartition.from_json(part.to_json())
    assert again.ids == part.ids and again.vocab_size == 4
    with pytest.raises(ValueError, match="coverage"):
        function_partition(tok, texts, coverage=1.0)
    with pytest.raises(ValueError, match="empty"):
        function_partition(tok, ["", ""])
    with pytest.raises(ValueError, match="probe function-tokens"):
        FunctionPartition.from_json({"ids": [1]})


def test_pair_labels_and_decomposition_by_hand():
    """Tags F C C F: token 1 is F->C, 2 is C->C, 3 is C->F; losses 1, 2, 4 -> shares 1/7, 2/7, 4/7."""
    tags = torch.tensor([[True, False, False, True]])
    assert pair_labels(tags).tolist() == [[-1, 1, 3, 2]]
    losses = torch.tensor([[0.0, 1.0, 2.0, 4.0]])
    valid = torch.tensor([[False, True, True, True]])
    d = loss_decomposition(losses, tags, valid)
    assert d.count == {"F->F": 0, "F->C": 1, "C->F": 1, "C->C": 1}
    assert d.mean == {"F->F": 0.0, "F->C": 1.0, "C->F": 4.0, "C->C": 2.0}
    assert d.share["C->F"] == pytest.approx(4 / 7)


def test_token_losses_match_the_naive_cross_entropy_with_right_padding():
    model, _ = tiny()
    ids = torch.randint(3, 90, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 5:] = False
    got = token_losses(model, ids, mask, batch_size=2)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask.long()).logits.double(), -1)
    naive = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    expected = torch.zeros(3, 7, dtype=torch.float64)
    expected[:, 1:] = naive
    expected = torch.where(mask, expected, torch.zeros_like(expected))
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)
    assert got[:, 0].eq(0).all() and got[1, 5:].eq(0).all()


def test_steer_changes_only_positions_at_or_after_the_steered_one():
    """Causal attention: adding a vector at position 3 of layer 0 leaves the logits of positions 0-2 bit-equal."""
    model, _ = tiny()
    ids = torch.randint(3, 90, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with steer(model, 0, torch.ones(32), torch.tensor([3]), alpha=5.0):
            moved = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(base[:, :3], moved[:, :3])
    assert (base[:, 3:] - moved[:, 3:]).abs().amax(-1).gt(1e-4).all()
    assert torch.equal(base, after)  # the hook is gone


class CharTokenizer:
    """Each character one token (space 3, a..z 4..29; a leading space is dropped, like BPE's merged "Ġa") for
    steering's end-to-end run on the tiny model."""

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        ids = [3 if c == " " else ord(c) - 93 for c in (text[1:] if text.startswith(" ") else text)]
        return type("Enc", (), {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids})()


def test_steering_runs_and_alpha_zero_is_no_shift():
    model, _ = tiny()
    tok = CharTokenizer()
    partition = FunctionPartition([3], [0.2], [1.0], 0.2, 10, 1, 90)
    result = steering(model, tok, partition, concept_a=["ab cd", "ab ce"], concept_b=["xy z", "xw z"],
                      neutral=["hello world", "one two", "nospace"], words_a=["a"], words_b=["x"], layer=1,
                      alphas=(0.0, 8.0))
    assert result.skipped == ["nospace"] and len(result.positions["function"]) == 2
    assert result.positions["function"] == [5, 3]  # the last space
    assert all(abs(s) < 1e-6 for s in result.shifts["function"][0.0])
    assert any(abs(s) > 1e-4 for s in result.shifts["content"][8.0])
    assert set(result.to_json()["mean_shift"]) == {"function", "content"}


@pytest.mark.slow
def test_smollm2_partition_on_gsm8k_questions_is_small_and_made_of_function_words():
    import json

    from tokenfocus.models import load_model
    _, tok = load_model("default")
    rows = [json.loads(line) for line in (GSM8K_DIR / "test.jsonl").read_text().splitlines()[:40]]
    part = function_partition(tok, [r["question"] + "\n" + r["answer"] for r in rows])
    tokens = tok.convert_ids_to_tokens(part.ids)
    assert 0.4 <= part.coverage < 0.45 and 10 <= len(part.ids) <= 120
    assert {"Ġthe", ".", "Ġ"} <= set(tokens)  # measured: 12 tokens, digits 0-6, space, ".", "\\n", "the", "="
