"""The calculator tool loop: environment tokens are masked (env_mask 0) with log-prob 0, malformed and over-cap
calls are counted and answered, never raised; and TRL's GRPOTrainer trains through it (its tool_mask)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from datasets import Dataset

from helpers import tiny, tiny_grpo_args
from tokenfocus.config import method_preset
from tokenfocus.integrations.calc_tool import CalcToolLoop
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer


def scripted(pieces):
    """A fake generator that emits the next scripted text piece (stopping where the real one would)."""
    queue = list(pieces)

    def generate(model, tokenizer, ids, budget, temperature):
        text = queue.pop(0) if queue else "Answer: 0"
        new = tokenizer(text, add_special_tokens=False).input_ids[:budget]
        return new, [-0.5] * len(new)

    return generate


def test_calls_are_answered_masked_and_counted():
    _, tok = tiny()
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=tok.eos_token_id))
    loop = CalcToolLoop(max_calls=2, generate=scripted(["<calc>12+30</calc>", "<calc>import os</calc>",
                                                        "<calc>1+1</calc>", "Answer: 42" + tok.eos_token]))
    row = loop.rollout(model, tok, [1, 2, 3], budget=200)
    text = tok.decode(row["ids"], skip_special_tokens=True)
    assert text.startswith("<calc>12+30</calc> = 42\n<calc>import os</calc> = error\n"
                           "<calc>1+1</calc> = no more calls\n")
    assert (row["calls"], row["errors"], row["over"]) == (3, 1, 1)
    replies = "".join(tok.decode([t]) for t, m in zip(row["ids"], row["env"]) if m == 0)
    assert replies == " = 42\n = error\n = no more calls\n"
    assert all(lp == 0.0 for lp, m in zip(row["logps"], row["env"]) if m == 0)
    assert len(row["ids"]) == len(row["env"]) == len(row["logps"])
    short = CalcToolLoop(generate=scripted(["<calc>2*3</calc>"])).rollout(model, tok, [1], budget=12)
    assert len(short["ids"]) <= 12  # the reply is cut to the budget


def test_grpo_trains_through_the_tool_loop(tmp_path):
    model, tok = tiny()
    model.train()
    args = tiny_grpo_args(tmp_path, per_device_train_batch_size=4, max_completion_length=8)
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


def test_evaluation_of_the_calculator_runs_the_tool_loop(monkeypatch):
    """Held-out scoring of a tool task goes through the loop: its replies are in the scored text, calls are
    counted per problem, and CAS is reported."""
    from tokenfocus.integrations import calc_tool
    from tokenfocus.recipes.evaluate import EvalConfig, evaluate
    from tokenfocus.tasks import build_task

    problems = build_task({"name": "calculator"}).eval_examples("test", 3, tiers=["C2"])
    answers = iter([p.answer for p in problems])

    def fake(model, tokenizer, ids, budget, temperature):
        text = tokenizer.decode(ids)
        if "</calc>" in text.split("assistant")[-1]:
            return tokenizer(f"Answer: {next(answers)}", add_special_tokens=False).input_ids, [0.0]
        expression = text.split("Compute ")[1].split(".")[0]
        return tokenizer(f"<calc>{expression}</calc>", add_special_tokens=False).input_ids, [0.0]

    original = calc_tool.CalcToolLoop.__init__
    monkeypatch.setattr(calc_tool.CalcToolLoop, "__init__", lambda self, max_calls=4, generate=None: original(
        self, max_calls, fake))
    model, tok = tiny()
    result = evaluate(model, tok, EvalConfig(model="tiny", task={"name": "calculator"}, split="test", n=3,
                                             tiers=["C2"], k=0, max_new_tokens=64))
    assert result["pass@1"] == 1.0 and result["tool_calls_mean"] == 1.0 and result["tool_calls_per_solved"] == 1.0
    assert " = " in result["examples"][0]["completion"] and result["cas"] > 0


def test_a_row_keeps_its_tokens_up_to_its_first_stop_and_its_budget():
    from tokenfocus.integrations.calc_tool import cut_at_stop

    _, tok = tiny()
    eos = {tok.eos_token_id}
    call = tok("<calc>1+2</calc>", add_special_tokens=False).input_ids
    after = tok(" = 3 and more", add_special_tokens=False).input_ids
    assert cut_at_stop(call + after, tok, eos, 100) == len(call)  # the token that closes the call is the last
    answer = tok("Answer: 3", add_special_tokens=False).input_ids
    assert cut_at_stop(answer + [tok.eos_token_id] + call, tok, eos, 100) == len(answer) + 1  # EOS kept
    assert cut_at_stop(answer + call, tok, eos, 3) == 3  # the budget
    assert cut_at_stop(answer, tok, eos, 100) == len(answer)


def test_batched_rollouts_equal_one_prompt_at_a_time():
    """Greedy, rows of different lengths left-padded together give each row's own tokens and log-probs."""
    model, tok = tiny()
    prompts = [tok(text, add_special_tokens=False).input_ids for text in
               ("Compute 1+2.", "Compute 347+589+112. You may use the calculator.", "x", "Compute 12*13 now.")]
    batched = CalcToolLoop(batch_size=3).rollouts(model, tok, prompts, budget=10, temperature=0.0)
    for prompt, row in zip(prompts, batched):
        alone = CalcToolLoop(batch_size=1).rollout(model, tok, prompt, budget=10, temperature=0.0)
        assert row["ids"] == alone["ids"] and len(row["ids"]) > 0
        assert torch.allclose(torch.tensor(row["logps"]), torch.tensor(alone["logps"]), atol=1e-4)
        assert row["env"] == [1] * len(row["ids"]) and row["calls"] == 0
