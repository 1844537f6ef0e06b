"""Relevance (gradient x attention rollout) against an independent autograd computation, its normalization, the
layer-0 attention features, and a predictor that learns a relevance it can see in the features."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.models import load_model
from tokenfocus.prune import TokenLayout
from tokenfocus.prune.policies import topk
from tokenfocus.prune.relevance import (
    attention_features,
    predict,
    relevance,
    train_predictor,
)

LAYOUT = TokenLayout.from_segments([("system", 2), ("context", 8), ("query", 4)])


@pytest.fixture(scope="module")
def model():
    model, _ = load_model("tiny-llama:layers=3,hidden=32,heads=4,kv_heads=2")
    model.set_attn_implementation("eager")
    return model.eval()


def test_relevance_is_the_gradient_weighted_rollout_normalized_over_the_context(model):
    ids = torch.randint(0, model.config.vocab_size, (1, 14), generator=torch.Generator().manual_seed(0))
    found = relevance(model, LAYOUT, target_position=13, gold=5, input_ids=ids)
    out = model(input_ids=ids, output_attentions=True)
    grads = torch.autograd.grad(torch.log_softmax(out.logits[0, 13], -1)[5], out.attentions)
    rollout = torch.eye(14, dtype=torch.float64)
    for a, g in zip(out.attentions, grads):
        rollout = rollout + (g[0] * a[0]).clamp(min=0).mean(0).double() @ rollout
    expected = rollout[13, 2:10] / rollout[13, 2:10].sum()
    assert torch.allclose(found[2:10], expected, atol=1e-6)
    assert float(found.sum()) == pytest.approx(1.0) and found[:2].abs().sum() == 0 and found[10:].abs().sum() == 0
    sdpa, _ = load_model("tiny-llama:layers=3,hidden=32,heads=4,kv_heads=2")
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        relevance(sdpa, LAYOUT, 13, 5, input_ids=ids)


def test_layer0_features_are_the_attention_the_context_receives(model):
    ids = torch.randint(0, model.config.vocab_size, (1, 14), generator=torch.Generator().manual_seed(1))
    features = attention_features(model, LAYOUT, input_ids=ids)
    first = model(input_ids=ids, output_attentions=True).attentions[0][0].mean(0)
    assert features.shape == (8, 3)
    assert torch.allclose(features[:, 0], first[10:14, 2:10].mean(0), atol=1e-6)
    assert torch.allclose(features[:, 2], first[13, 2:10], atol=1e-6)


def test_the_predictor_learns_relevance_it_can_see():
    generator = torch.Generator().manual_seed(2)
    pairs = []
    for _ in range(12):
        features = torch.rand(8, 3, generator=generator)
        pairs.append((features, features[:, 0] * 2 + 0.1 * features[:, 1]))  # relevance readable from the features
    predictor, info = train_predictor(pairs, steps=200)
    assert info["loss_after"] < 0.1 * info["loss_before"]
    features, target = pairs[0]
    scores = predict(predictor, features, LAYOUT)
    best = sorted(range(8), key=lambda i: -float(target[i]))[:4]
    assert [p - 2 for p in topk(LAYOUT, scores, 0.5) if 2 <= p < 10] == sorted(best)
    grid, info = train_predictor([(torch.rand(16, 3, generator=generator), torch.rand(16, generator=generator))
                                  for _ in range(3)], grid=4, steps=20)
    assert grid(torch.rand(2, 16, 3)).shape == (2, 16)
