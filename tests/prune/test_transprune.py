"""TransPrune: the hook points are the sub-layer input after its pre-norm and the output before the residual add
(checked against a hand-run layer); TTV and IGA each sum to 1 over the context; IGA equals the model's own eager
attention probabilities averaged the paper's way; the progressive schedule keeps the planned counts."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.capture import capture
from tokenfocus.models import load_model
from tokenfocus.prune import TokenLayout
from tokenfocus.prune.transprune import TransPrune, transition_variation

TINY = "tiny-llama:layers=4,hidden=32,heads=4,kv_heads=2"
LAYOUT = TokenLayout.from_segments([("system", 3), ("context", 8), ("query", 5)])


@pytest.fixture(scope="module")
def model():
    model, _ = load_model(TINY)
    model.set_attn_implementation("eager")
    return model.eval()


def ids_of(model, seed=0):
    return torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_the_sub_layer_points_are_post_norm_inputs_and_pre_residual_outputs(model):
    points = {p: None for p in ("embed", "layers.0.attn_in", "layers.0.attn", "layers.0.mlp_in", "layers.0.mlp",
                                "layers.0.resid_post")}
    with capture(model, points) as got:
        model(ids_of(model))
    layer = model.model.layers[0]
    residual = got["embed"][0]
    assert torch.allclose(got["layers.0.attn_in"][0], layer.input_layernorm(residual), atol=1e-6)
    middle = residual + got["layers.0.attn"][0]
    assert torch.allclose(got["layers.0.mlp_in"][0], layer.post_attention_layernorm(middle), atol=1e-6)
    assert torch.allclose(got["layers.0.mlp"][0], layer.mlp(got["layers.0.mlp_in"][0]), atol=1e-6)
    assert torch.allclose(got["layers.0.resid_post"][0], middle + got["layers.0.mlp"][0], atol=1e-6)


def test_transition_variation_is_the_norm_ratio_times_a_softmax_of_the_direction_change():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    y = torch.tensor([[[2.0, 0.0], [0.0, -2.0], [0.0, 1.0]]])
    change = torch.tensor([0.0, 2.0, 1.0 - 1.0 / 2 ** 0.5])  # 1 - cos per position
    expected = torch.tensor([2.0, 1.0, 1.0 / 2 ** 0.5]) * torch.softmax(change, 0)
    assert torch.allclose(transition_variation(x, y)[0], expected, atol=1e-6)


@torch.no_grad()
def test_ttv_and_iga_each_sum_to_one_over_the_context_and_iga_is_the_models_attention(model):
    ids = ids_of(model, 1)
    pruner = TransPrune(model, LAYOUT, accumulate=[0, 1], prune_layers=[2], ratios=[0.5])
    out = pruner.run(ids)
    scores = pruner.scores[2]
    assert sorted(scores["ttv"]) == list(range(3, 11))
    assert sum(scores["ttv"].values()) == pytest.approx(1.0, abs=1e-5)  # the code's +1e-8
    assert sum(scores["iga"].values()) == pytest.approx(1.0, abs=1e-6)
    probs = model(ids, output_attentions=True).attentions[2][0]  # (H, T, T): layer 2 sees every token unpruned
    mass = probs.mean(0)[11:, 3:11].mean(0)
    assert torch.allclose(torch.tensor([scores["iga"][p] for p in range(3, 11)]), mass / mass.sum(), atol=1e-5)
    best = sorted(range(3, 11), key=lambda p: (-scores["score"][p], p))[:4]
    assert out.kept == [0, 1, 2, *sorted(best), 11, 12, 13, 14, 15]
    assert out.position_ids.tolist() == [list(range(12))]  # renumbered, as the reference code does


@torch.no_grad()
def test_the_progressive_schedule_keeps_fractions_of_the_original_context(model):
    pruner = TransPrune(model, LAYOUT, accumulate=[0, 1, 2], prune_layers=[1, 3], ratios=[0.75, 0.25])
    out = pruner.run(ids_of(model, 2))
    assert len(out.history[1]) == 3 + 6 + 5 and len(out.kept) == 3 + 2 + 5
    assert sum(pruner.scores[3]["ttv"].values()) == pytest.approx(1.0, abs=1e-5)  # over the 6 left
    ttv_only = TransPrune(model, LAYOUT, accumulate=[0], prune_layers=[1], ratios=[0.5], use_iga=False)
    ttv_only.run(ids_of(model, 2))
    assert set(ttv_only.scores[1]["iga"].values()) == {0.0}
    with pytest.raises(ValueError, match="TransPrune layer 9 is outside the model's layers 0..3"):
        TransPrune(model, LAYOUT, prune_layers=[9], ratios=[0.5], accumulate=[0])
