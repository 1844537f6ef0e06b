"""TokenFocusGRPOTrainer (integrations/trl.py): the training progress a policy sees, the run seed in its noise,
and TRL's vLLM importance-sampling correction in our loss. A tiny random llama, a few CPU steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from helpers import tiny, trl_loss_inputs
from tokenfocus.config import method_preset
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
from tokenfocus.io import POLICY_WEIGHTS_FILE

B, P, C = 8, 5, 7


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def make_trainer(tmp_path, method="low2high", trainer_class=TokenFocusGRPOTrainer, **overrides):
    model, tok = tiny()
    model.train()
    args = {"output_dir": str(tmp_path), "per_device_train_batch_size": 4, "num_generations": 4,
            "max_completion_length": 4, "max_steps": 3, "learning_rate": 1e-3, "use_cpu": True, "bf16": False,
            "report_to": [], "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True, "beta": 0.0,
            "gradient_checkpointing": False, **overrides}
    dataset = Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(32)])
    extra = {}
    if trainer_class is TokenFocusGRPOTrainer:
        config = method_preset(method)
        extra = {"signals": config.signals, "policy": config.policy, "loss": config.loss}
    else:
        args.update(loss_type="dapo", epsilon_high=0.28)
    trainer = trainer_class(model=model, processing_class=tok, reward_funcs=[length_reward],
                            args=GRPOConfig(**args), train_dataset=dataset, **extra)
    return trainer, model


@pytest.mark.parametrize("max_steps, args", [
    (3, {}),  # one generation batch per optimizer step: steps 0, 1, 2
    (5, {"steps_per_generation": 2}),  # one generation batch feeds two optimizer steps: steps 0, 2, 4
    (5, {"num_iterations": 2}),  # two PPO iterations on each generation batch: steps 0, 2, 4
])
def test_progress_runs_from_0_at_the_first_batch_to_1_at_the_last(tmp_path, max_steps, args):
    """The Low2High schedule covers both ends: kappa = -kappa0 on the first generation batch, +kappa0 on the
    last (it used to end at global_step / max_steps, kappa = +0.417 for a 12-step run)."""
    trainer, _ = make_trainer(tmp_path, "low2high", max_steps=max_steps, **args)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / POLICY_WEIGHTS_FILE).read_text().splitlines()]
    assert [row["progress"] for row in rows] == [0.0, 0.5, 1.0]
    kappas = [row["policy/kappa"] for row in trainer.state.log_history if "policy/kappa" in row]
    assert kappas[0] == pytest.approx(-0.5) and kappas[-1] == pytest.approx(0.5)


def test_a_single_batch_run_has_progress_0(tmp_path):
    trainer, _ = make_trainer(tmp_path, "low2high", max_steps=1)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / POLICY_WEIGHTS_FILE).read_text().splitlines()]
    assert [row["progress"] for row in rows] == [0.0]


def test_the_run_seed_enters_the_random_policy(tmp_path):
    """Seeds of a study draw different random subsets (same generation step, same policy seed); one seed
    draws the same subset again."""
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(B, C, generator=g) < 0.8
    advantages, groups = torch.randn(B, generator=g), torch.arange(B) // 4

    def subset(seed):
        trainer, _ = make_trainer(tmp_path / str(seed), "random20", seed=seed)
        weights, _, _ = trainer._weights(mask, {}, advantages, groups)
        return weights > 0

    one, again, other = subset(1), subset(1), subset(2)
    assert torch.equal(one, again)
    assert not torch.equal(one, other)


def random_inputs(seed: int):
    return trl_loss_inputs(seed, B, P, C, vocab=40, group_size=4)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_trainer_loss_applies_the_vllm_importance_sampling_ratio_as_trl_does(tmp_path, level):
    """With use_vllm and vllm_importance_sampling_correction, TRL multiplies the policy term by the
    sampler-correction ratio ((B, C) for token_* modes, (B, 1) for sequence_* modes); our trainer's loss with the
    full policy and the dapo preset equals TRL's GRPOTrainer loss on the same inputs."""
    ours, model = make_trainer(tmp_path / "ours", "dapo", per_device_train_batch_size=B)
    plain, _ = make_trainer(tmp_path / "plain", trainer_class=GRPOTrainer, per_device_train_batch_size=B)
    plain.model.load_state_dict(model.state_dict())
    for trainer in (ours, plain):
        trainer.use_vllm = trainer.vllm_importance_sampling_correction = True  # no vLLM here: set what the loss reads
        trainer.current_gradient_accumulation_steps = 1
    for seed in range(2):
        inputs = random_inputs(seed)
        g = torch.Generator().manual_seed(100 + seed)
        shape = (B, C) if level == "token" else (B, 1)
        inputs["importance_sampling_ratio"] = torch.rand(shape, generator=g) * 2.5
        inputs["importance_sampling_ratio"][0] = 0.0  # a masked-out sequence (sequence_mask mode)
        with torch.no_grad():
            input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
            logps, _, _ = plain._get_per_token_logps_and_entropies(plain.model, input_ids, attention_mask, C)
        inputs["old_per_token_logps"] = logps + 0.3 * torch.randn(logps.shape, generator=g)
        expected = plain._compute_loss(plain.model, inputs)
        got = ours._compute_loss(ours.model, inputs)
        assert abs(got.item() - expected.item()) <= 1e-6, (seed, got.item(), expected.item())
        without = dict(inputs, importance_sampling_ratio=torch.ones(shape))
        assert abs(ours._compute_loss(ours.model, without).item() - got.item()) > 1e-6  # the ratio mattered


def test_grpo_loss_with_the_sink_decorrelation_term_trains_and_logs_it(tmp_path):
    """lambda > 0 adds the prompt positions' cos^2 term to the GRPO loss: finite, logged, in (0, 1]."""
    from dataclasses import replace
    trainer, _ = make_trainer(tmp_path, method="dapo", max_steps=2)
    trainer.tf_loss = replace(trainer.tf_loss, sink_decorrelation=10.0)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "loss/sink_decorrelation" in row]
    assert len(logged) == 2
    assert all(0 < row["loss/sink_decorrelation"] <= 1 for row in logged)
    assert all(math.isfinite(row["loss"]) for row in trainer.state.log_history if "loss" in row)
