"""The text pruning testbeds and their fidelity metrics: spans become the right token roles, the answer is scored
teacher-forced exactly as a plain forward scores it, and an unpruned run has perfect fidelity by every metric."""

from __future__ import annotations

import pytest
import torch
from helpers import GSM8K_DIR

from tokenfocus.models import load_model
from tokenfocus.prune import LayerRunner
from tokenfocus.prune.fidelity import answer_scores, fidelity, relative_flops
from tokenfocus.prune.testbeds import encode, facts_examples, gsm8k_examples


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model("tiny-llama:layers=3,hidden=32,heads=4,kv_heads=2")
    return model.eval(), tokenizer


def chars(tokenizer, ids):
    return "".join(tokenizer.convert_ids_to_tokens(ids))


def test_a_value_question_scores_one_retrieved_fact():
    example = facts_examples(1, distractors=2, seed=5, question="value")[0]
    (a, b), = example.spans["evidence"]
    name, value = example.prompt[a:b].split("=")
    assert example.answer == value and example.prefix == f"{name} = " and example.prompt.count("=") == 4
    assert example.prompt[slice(*example.spans["query"][0])] == f"Compute {name}"
    with pytest.raises(ValueError, match="question must be 'sum' or 'value'"):
        facts_examples(1, question="max")


def test_a_facts_block_is_the_context_and_its_gold_facts_the_evidence(tiny):
    _, tokenizer = tiny
    example = facts_examples(1, distractors=20, seed=3)[0]
    encoded = encode(tokenizer, example)
    ids = encoded.ids[0].tolist()
    context = chars(tokenizer, [ids[p] for p in encoded.layout.positions("context")])
    assert context.count("=") == 22 and context.startswith("x") and "Compute" not in context
    assert chars(tokenizer, [ids[p] for p in encoded.layout.positions("query")]).startswith("Compute x")
    assert chars(tokenizer, encoded.answer_ids) == example.answer
    assert chars(tokenizer, [ids[p] for p in encoded.answer_positions]) == example.answer
    assert set(encoded.evidence) <= set(encoded.layout.positions("context")) and len(encoded.evidence) >= 8
    assert set(encoded.layout.positions("generated")) >= set(encoded.answer_positions)


@torch.no_grad()
def test_the_answer_is_scored_as_a_plain_forward_scores_it_and_unpruned_fidelity_is_perfect(tiny):
    model, tokenizer = tiny
    encoded = encode(tokenizer, facts_examples(1, distractors=20, seed=4)[0])
    runner = LayerRunner(model)
    full = answer_scores(runner, encoded)
    logps = torch.log_softmax(model(encoded.ids).logits[0].float(), -1)
    naive = sum(float(logps[p - 1, t]) for p, t in zip(encoded.answer_positions, encoded.answer_ids))
    assert full["logp"] == pytest.approx(naive, abs=1e-4)
    same = fidelity(full, full, encoded, model.config, runner.num_layers)
    assert same["retention"] == pytest.approx(1.0) and same["kl_first"] == pytest.approx(0.0, abs=1e-7)
    assert same["flops"] == pytest.approx(1.0) and same["evidence"] == 1.0
    fixed = [p for p in range(encoded.ids.shape[1]) if encoded.layout.roles[p] != "context"]
    pruned = answer_scores(runner, encoded, drops={1: fixed})
    found = fidelity(full, pruned, encoded, model.config, runner.num_layers)
    assert found["evidence"] == 0.0 and found["kept_context"] == 0 and found["flops"] < 1.0
    assert found["kl_first"] > 0 and found["retention"] != pytest.approx(1.0)
    with pytest.raises(ValueError, match="logits asked at positions .* that were dropped"):
        answer_scores(runner, encoded, drops={1: fixed[:-2]})


def test_flops_count_each_layers_tokens():
    from types import SimpleNamespace

    config = SimpleNamespace(hidden_size=4, intermediate_size=8, num_attention_heads=2, num_key_value_heads=2)
    assert relative_flops(config, 10, {}, 4) == 1.0
    half = relative_flops(config, 10, {2: list(range(5))}, 4)  # layers 2 and 3 see 5 of 10 tokens
    weights = 4 * 2 * 8 + 3 * 4 * 8
    cost = lambda n: 2 * weights * n + 16 * n * n
    assert half == pytest.approx((2 * cost(10) + 2 * cost(5)) / (4 * cost(10)))


def test_gsm8k_statements_are_the_context_and_the_question_the_query(tiny):
    _, tokenizer = tiny
    for example in gsm8k_examples(5, str(GSM8K_DIR), seed=0):
        (a, b), = example.spans["context"]
        (c, d), = example.spans["query"]
        assert 0 == a < b < c < d and example.prompt[c:d].endswith("?") and example.prompt[b - 1] in ".!"
        assert encode(tokenizer, example).layout.pruneable
