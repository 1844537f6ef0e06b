"""Gradient geometry on a tiny model (diagnostics/gradient_geometry.py): gradient additivity,
cos(g_full, g_full) = 1, projections vs naive maths, skipped groups, per-group forwards, the count sketch."""

from __future__ import annotations

import pytest
import torch

from helpers import padded_batch, tiny
from tokenfocus.diagnostics import CountSketch, geometry, group_subset_gradients, informative_groups
from tokenfocus.diagnostics.gradient_geometry import cosine, flatten, trainable_parameters


def per_token_loss(model, ids, mask, advantages):
    """A REINFORCE-style per-token loss -A * log p(token) on every position (enough to exercise gradients)."""
    logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -advantages[:, None] * logp, mask[:, 1:]


@pytest.fixture
def setup():
    model, _ = tiny()
    model.train()
    ids, mask = padded_batch([10, 8, 10, 6, 9, 10], 10, side="right")
    advantages = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2])
    loss, valid = per_token_loss(model, ids, mask, advantages)
    g = torch.Generator().manual_seed(0)
    score = torch.rand(valid.shape, generator=g)
    rank = score.masked_fill(~valid, 2.0).flatten().argsort().argsort().view(valid.shape)
    n = int(valid.sum())
    anchors = valid & (rank < n // 5)
    explorers = valid & (rank >= n - n // 5) & (rank < n)
    middle = valid & ~anchors & ~explorers
    subsets = {"full": valid.float(), "anchors": anchors.float(), "middle": middle.float(),
               "explorers": explorers.float()}
    groups = torch.arange(6) // 2
    params = [p for _, p in trainable_parameters(model)]
    return model, loss, valid, subsets, groups, params


def test_disjoint_subsets_add_up_to_the_full_gradient(setup):
    model, loss, valid, subsets, groups, params = setup
    z = float(valid.sum())
    # Naive reference first (group_subset_gradients frees the graph after its last backward).
    naive = torch.autograd.grad((loss * subsets["full"]).sum() / z, params, retain_graph=True, allow_unused=True)
    naive = flatten([torch.zeros_like(p) if g is None else g for g, p in zip(naive, params)])
    grads = group_subset_gradients(loss, z, subsets, groups, params)
    total = {name: sum(per_group.values()) for name, per_group in grads.items()}
    assert torch.allclose(total["anchors"] + total["middle"] + total["explorers"], total["full"], rtol=1e-4, atol=1e-9)
    assert torch.allclose(total["full"], naive, rtol=1e-4, atol=1e-8)
    counts = {name: int(mask.sum()) for name, mask in subsets.items()}
    results = {r.name: r for r in geometry(grads, counts, bootstrap=4)}
    assert results["full"].cos_full == pytest.approx(1.0, abs=1e-9)
    assert results["full"].projection_share == pytest.approx(1.0, abs=1e-9)
    shares = sum(results[n].projection_share for n in ("anchors", "middle", "explorers"))
    assert shares == pytest.approx(1.0, abs=1e-6)
    for name in ("anchors", "explorers"):
        expected = float(total[name] @ total["full"]) / float(total["full"] @ total["full"])
        assert results[name].projection_share == pytest.approx(expected, rel=1e-9)
        assert results[name].cos_full == pytest.approx(cosine(total[name], total["full"]), rel=1e-9)
        assert results[name].norm == pytest.approx(float(total[name].norm()), rel=1e-9)
        assert 0 <= results[name].split_half_volatility <= 2
    assert results["full"].bootstrap_cos_mean == pytest.approx(1.0, abs=1e-9)


def test_zero_advantage_groups_are_skipped_without_changing_the_full_gradient():
    """A group whose advantages are all zero has an exactly zero gradient, so diagnosing only the others
    leaves g_full unchanged (and saves one backward per subset per skipped group)."""
    model, _ = tiny()
    model.train()
    ids, mask = padded_batch([10, 8, 10, 6, 9, 10], 10, side="right")
    advantages = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.7, -0.7])
    groups = torch.arange(6) // 2
    assert informative_groups(advantages, groups) == [0, 2]
    assert informative_groups(torch.zeros(6), groups) == []
    loss, valid = per_token_loss(model, ids, mask, advantages)
    params = [p for _, p in trainable_parameters(model)]
    z = float(valid.sum())
    every = group_subset_gradients(loss, z, {"full": valid.float()}, groups, params)
    loss, valid = per_token_loss(model, ids, mask, advantages)
    kept = group_subset_gradients(loss, z, {"full": valid.float()}, groups, params, only=[0, 2])
    assert set(kept["full"]) == {0, 2} and float(every["full"][1].abs().max()) == 0.0
    assert torch.allclose(sum(kept["full"].values()), sum(every["full"].values()), rtol=1e-6, atol=1e-12)


def test_per_group_forward_gives_the_same_gradients_as_one_shared_forward():
    """The trainer's diagnosis forwards one prompt group at a time (each backward then runs through that
    group's rows only); a row's loss depends on its own sequence alone, so the gradients are unchanged."""
    model, _ = tiny()
    model.train()
    ids, mask = padded_batch([10, 8, 10, 6, 9, 10], 10, side="right")
    advantages = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2])
    groups = torch.arange(6) // 2
    params = [p for _, p in trainable_parameters(model)]
    loss, valid = per_token_loss(model, ids, mask, advantages)
    z = float(valid.sum())
    anchors = valid & (torch.arange(valid.shape[1]) < 3)
    shared = group_subset_gradients(loss, z, {"full": valid.float(), "anchors": anchors.float()}, groups, params)
    for group in range(3):
        rows = (groups == group).nonzero().squeeze(-1)
        loss_g, valid_g = per_token_loss(model, ids[rows], mask[rows], advantages[rows])
        alone = group_subset_gradients(loss_g, z, {"full": valid_g.float(), "anchors": anchors[rows].float()},
                                       groups[rows], params, only=[group])
        for name in ("full", "anchors"):
            assert torch.allclose(alone[name][group], shared[name][group], rtol=1e-4, atol=1e-8), (group, name)


def test_count_sketch_is_linear_and_preserves_inner_products_in_expectation():
    g = torch.Generator().manual_seed(1)
    a = [torch.randn(300, 20, generator=g), torch.randn(500, generator=g)]
    b = [x + 0.5 * torch.randn(x.shape, generator=g) for x in a]
    sketch = CountSketch(4096, seed=3)
    summed = sketch([x + y for x, y in zip(a, b)])
    assert torch.allclose(summed, sketch(a) + sketch(b), rtol=1e-6, atol=1e-6)
    exact = cosine(flatten(a), flatten(b))
    estimates = [cosine(CountSketch(4096, seed=s)(a), CountSketch(4096, seed=s)(b)) for s in range(8)]
    assert abs(sum(estimates) / 8 - exact) < 0.02
