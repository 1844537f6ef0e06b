"""Token-weighted DPO: the pure loss against a naive loop, the one-position shift, TAB-PO's gate as a stop-gradient,
pair weights, and the trainer against TRL's own DPOTrainer (loss to 1e-6, gradient and one step to 1e-4)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tokenfocus.integrations.dpo import WEIGHTS_KEY, TokenFocusDPOTrainer
from tokenfocus.losses.preference import tab_barrier, token_weighted_dpo
from tokenfocus.models import load_model
from tokenfocus.policies.pairs import PairWeighting, diff_weights, pattern_weights

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"


def test_weighted_dpo_equals_a_naive_loop_and_weights_get_no_gradient():
    torch.manual_seed(0)
    logps = (-torch.rand(6, 5, dtype=torch.float64)).requires_grad_(True)
    ref = -torch.rand(6, 5, dtype=torch.float64)
    mask = torch.rand(6, 5) > 0.3
    weights = torch.rand(6, 5, dtype=torch.float64, requires_grad=True)
    terms = token_weighted_dpo(logps, ref, mask, weights, beta=0.3, label_smoothing=0.1)
    logps_, weights_ = logps.detach(), weights.detach()
    for b in range(3):
        x = 0.0
        for sign, row in ((1, b), (-1, b + 3)):
            x += sign * sum(float(weights_[row, t]) * float(logps_[row, t] - ref[row, t]) for t in range(5)
                            if mask[row, t])
        x_t = torch.tensor(0.3 * x, dtype=torch.float64)
        expected = -0.9 * F.logsigmoid(x_t) - 0.1 * F.logsigmoid(-x_t)
        assert float(terms.margin[b]) == pytest.approx(x, abs=1e-12)
        assert float(terms.loss[b]) == pytest.approx(float(expected), abs=1e-12)
    terms.loss.sum().backward()
    assert weights.grad is None and logps.grad is not None
    assert torch.all(logps.grad[~mask] == 0)  # invalid positions get nothing


def test_a_one_hot_weight_moves_the_margin_only_through_its_own_token():
    """Alignment: with omega one-hot at completion token t, the margin depends on log p(y_t) alone."""
    logps = -torch.rand(2, 4, dtype=torch.float64)
    ref = torch.zeros_like(logps)
    mask = torch.ones(2, 4, dtype=torch.bool)
    weights = torch.zeros_like(logps)
    weights[0, 2] = 1.0
    base = token_weighted_dpo(logps, ref, mask, weights).margin
    for t in range(4):
        moved = logps.clone()
        moved[0, t] -= 1.0
        changed = not torch.equal(token_weighted_dpo(moved, ref, mask, weights).margin, base)
        assert changed == (t == 2)


def test_the_barrier_gate_is_a_stop_gradient_mask():
    """dL_barrier/dlogp equals the gradient of the masked mean NLL with the gate held fixed."""
    logps = torch.log(torch.tensor([[0.9, 0.2, 0.4, 0.7], [0.1, 0.6, 0.3, 0.05]], dtype=torch.float64))
    logps.requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    barrier, gate = tab_barrier(logps, mask, tau=0.5)
    assert gate.tolist() == [[False, True, True, False], [True, False, True, True]]
    barrier.sum().backward()
    expected = torch.tensor([[0, -1 / 2, -1 / 2, 0], [-1 / 3, 0, -1 / 3, -1 / 3]], dtype=torch.float64)
    assert torch.allclose(logps.grad, expected)
    assert float(barrier[0]) == pytest.approx(-(float(logps[0, 1]) + float(logps[0, 2])) / 2)
    none, gate = tab_barrier(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool), tau=0.5)  # p = 1: nothing gated
    assert float(none[0]) == 0 and not gate.any()


def test_diff_weights_mark_what_the_pair_does_not_share():
    chosen, rejected = [5, 6, 7, 8, 9], [5, 6, 3, 8, 9, 4]
    w_chosen, w_rejected = diff_weights(chosen, rejected, hi=1.0, lo=0.2)
    assert w_chosen == [0.2, 0.2, 1.0, 0.2, 0.2]
    assert w_rejected == [0.2, 0.2, 1.0, 0.2, 0.2, 1.0]
    assert pattern_weights(['{"', 'answer', '":', ' 8', '5', '}'], hi=1.0, lo=0.2) == [0.2, 0.2, 0.2, 1.0, 1.0, 0.2]


PAIRS = [{"prompt": f"Q{i}+{i}=", "chosen": f" {2 * i} ok", "rejected": f" {2 * i + 1} ok"} for i in range(8)]


def _trainer(tmp_path, cls, model, ref, **extra):
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, learning_rate=1e-3,
                     report_to="none", save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True,
                     logging_steps=1, max_length=64, seed=0, beta=0.1, **extra.pop("args", {}))
    model.train()  # as Trainer.train() leaves it (metrics are logged under the model's mode)
    return cls(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(PAIRS),
               processing_class=extra.pop("tokenizer"), **extra)


def _models():
    model, tokenizer = load_model(TINY)
    return model, tokenizer


def test_uniform_token_path_reproduces_trls_dpo_loss_gradient_and_step(tmp_path):
    """diff weights with hi = lo = 1 take the token-level path with every weight 1: TRL's sigmoid DPO exactly."""
    model, tokenizer = _models()
    trl = _trainer(tmp_path / "trl", DPOTrainer, copy.deepcopy(model), copy.deepcopy(model), tokenizer=tokenizer)
    ours = _trainer(tmp_path / "ours", TokenFocusDPOTrainer, copy.deepcopy(model), copy.deepcopy(model),
                    tokenizer=tokenizer, weighting=PairWeighting(mode="diff", hi=1.0, lo=1.0))
    assert ours.tf_token_level
    batch = next(iter(ours.get_train_dataloader()))
    assert torch.all(batch[WEIGHTS_KEY][batch["completion_mask"].bool()] == 1)
    assert torch.all(batch[WEIGHTS_KEY][~batch["completion_mask"].bool()] == 0)
    plain = {k: v for k, v in batch.items() if k != WEIGHTS_KEY}
    loss_trl = trl.compute_loss(trl.model, dict(plain))
    loss_ours = ours.compute_loss(ours.model, dict(batch))
    assert float(loss_ours) == pytest.approx(float(loss_trl), abs=1e-6)
    loss_trl.backward()
    loss_ours.backward()
    for (name, a), (_, b) in zip(trl.model.named_parameters(), ours.model.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name
    assert ours._metrics["train"]["rewards/margins"][-1] == pytest.approx(trl._metrics["train"]["rewards/margins"][-1],
                                                                          abs=1e-6)
    for trainer in (trl, ours):
        trainer.model.zero_grad()
        trainer.train()
    log_trl, log_ours = trl.state.log_history[0], ours.state.log_history[0]
    assert log_ours["loss"] == pytest.approx(log_trl["loss"], abs=1e-6)
    assert log_ours["grad_norm"] == pytest.approx(log_trl["grad_norm"], rel=1e-4)


def test_plain_dpo_is_trls_path_and_weights_never_reach_the_model(tmp_path):
    model, tokenizer = _models()
    ours = _trainer(tmp_path, TokenFocusDPOTrainer, copy.deepcopy(model), copy.deepcopy(model), tokenizer=tokenizer)
    assert not ours.tf_token_level
    batch = next(iter(ours.get_train_dataloader()))
    assert WEIGHTS_KEY in batch
    assert torch.isfinite(ours.compute_loss(ours.model, dict(batch)))  # TRL would pass token_weights to the model


def test_diff_weights_land_on_the_differing_completion_tokens(tmp_path):
    """The collator places each pair's weights at its completion positions: the one differing digit gets hi."""
    model, tokenizer = _models()
    ours = _trainer(tmp_path, TokenFocusDPOTrainer, copy.deepcopy(model), copy.deepcopy(model), tokenizer=tokenizer,
                    weighting=PairWeighting(mode="diff", hi=1.0, lo=0.25))
    batch = next(iter(ours.get_train_dataloader()))
    half = batch["input_ids"].size(0) // 2
    for row in range(2 * half):
        ids = batch["input_ids"][row]
        other = batch["input_ids"][(row + half) % (2 * half)]
        high = (batch[WEIGHTS_KEY][row] == 1.0).nonzero().flatten().tolist()
        assert high, row
        # the high-weight tokens are completion tokens where the pair differs (same prompt: same positions)
        assert all(batch["completion_mask"][row, t] == 1 and ids[t] != other[t] for t in high)
    loss = ours.compute_loss(ours.model, dict(batch))
    loss.backward()
    assert torch.isfinite(loss)


def test_barrier_and_conflicting_trl_settings(tmp_path):
    model, tokenizer = _models()
    ours = _trainer(tmp_path / "a", TokenFocusDPOTrainer, copy.deepcopy(model), copy.deepcopy(model),
                    tokenizer=tokenizer, weighting=PairWeighting(barrier=1.0, tau=0.9))
    batch = next(iter(ours.get_train_dataloader()))
    with torch.no_grad():
        with_barrier = float(ours.compute_loss(ours.model, dict(batch)))
        ours.tf_weighting = PairWeighting(mode="diff", hi=1.0, lo=1.0)
        without = float(ours.compute_loss(ours.model, dict(batch)))
    # a random tiny model gives every token p << 0.9: every chosen token is gated, the barrier is their mean NLL
    assert ours._metrics["train"]["policy/barrier_gated_frac"][-1] == 1.0
    assert with_barrier - without == pytest.approx(ours._metrics["train"]["loss/barrier"][-1], rel=1e-5)
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        _trainer(tmp_path / "b", TokenFocusDPOTrainer, copy.deepcopy(model), copy.deepcopy(model), tokenizer=tokenizer,
                 weighting=PairWeighting(mode="diff"), args={"precompute_ref_log_probs": True})
    with pytest.raises(ValueError, match="mode must be one of"):
        PairWeighting(mode="digits").problems() and _trainer(tmp_path / "c", TokenFocusDPOTrainer, model, None,
                                                             tokenizer=tokenizer, weighting=PairWeighting(mode="x"))
