"""Pruning signals on constructed inputs whose answers are known: the information map's cells are the runner's
own kept-vs-none probabilities, the horizon rule on made-up maps, ZOO-Prune's sensitivity on maps with a known
Jacobian (and its warning for a linear one), EmbedLens' neighbours and automatically found attractors."""

from __future__ import annotations

import warnings

import pytest
import torch

from tokenfocus.models import load_model
from tokenfocus.prune import LayerRunner, TokenLayout
from tokenfocus.prune.signals import (
    embedding_lens,
    find_attractors,
    information_horizon,
    information_map,
    lens_categories,
    text_map,
    zeroth_order_sensitivity,
)

LAYOUT = TokenLayout.from_segments([("system", 2), ("context", 6), ("query", 3)])


@torch.no_grad()
def test_each_cell_of_the_information_map_is_one_window_kept_against_none():
    model, _ = load_model("tiny-llama:layers=3,hidden=32,heads=4,kv_heads=2")
    runner = LayerRunner(model.eval())
    ids = torch.randint(0, model.config.vocab_size, (1, 11), generator=torch.Generator().manual_seed(0))
    found = information_map(runner, LAYOUT, gold=7, layers=[0, 2], window=4, input_ids=ids)
    assert found["windows"] == [[2, 3, 4, 5], [6, 7]] and found["info"].shape == (2, 2)
    fixed = [0, 1, 8, 9, 10]
    p = lambda drops: float(torch.softmax(runner.run(ids, drops=drops).logits[0, -1], -1)[7])
    # float32 probabilities of batched and single forwards differ in the last bits (3e-9 seen); cells differ by ~1e-4
    assert found["info"][1, 1] == pytest.approx(p({2: sorted(fixed + [6, 7])}) - p({2: fixed}), abs=1e-7)
    fresh = lambda keep: float(torch.softmax(model(ids[:, keep], position_ids=torch.tensor([keep])).logits[0, -1],
                                             -1)[7])
    assert found["info"][0, 0] == pytest.approx(fresh(sorted(fixed + [2, 3, 4, 5])) - fresh(fixed), abs=1e-6)
    assert found["p_full"] == pytest.approx(p(None), abs=1e-9)
    with pytest.raises(ValueError, match="information-map layer 3 is outside"):
        information_map(runner, LAYOUT, gold=7, layers=[3], window=2, input_ids=ids)


def test_the_horizon_is_where_the_map_goes_flat_for_good():
    layers = [0, 5, 10, 15]
    def spread(*values):  # one row per layer, two windows: spread = the difference
        return torch.tensor([[v, 0.0] for v in values])
    assert information_horizon(spread(1.0, 0.5, 0.05, 0.01), layers) == 10
    assert information_horizon(spread(1.0, 0.05, 0.5, 0.01), layers) == 15  # flat, then not: not yet the horizon
    assert information_horizon(spread(1.0, 0.8, 0.6, 0.5), layers) is None
    assert information_horizon(torch.zeros(4, 2), layers) == 0


def test_zeroth_order_sensitivity_matches_a_known_jacobian_and_warns_on_a_linear_map():
    x = torch.tensor([[1.0], [3.0], [-2.0]], dtype=torch.float64)
    square = zeroth_order_sensitivity(lambda v: v ** 2, x, m=8, h=0.01)  # |J u| = 2|x| for unit u in 1-D
    assert torch.allclose(square, torch.tensor([2.0, 6.0, 4.0], dtype=torch.float64), atol=1e-9)
    weight = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="looks linear"):
        flat = zeroth_order_sensitivity(lambda v: v @ weight, torch.randn(6, 4), m=16,
                                        generator=torch.Generator().manual_seed(1))
    assert float(flat.std()) < 1e-4
    model, _ = load_model("tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2")
    embeds = model.get_input_embeddings().weight[:10].detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the text map (pre-norm -> MLP) is not linear: no warning
        varied = zeroth_order_sensitivity(text_map(model), embeds, m=8, generator=torch.Generator().manual_seed(2))
    assert float(varied.std()) > 1e-3 * float(varied.mean())


def test_the_lens_finds_nearest_rows_attractors_and_categories():
    embeddings = torch.eye(6)
    vectors = torch.tensor([[1.0, 0.1, 0, 0, 0, 0], [0.9, 0, 0.2, 0, 0, 0], [0, 0, 0, 1.0, 0.3, 0],
                            [1.0, 0, 0, 0, 0, 0.2], [0, 0.1, 0, 0, 0, 1.0]])
    lens = embedding_lens(vectors, embeddings, k=2)
    assert lens[:, 0].tolist() == [0, 0, 3, 0, 5]
    assert find_attractors(lens, share=0.4) == [0]  # nearest to 3 of 5 inputs
    assert lens_categories(lens, [10, 11, 12, 13, 14], [0]) == {10: "dead", 11: "dead", 12: "alive", 13: "dead",
                                                               14: "alive"}
    with pytest.raises(ValueError, match="share must be in"):
        find_attractors(lens, share=1.5)
