"""Our aggregated losses equal TRL 1.16 GRPOTrainer's, and our 80/20 preset selects TRL's tokens.

TRL's own ``_compute_loss`` and ``get_high_entropy_mask`` are called on a tiny random llama.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from helpers import tiny
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
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[::3, :2] = 0  # left padding
    lengths = torch.randint(0, C + 1, (B,), generator=g)
    completion_mask = (torch.arange(C)[None] < lengths[:, None]).long()
    return {
        "prompt_ids": torch.randint(3, 90, (B, P), generator=g) * prompt_mask + 2 * (1 - prompt_mask),
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(3, 90, (B, C), generator=g),
        "completion_mask": completion_mask,
        "advantages": torch.randn(B, generator=g),
        "num_items_in_batch": completion_mask.sum(),
    }


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
