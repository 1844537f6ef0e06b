"""Logit-space per-token gradient norm (diagnostics/token_proxy.py) against autograd on each token, and the
alignment of the completion logits on a tiny model (the logits at q(c) = P_pad + c - 1 predict token c).

Derivation: at ratio 1 the surrogate l = -A * exp(log p_y - log p_y.detach()) has dl/dz = -A * (e_y - softmax(z)),
so |dl/dz| = |A| * |e_y - p|, and |e_y - p|^2 = 1 - 2 p_y + sum_v p_v^2.
"""

from __future__ import annotations

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.diagnostics import completion_logit_gradient_norm, completion_logits, logit_gradient_norm


def autograd_norm(logits, labels, temperature=1.0, advantage=1.0):
    """One token at a time: the norm of the surrogate's gradient with respect to the scaled logits (float64)."""
    out = torch.empty(labels.shape, dtype=torch.float64)
    flat, targets = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    for i in range(flat.shape[0]):
        z = (flat[i].double() / temperature).requires_grad_()
        logp = torch.log_softmax(z, -1)[targets[i]]
        loss = -advantage * torch.exp(logp - logp.detach())
        out.view(-1)[i] = torch.autograd.grad(loss, z)[0].norm()
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logit_gradient_norm_equals_autograd_per_token(temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 40, generator=g) * 3
    labels = torch.randint(0, 40, (3, 5), generator=g)
    expected = autograd_norm(logits, labels, temperature)
    got = logit_gradient_norm(logits, labels, temperature, chunk_size=4)  # chunked across rows
    assert got.shape == labels.shape and got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-7)
    p = torch.softmax(logits.double() / temperature, -1)
    closed = (1 - 2 * p.gather(-1, labels[..., None]).squeeze(-1) + p.square().sum(-1)).sqrt()
    assert torch.allclose(got.double(), closed, rtol=1e-5, atol=1e-7)
    assert torch.equal(got, logit_gradient_norm(logits, labels, temperature, chunk_size=1000))  # = unchunked


def test_a_confident_token_keeps_its_small_norm():
    """p_y = 1 - 1e-9: 1 - 2 p_y + sum p^2 cancels to float32 noise; (1 - p_y)^2 + sum_{v!=y} p_v^2 does not."""
    logits = torch.zeros(1, 50)
    logits[0, 3] = 25.0
    got = float(logit_gradient_norm(logits, torch.tensor([3])))
    expected = float(autograd_norm(logits, torch.tensor([3])))
    assert expected < 1e-8 and got == pytest.approx(expected, rel=1e-4)


def test_completion_logits_and_norms_are_aligned_on_a_left_padded_rollout():
    """Column c of the completion logits is the full forward's row P_pad + c - 1 (position ids from the mask), and
    the per-token norm there equals the naive one; padded prompts give the same values at real tokens."""
    model, _ = tiny()
    batch = rollout_batch([5, 3, 4], [4, 2, 3], prompt_width=6, completion_width=4)
    ids, attention = batch.input_ids, batch.attention_mask
    width = 4
    with torch.no_grad():
        position_ids = (attention.long().cumsum(-1) - 1).clamp_min(0)
        full = model(input_ids=ids, attention_mask=attention.long(), position_ids=position_ids).logits
        got = completion_logits(model, ids, attention, width)
    assert got.shape == (3, width, full.shape[-1])
    assert torch.allclose(got, full[:, 6 - 1:-1], atol=1e-5)
    norms = completion_logit_gradient_norm(model, ids, attention, width, temperature=0.8, rows_per_forward=2)
    naive = autograd_norm(full[:, 5:-1], ids[:, 6:], temperature=0.8)
    valid = batch.response_mask[:, 6:]
    assert torch.allclose(norms[valid].double(), naive[valid], rtol=1e-4, atol=1e-6)
    # Row 1 alone, without the other rows' extra padding: same values at its real tokens.
    p = 3
    alone = completion_logit_gradient_norm(model, ids[1:2, 6 - p:], attention[1:2, 6 - p:], width, temperature=0.8)
    assert torch.allclose(alone[valid[1:2]], norms[1:2][valid[1:2]], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="width"):
        completion_logits(model, ids, attention, ids.shape[1])
