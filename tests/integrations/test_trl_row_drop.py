"""Rows the policy cannot weight leave the training forward (integrations/trl.py ``_rows_to_forward``): D3S's
rollout level (fused pass) and all-zero rows of precomputed weights (separate pass). The loss and every gradient
equal those of the forward over all rows, and the forward really sees fewer rows. A tiny random llama."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from datasets import Dataset

from helpers import tiny, tiny_grpo_args, trl_loss_inputs
from tokenfocus.config import method_preset
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer

B, P, C = 8, 5, 7


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def make(tmp_path, method="d3s", loss=None, **extra):
    torch.manual_seed(0)
    model, tok = tiny()
    model.train()
    args = tiny_grpo_args(tmp_path, per_device_train_batch_size=B, max_completion_length=C, max_steps=3)
    config = method_preset(method)
    trainer = TokenFocusGRPOTrainer(
        model=model, processing_class=tok, reward_funcs=[length_reward], args=args,
        train_dataset=Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(16)]),
        signals=config.signals, policy=config.policy, loss=loss or config.loss, **extra)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def loss_and_grads(trainer, inputs, drop: bool):
    """(loss, {name: grad}, rows seen by the model's forward) with row dropping on or off."""
    trainer.tf_drop_rows = drop
    trainer.model.zero_grad(set_to_none=True)
    seen = []
    hook = trainer.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
    finally:
        hook.remove()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, seen


def assert_same(dropped, whole):
    assert abs(dropped[0].item() - whole[0].item()) <= 1e-6, (dropped[0].item(), whole[0].item())
    assert dropped[1].keys() == whole[1].keys() and whole[1]
    for name, grad in whole[1].items():
        torch.testing.assert_close(dropped[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d3s_skips_the_rows_outside_its_rollout_subset_with_the_same_loss_and_gradient(tmp_path, seed):
    trainer = make(tmp_path)
    assert trainer.tf_pass == "fused"
    inputs = trl_loss_inputs(seed, B, P, C, vocab=40, group_size=4)
    inputs["completion_mask"][:, 0] = 1  # every rollout has a token
    whole = loss_and_grads(trainer, inputs, drop=False)
    dropped = loss_and_grads(trainer, inputs, drop=True)
    assert whole[2] == [B] and dropped[2] == [B // 2]  # progress 0: N = half of the batch
    assert whole[0].item() != 0.0
    assert_same(dropped, whole)
    logged = trainer._metrics["train"]
    assert logged["policy/rows_forwarded"][-1] == 0.5
    assert logged["policy/sample_fraction"][-1] == logged["policy/sample_fraction"][-2] == 0.5


def test_separate_pass_skips_rows_whose_precomputed_weights_are_all_zero(tmp_path):
    trainer = make(tmp_path, "dapo", signal_pass="separate")
    assert trainer.tf_pass == "separate"
    inputs = trl_loss_inputs(0, B, P, C, vocab=40, group_size=4)
    inputs["completion_mask"][:, 0] = 1
    g = torch.Generator().manual_seed(5)
    weights = torch.rand(B, C, generator=g) * inputs["completion_mask"]
    weights[[1, 4, 6]] = 0.0
    inputs["tf_weights"], inputs["tf_num_selected"] = weights, weights.sum()
    whole = loss_and_grads(trainer, inputs, drop=False)
    dropped = loss_and_grads(trainer, inputs, drop=True)
    assert whole[2] == [B] and dropped[2] == [B - 3]
    assert_same(dropped, whole)


@pytest.mark.parametrize("change", [{"beta": 0.1}, {"entropy_coef": 0.01},
                                    {"normalizer": "all", "token_count": "local"}])
def test_no_row_leaves_when_a_loss_term_reads_every_row(tmp_path, change):
    """A KL or entropy term over all valid tokens, or a local count of all tokens, sees the zero-weight rows."""
    config = method_preset("d3s")
    trainer = make(tmp_path, loss=replace(config.loss, **change))
    inputs = trl_loss_inputs(0, B, P, C, vocab=40, group_size=4)
    assert trainer._rows_to_forward(inputs, trainer._loss_mask(inputs)) is None
    trainer.tf_loss = config.loss
    assert trainer._rows_to_forward(inputs, trainer._loss_mask(inputs)) is not None
