"""Our aggregated losses equal TRL 1.16 GRPOTrainer's, and our 80/20 preset selects TRL's tokens.

TRL's own ``_compute_loss`` and ``get_high_entropy_mask`` are called on a tiny random llama.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from helpers import tiny, trl_loss_inputs
from tokenfocus.config import method_preset
from tokenfocus.losses import compute_loss, loss_preset
from tokenfocus.policies import apply_policy
from tokenfocus.types import PolicyInputs

B, P, C = 8, 5, 7


def make_trainer(tmp_path, loss_type: str, **overrides):
    model, tok = tiny()
    args = GRPOConfig(
        output_dir=str(tmp_path), loss_type=loss_type, per_device_train_batch_size=B, num_generations=4,
        max_completion_length=C, use_cpu=True, bf16=False, report_to=[], beta=0.0, epsilon=0.2,
        epsilon_high=0.28 if loss_type == "dapo" else 0.2, gradient_checkpointing=False, **overrides,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_list([{"prompt": "x"}] * B), processing_class=tok,
    )
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    return trainer, model


def random_inputs(seed: int):
    return trl_loss_inputs(seed, B, P, C)


def our_logprobs(trainer, model, inputs):
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logps, entropies, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, C,
                                                                     compute_entropy=True)
    return logps, entropies


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_uniform_weights_equal_trl_loss(tmp_path, loss_type):
    trainer, model = make_trainer(tmp_path, loss_type)
    loss = loss_preset(loss_type)
    for seed in range(3):
        inputs = random_inputs(seed)
        g = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            logps, _ = our_logprobs(trainer, model, inputs)
        inputs["old_per_token_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=g)  # exercise clipping
        trl_loss = trainer._compute_loss(model, inputs)
        logps, _ = our_logprobs(trainer, model, inputs)
        ours, _ = compute_loss(
            loss, logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"].bool(),
            max_length=C, global_count=inputs["num_items_in_batch"].float() if loss_type == "dapo" else None,
        )
        assert abs(ours.item() - trl_loss.item()) <= 1e-6, (loss_type, seed, ours.item(), trl_loss.item())


def test_8020_preset_selects_trl_top_entropy_quantile_tokens(tmp_path):
    trainer, model = make_trainer(tmp_path, "dapo", top_entropy_quantile=0.2)
    policy = method_preset("8020").policy
    for seed in range(5):
        inputs = random_inputs(seed)
        with torch.no_grad():
            _, entropies = our_logprobs(trainer, model, inputs)
        mask = inputs["completion_mask"].bool()
        trl_mask = trainer.get_high_entropy_mask(entropies, mask, 1 - trainer.top_entropy_quantile)
        ours = apply_policy(policy, PolicyInputs(mask, {"predictive_entropy": entropies * mask}))
        assert torch.equal(ours.weights > 0, trl_mask), seed


@pytest.mark.parametrize("loss_type, beta, level", [
    ("dapo", 0.0, "token"), ("dapo", 0.0, "sequence"), ("dapo", 0.04, "token"), ("grpo", 0.0, "token"),
    ("bnpo", 0.0, "sequence"), ("dr_grpo", 0.0, "token"),
])
def test_vllm_importance_sampling_ratio_equals_trl_loss(tmp_path, loss_type, beta, level):
    """TRL multiplies the policy term (not the KL term) by ``inputs["importance_sampling_ratio"]`` when
    use_vllm and vllm_importance_sampling_correction: (B, C) in the token_* modes, (B, 1) in the sequence_* modes,
    0 where sequence_mask / token_mask dropped a sequence or token. ``compute_loss(importance_ratio=...)`` is equal."""
    trainer, model = make_trainer(tmp_path, loss_type)
    trainer.use_vllm = trainer.vllm_importance_sampling_correction = True  # what _compute_loss reads; no vLLM here
    trainer.beta = beta  # set after construction: TRL then needs only inputs["ref_per_token_logps"], no ref model
    loss = loss_preset(loss_type, beta=beta)
    for seed in range(3):
        inputs = random_inputs(seed)
        g = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            logps, _ = our_logprobs(trainer, model, inputs)
        inputs["old_per_token_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=g)
        inputs["ref_per_token_logps"] = logps + 0.2 * torch.randn(logps.shape, generator=g)
        ratio = torch.rand((B, C) if level == "token" else (B, 1), generator=g) * 2.5
        ratio[1] = 0.0  # a dropped sequence (sequence_mask) / dropped tokens (token_mask)
        inputs["importance_sampling_ratio"] = ratio
        trl_loss = trainer._compute_loss(model, inputs)
        logps, _ = our_logprobs(trainer, model, inputs)
        count = inputs["num_items_in_batch"].float() if loss_type == "dapo" else None
        ours, _ = compute_loss(
            loss, logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"].bool(),
            ref_logprobs=inputs["ref_per_token_logps"], max_length=C, importance_ratio=ratio,
            global_count=count, global_valid_count=count,
        )
        assert abs(ours.item() - trl_loss.item()) <= 1e-6, (loss_type, seed, ours.item(), trl_loss.item())
