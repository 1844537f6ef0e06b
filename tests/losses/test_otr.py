"""OTR's loss: its Monte Carlo gradient matches E[r * grad log pi] on a toy softmax, K = 1 with the gold token is the
SFT loss exactly (any sampling temperature), no gradient flows through the sampling, and chunking changes nothing."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.losses.otr import OTRConfig, otr_loss_sum


def test_the_gradient_matches_the_analytic_expectation():
    torch.manual_seed(0)
    z = torch.tensor([[1.0, 0.2, -0.5, 0.7, 0.0]], dtype=torch.float64)
    eye = torch.eye(5, dtype=torch.float64)
    y = torch.tensor([3])
    for beta_neg, baseline in ((0.0, "none"), (0.5, "none"), (1.0, "mean")):
        config = OTRConfig(k=200_000, beta_neg=beta_neg, baseline=baseline, chunk=1)
        h = z.clone().requires_grad_(True)  # the LM head is the identity: logits = h
        loss, _ = otr_loss_sum(h, eye, None, y, config, torch.Generator().manual_seed(1))
        loss.backward()
        pi = torch.softmax(z[0], -1)
        r = torch.full((5,), -beta_neg, dtype=torch.float64)
        r[3] = 1.0
        if baseline == "mean":
            r = r - (pi * r).sum()  # the sample mean converges to E[r]
        expected = -sum(pi[a] * r[a] * (eye[a] - pi) for a in range(5))
        assert torch.allclose(h.grad[0], expected, atol=4e-3), (beta_neg, baseline, h.grad[0], expected)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_one_sample_forced_to_the_gold_token_is_the_sft_loss(temperature):
    torch.manual_seed(0)
    hidden = torch.randn(7, 6, requires_grad=True)
    weight = torch.randn(11, 6)
    targets = torch.randint(0, 11, (7,))
    config = OTRConfig(k=1, always_include_gt=True, beta_neg=0.3, temperature=temperature, chunk=3)
    loss, stats = otr_loss_sum(hidden, weight, None, targets, config)
    sft = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    assert float(loss) == pytest.approx(float(sft), rel=1e-6)
    (g_otr,) = torch.autograd.grad(loss, hidden)
    (g_sft,) = torch.autograd.grad(sft, hidden)
    assert torch.allclose(g_otr, g_sft, atol=1e-6)
    assert stats["otr/gt_sample_frac"] == 1.0


def test_no_gradient_flows_through_the_sampling_and_chunks_agree():
    """The gradient is that of sum_k r_k log pi(a_k) with the samples held fixed: recomputing it by hand from the
    same samples (same generator) gives the same value, for one chunk or many."""
    torch.manual_seed(0)
    hidden = torch.randn(9, 4, dtype=torch.float64)
    weight = torch.randn(6, 4, dtype=torch.float64)
    targets = torch.randint(0, 6, (9,))
    config = OTRConfig(k=5, beta_neg=0.2, chunk=9)
    h = hidden.clone().requires_grad_(True)
    loss, _ = otr_loss_sum(h, weight, None, targets, config, torch.Generator().manual_seed(3))
    loss.backward()
    generator = torch.Generator().manual_seed(3)
    samples = torch.multinomial(torch.softmax(hidden @ weight.t(), -1), 5, replacement=True, generator=generator)
    reward = torch.where(samples == targets[:, None], 1.0, -0.2).double()
    h2 = hidden.clone().requires_grad_(True)
    by_hand = -(reward * torch.log_softmax(h2 @ weight.t(), -1).gather(-1, samples)).mean(-1).sum()
    by_hand.backward()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-12)
    assert torch.allclose(h.grad, h2.grad)
    forced = OTRConfig(k=1, always_include_gt=True, chunk=2)
    one, _ = otr_loss_sum(hidden, weight, None, targets, OTRConfig(k=1, always_include_gt=True, chunk=100))
    many, _ = otr_loss_sum(hidden, weight, None, targets, forced)
    assert float(one) == pytest.approx(float(many), rel=1e-12)


def test_bad_options_are_named():
    problems = OTRConfig(k=0, temperature=0, beta_neg=-1, baseline="median", chunk=0).problems()
    assert len(problems) == 5 and any("baseline" in p for p in problems)


def _sft(tmp_path, trainer_class, **extra):
    from helpers import tiny_sft_trainer

    return tiny_sft_trainer(tmp_path, trainer_class, max_steps=2, **extra)


def test_the_trainer_with_one_forced_gold_sample_is_trls_sft_step(tmp_path):
    from trl import SFTTrainer

    from tokenfocus.integrations.sft import TokenFocusSFTTrainer

    plain = _sft(tmp_path / "a", SFTTrainer)
    forced = _sft(tmp_path / "b", TokenFocusSFTTrainer, otr=OTRConfig(k=1, always_include_gt=True, chunk=5))
    batch = next(iter(plain.get_train_dataloader()))
    reference = plain.compute_loss(plain.model, dict(batch))
    got = forced.compute_loss(forced.model, dict(batch))
    assert float(got) == pytest.approx(float(reference), abs=1e-6)
    reference.backward()
    got.backward()
    for (name, a), (_, b) in zip(plain.model.named_parameters(), forced.model.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name
    for trainer in (plain, forced):
        trainer.model.zero_grad()
        trainer.train()
    for a, b in zip(plain.state.log_history[:2], forced.state.log_history[:2]):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6) and b["grad_norm"] == pytest.approx(a["grad_norm"],
                                                                                                   rel=1e-4)


def test_otr_trains_and_its_sampling_is_reproducible(tmp_path):
    from tokenfocus.integrations.sft import TokenFocusSFTTrainer

    runs = []
    for name in ("a", "b"):
        trainer = _sft(tmp_path / name, TokenFocusSFTTrainer, otr=OTRConfig(k=4, beta_neg=0.1))
        trainer.train()
        runs.append([(h["loss"], h["otr/gt_sample_frac"]) for h in trainer.state.log_history if "loss" in h])
    assert runs[0] == runs[1] and len(runs[0]) == 2  # same seed, same draws
    assert all(0 <= frac <= 1 for _, frac in runs[0])
    with pytest.raises(ValueError, match="cannot be combined"):
        _sft(tmp_path / "c", TokenFocusSFTTrainer, otr=OTRConfig(), sink_decorrelation=1.0)
