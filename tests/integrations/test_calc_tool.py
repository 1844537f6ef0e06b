"""The calculator tool loop: environment tokens are masked (env_mask 0) with log-prob 0, malformed and over-cap
calls are counted and answered, never raised; and TRL's GRPOTrainer trains through it (its tool_mask)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from datasets import Dataset
from trl import GRPOConfig

from helpers import tiny
from tokenfocus.config import method_preset
from tokenfocus.integrations.calc_tool import CalcToolLoop
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer


def scripted(pieces):
    """A fake generator that emits the next scripted text piece (stopping where the real one would)."""
    queue = list(pieces)

    def generate(trainer, ids, budget):
        text = queue.pop(0) if queue else "Answer: 0"
        new = trainer.processing_class(text, add_special_tokens=False).input_ids[:budget]
        return new, [-0.5] * len(new)

    return generate


def fake_trainer():
    _, tok = tiny()
    return SimpleNamespace(processing_class=tok, model=SimpleNamespace(generation_config=SimpleNamespace(
        eos_token_id=tok.eos_token_id)))


def test_calls_are_answered_masked_and_counted():
    trainer = fake_trainer()
    tok = trainer.processing_class
    loop = CalcToolLoop(max_calls=2, generate=scripted(["<calc>12+30</calc>", "<calc>import os</calc>",
                                                        "<calc>1+1</calc>", "Answer: 42" + tok.eos_token]))
    row = loop.rollout(trainer, [1, 2, 3], budget=200)
    text = tok.decode(row["ids"], skip_special_tokens=True)
    assert text.startswith("<calc>12+30</calc> = 42\n<calc>import os</calc> = error\n"
                           "<calc>1+1</calc> = no more calls\n")
    assert (row["calls"], row["errors"], row["over"]) == (3, 1, 1)
    replies = "".join(tok.decode([t]) for t, m in zip(row["ids"], row["env"]) if m == 0)
    assert replies == " = 42\n = error\n = no more calls\n"
    assert all(lp == 0.0 for lp, m in zip(row["logps"], row["env"]) if m == 0)
    assert len(row["ids"]) == len(row["env"]) == len(row["logps"])
    short = CalcToolLoop(generate=scripted(["<calc>2*3</calc>"])).rollout(trainer, [1], budget=12)
    assert len(short["ids"]) <= 12  # the reply is cut to the budget


def test_grpo_trains_through_the_tool_loop(tmp_path):
    model, tok = tiny()
    model.train()
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, learning_rate=1e-3, use_cpu=True, bf16=False,
                      report_to=[], logging_steps=1, save_strategy="no", disable_tqdm=True, beta=0.0,
                      gradient_checkpointing=False)
    method = method_preset("dapo")
    seen = {}

    def reward(completions, tool_calls, tool_errors, **kwargs):
        seen["calls"] = tool_calls
        return [float(len(c) % 2) for c in completions]

    trainer = TokenFocusGRPOTrainer(model=model, processing_class=tok, reward_funcs=[reward], args=args,
                                    train_dataset=Dataset.from_list([{"prompt": f"{i}*{i}="} for i in range(8)]),
                                    signals=method.signals, policy=method.policy, loss=method.loss,
                                    rollout_func=CalcToolLoop(max_calls=2))
    trainer.train()
    assert len(seen["calls"]) == 4 and all(c >= 0 for c in seen["calls"])
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))
