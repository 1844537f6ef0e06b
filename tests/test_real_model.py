"""The recorder on a few layers of the real SmolLM2-135M for one short input (slow, still run in CI)."""

from __future__ import annotations

import pytest
import torch

from helpers import eager_entropies
from tokenfocus.capture import record_attention_entropy
from tokenfocus.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm():
    return load_model("default")


def test_smollm2_recorder_matches_eager_and_keeps_logits(smollm):
    model, tok = smollm
    text = tok.apply_chat_template([{"role": "user", "content": "Compute 47+38."}], tokenize=False,
                                   add_generation_prompt=True) + "47+38 = 85. Answer: 85"
    ids = tok(text, return_tensors="pt").input_ids
    ids = torch.cat([torch.full((1, 3), tok.pad_token_id), ids], 1)  # left padding too
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, :3] = False
    layers = [0, 15, 29]
    reference = eager_entropies(model, ids, mask)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask.long()).logits
        with record_attention_entropy(model, layers) as recorder:
            recorded = model(input_ids=ids, attention_mask=mask.long()).logits
    assert torch.equal(plain, recorded)
    for layer in layers:
        got = recorder.result()[layer].entropy
        assert got.shape[1] == 9  # per query head under GQA (3 KV heads)
        err = ((got.double() - reference[layer]).abs() * mask[:, None]).max().item()
        assert err <= 2e-5, (layer, err)


def test_span_marks_on_smollm2s_tokenizer(smollm):
    """Byte-level BPE with a regex pre-tokenizer: the facts' tokens are marked (" 47" style tokens straddle a span
    edge and count), through the chat template exactly as TRL tokenizes it."""
    from tokenfocus.tasks import build_task
    from tokenfocus.tasks.spans import token_marks

    _, tok = smollm
    example = build_task({"name": "facts"}).examples("test", 4, tiers=["F3"])[0]
    prompt = [{"role": "user", "content": example.prompt}]
    ids, marks = token_marks(tok, prompt, example.spans)
    assert ids == tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    marked = tok.decode([i for i, m in zip(ids, marks["evidence"]) if m])
    facts = [example.prompt[a:b] for a, b in example.spans["evidence"]]
    assert marked.replace(" ", "") == "".join(facts)
    assert sum(marks["evidence"]) >= sum(len(f) for f in facts) - 3 * len(facts)  # digits are single tokens
    query = tok.decode([i for i, m in zip(ids, marks["query"]) if m])
    assert query.strip() == example.prompt[slice(*example.spans["query"][0])]
