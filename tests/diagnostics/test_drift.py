"""Drift from the starting model (diagnostics/drift.py) on tiny random models against naive references: the
parameter distance over unique tensors (the tied embedding once) and the per-token KL over the full vocabulary."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.diagnostics import parameter_distance, token_kl


def perturbed(model, scale=0.05, seed=1):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


@torch.no_grad()
def test_parameter_distance_counts_a_tied_embedding_once():
    model, _ = tiny()
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # tied
    start = copy.deepcopy(model)
    assert parameter_distance(model, start) == {"l2": 0.0, "relative": 0.0}
    moved = perturbed(model)
    unique = {id(p): (p, q) for p, q in zip(moved.parameters(), start.parameters())}  # each tensor once
    diff = math.sqrt(sum(float((p.double() - q.double()).square().sum()) for p, q in unique.values()))
    norm = math.sqrt(sum(float(q.double().square().sum()) for _, q in unique.values()))
    state = moved.state_dict()  # lists the tied tensor twice (embed_tokens and lm_head): the wrong reference
    doubled = math.sqrt(sum(float((state[k].double() - v.double()).square().sum())
                            for k, v in start.state_dict().items()))
    got = parameter_distance(moved, start)
    assert got["l2"] == pytest.approx(diff, rel=1e-6) and got["relative"] == pytest.approx(diff / norm, rel=1e-6)
    assert doubled > diff * 1.01
    embedding = moved.get_input_embeddings().weight
    embedding.add_(1.0)  # moves the LM head too (one tensor)
    delta = float((embedding.double() - start.get_input_embeddings().weight.double()).square().sum())
    others = sum(float((p.double() - q.double()).square().sum()) for p, q in unique.values() if p is not embedding)
    assert parameter_distance(moved, start)["l2"] == pytest.approx(math.sqrt(delta + others), rel=1e-6)


def test_parameter_distance_refuses_different_models():
    model, _ = tiny()
    other, _ = tiny(layers=3)
    with pytest.raises(ValueError, match="parameters differ"):
        parameter_distance(model, other)


def naive_kl(model, start, batch, temperature=1.0):
    """Full forwards, float64 log-softmax over the whole vocabulary, KL at the predicting row t - 1 of token t."""
    position_ids = (batch.attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask.long(),
                  "position_ids": position_ids}
        log_p = torch.log_softmax(model(**kwargs).logits.double() / temperature, -1)
        log_q = torch.log_softmax(start(**kwargs).logits.double() / temperature, -1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)  # (B, T): row t predicts token t + 1
    marked = batch.response_mask[:, 1:]
    return float(per_position[:, :-1][marked].mean())


def test_token_kl_is_zero_to_itself_and_matches_the_naive_value():
    model, _ = tiny()
    batch = rollout_batch([5, 3, 4, 6, 2], [4, 2, 3, 1, 4], prompt_width=6, completion_width=4)
    args = (batch.input_ids, batch.attention_mask, batch.response_mask)
    assert token_kl(model, copy.deepcopy(model), *args) == 0.0
    start = perturbed(model)
    expected = naive_kl(model, start, batch)
    assert expected > 1e-4
    got = token_kl(model, start, *args, rows_per_forward=2, chunk_size=3)
    assert got == pytest.approx(expected, rel=1e-4)
    # The same tokens in TRL's layout: a (B, C) mask of the last C columns.
    assert token_kl(model, start, batch.input_ids, batch.attention_mask, batch.response_mask[:, 6:]) == pytest.approx(
        got, rel=1e-6)
    assert token_kl(model, start, *args, temperature=0.5) == pytest.approx(naive_kl(model, start, batch, 0.5), rel=1e-4)
    nothing = torch.zeros_like(batch.response_mask)
    assert math.isnan(token_kl(model, start, batch.input_ids, batch.attention_mask, nothing))
