"""diagnostics.diagnose: one diagnosis from tensors and a log-prob callable, on a tiny model.

Derivation: L_S = sum_{t in S} l_t / Z with one Z for every subset, so g_anchors + g_middle + g_explorers =
g_full; the projection shares <g_S, g_full> / |g_full|^2 of the three therefore sum to 1, and the middle
gradient (computed by subtraction) equals a direct backward over the middle tokens.
"""

from __future__ import annotations

import pytest
import torch

from helpers import tiny
from tokenfocus.diagnostics import DiagnosticsConfig, diagnose, trainable_parameters
from tokenfocus.losses import clipped_surrogate
from tokenfocus.policies import anchor_explorer_subsets
from tokenfocus.types import PolicyInputs

B, C, P, G = 8, 7, 5, 4


@pytest.fixture
def batch():
    model, _ = tiny()
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (B, P + C), generator=g)
    lengths = torch.tensor([7, 5, 6, 7, 3, 7, 6, 4])
    mask = torch.arange(C)[None] < lengths[:, None]
    attention = torch.cat([torch.ones(B, P, dtype=torch.bool), mask], 1)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0])  # group 1 has no signal
    signals = {name: torch.rand(B, C, generator=g) * mask for name in
               ("attention_entropy", "predictive_entropy", "attention_mass")}
    inputs = PolicyInputs(mask, signals, torch.arange(B) // G, advantages, step=3)

    def logprobs_fn(rows):
        logits = model(input_ids=ids[rows], attention_mask=attention[rows].long()).logits[:, P - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, ids[rows, P:, None]).squeeze(-1)

    params = [p for _, p in trainable_parameters(model)]
    return model, inputs, advantages, mask, logprobs_fn, params


def test_projection_shares_of_a_partition_sum_to_one_and_only_informative_groups_run(batch):
    model, inputs, advantages, mask, logprobs_fn, params = batch
    config = DiagnosticsConfig(project_dim=None, bootstrap=3, ratio=0.25)
    out = diagnose(config, inputs, advantages, mask, logprobs_fn, params, correct=torch.arange(B) % 2 == 0)
    shares = sum(out[f"diag/grad/{s}/projection_share"] for s in ("anchors", "middle", "explorers"))
    assert shares == pytest.approx(1.0, abs=1e-6)
    assert out["diag/grad/full/cos_full"] == pytest.approx(1.0, abs=1e-9)
    assert out["diag/informative_groups"] == 1.0  # group 1's advantages are all zero
    informative = torch.arange(B) < G
    subsets = anchor_explorer_subsets(inputs, "attention_entropy", 0.25)
    assert out["diag/grad/anchors/n_tokens"] == float((subsets["anchors"] & informative[:, None]).sum())
    assert "diag/attention_entropy/correct" in out and "diag/prompt_mass/anchors" in out


def test_middle_by_subtraction_equals_a_direct_backward(batch):
    model, inputs, advantages, mask, logprobs_fn, params = batch
    config = DiagnosticsConfig(project_dim=None, bootstrap=0, ratio=0.25)
    out = diagnose(config, inputs, advantages, mask, logprobs_fn, params)
    middle = anchor_explorer_subsets(inputs, "attention_entropy", 0.25)["middle"]
    rows = torch.arange(G)  # the informative group
    logps = logprobs_fn(rows)
    terms = clipped_surrogate(logps, logps.detach(), advantages[rows], mask[rows]).per_token
    loss = (terms * middle[rows].float()).sum() / mask.sum()
    direct = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, allow_unused=True)
                        if g is not None]).double().norm()
    assert out["diag/grad/middle/norm"] == pytest.approx(float(direct), rel=1e-5)
