"""Counterfactual signals in TokenFocusGRPOTrainer: span marks through TRL's batch, the evidence-masked and
step-shuffled forwards against naive references, both signal passes, and the errors. Tiny random llama, CPU."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig

from helpers import tiny
from tokenfocus.integrations.prompt_marks import SPANS_COLUMN, shuffled_prompts
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
from tokenfocus.tasks import build_task
from tokenfocus.tasks.spans import encode_spans, user_content


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


class Capturing(TokenFocusGRPOTrainer):
    """Keeps every generation batch (after the counterfactual forwards) for the test to check."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.captured.append((inputs, {k: v.clone() if torch.is_tensor(v) else v for k, v in out.items()}))
        return out


def dataset(task: str, n: int = 16, spans: bool = True) -> Dataset:
    examples = build_task({"name": task, "n_train": n}).train_examples()
    return Dataset.from_list([{"prompt": [{"role": "user", "content": e.prompt}],
                               **({SPANS_COLUMN: encode_spans(e.spans)} if spans else {})} for e in examples])


def make_trainer(tmp_path, task, signals, policy, data=None, **overrides):
    model, tok = tiny()
    model.train()
    args = {"output_dir": str(tmp_path), "per_device_train_batch_size": 4, "num_generations": 4,
            "max_completion_length": 4, "max_steps": 2, "learning_rate": 1e-3, "use_cpu": True, "bf16": False,
            "report_to": [], "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True, "beta": 0.0,
            "gradient_checkpointing": False, "temperature": 0.7, **overrides}
    trainer = Capturing(model=model, processing_class=tok, reward_funcs=[length_reward], args=GRPOConfig(**args),
                        train_dataset=data if data is not None else dataset(task), signals=signals, policy=policy)
    trainer.captured = []
    return trainer, model, tok


def naive_completion_logps(model, ids, mask, width, temperature):
    """Log-probs of the last ``width`` tokens from the whole model's logits, position ids 0..T-1 as TRL's scorer."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, -width - 1:-1].double() / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids[:, -width:, None]).squeeze(-1)


@pytest.mark.parametrize("signal_pass", ["fused", "separate"])
def test_evidence_masked_forward_and_signals_in_training(tmp_path, signal_pass):
    signals = [{"name": "context_dependency", "label": "cd"}, {"name": "token_attribution", "label": "ktr"},
               {"name": "attention_mass", "keys": "marked", "layers": "all", "label": "mass"}]
    trainer, _, tok = make_trainer(tmp_path, "facts", signals, {"name": "pgpo", "signal": "cd"})
    if signal_pass == "separate":
        trainer.tf_in_loss, trainer.tf_pass = False, "separate"
    trainer.train()
    assert len(trainer.captured) == 2
    rows, out = trainer.captured[0]
    evidence = out["tf_evidence"]
    for row, example in enumerate(rows):
        text = user_content(example["prompt"])
        marked = tok.decode(out["prompt_ids"][row][evidence[row]])
        assert marked == "".join(f for f in text.removeprefix("Let ").split(". Compute")[0].split(", "))
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1).bool()
    hidden = torch.cat([evidence, torch.zeros_like(out["completion_mask"], dtype=torch.bool)], 1)
    real = out["completion_mask"].bool()
    # The captured batch is the rollout policy's (before the first optimizer step): the weights were not yet moved.
    trainer2, model2, _ = make_trainer(tmp_path / "fresh", "facts", signals, {"name": "pgpo", "signal": "cd"})
    expected = naive_completion_logps(model2.eval(), ids, mask & ~hidden, 4, 0.7)
    torch.testing.assert_close(out["tf_cf_evidence_masked"][real].double(), expected[real], atol=1e-5, rtol=1e-5)
    full = naive_completion_logps(model2, ids, mask, 4, 0.7)
    assert (full - expected)[real].abs().max() > 1e-4  # hiding the facts changes the scores
    logged = trainer.state.log_history[0]
    for key in ("signal/cd/mean", "signal/ktr/mean", "signal/mass/mean", "time/counterfactual_s"):
        assert key in logged and math.isfinite(logged[key]), key
    assert logged["signal/cd/mean"] > 0 and 0 < logged["signal/mass/mean"] < 1
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_the_passes_agree_on_the_first_batch(tmp_path):
    """Fused (signals in the training forward) and separate (an extra no-grad forward) give the same first
    batch's signal statistics: same rollout policy, same counterfactual forward."""
    logs = {}
    for signal_pass in ("fused", "separate"):
        trainer, _, _ = make_trainer(tmp_path / signal_pass, "facts", [{"name": "context_dependency", "label": "cd"}],
                                     {"name": "pgpo", "signal": "cd"}, max_steps=1)
        if signal_pass == "separate":
            trainer.tf_in_loss, trainer.tf_pass = False, "separate"
        trainer.train()
        logs[signal_pass] = trainer.state.log_history[0]
    for key in ("signal/cd/mean", "signal/cd/q50", "policy/weight_max"):
        assert logs["fused"][key] == pytest.approx(logs["separate"][key], rel=1e-4, abs=1e-6), key


def test_step_shuffled_forward_scores_the_reordered_prompt(tmp_path):
    signals = [{"name": "token_attribution", "counterfactual": "steps_shuffled", "label": "order"},
               {"name": "token_attribution", "label": "ctx"}, "predictive_entropy"]
    policy = {"name": "video_ktr", "signals": ["predictive_entropy", "ctx", "order"], "ratio": 0.2}
    trainer, _, tok = make_trainer(tmp_path, "steps", signals, policy, max_steps=1)
    trainer.train()
    rows, out = trainer.captured[0]
    shuffled = shuffled_prompts(rows, trainer.args.seed, 0)
    assert all(user_content(s) != user_content(r["prompt"]) for s, r in zip(shuffled, rows))
    _, model, _ = make_trainer(tmp_path / "fresh", "steps", signals, policy)
    model.eval()
    for row in range(len(rows)):
        prompt = tok.apply_chat_template(shuffled[row], tokenize=True, add_generation_prompt=True)["input_ids"]
        completion = out["completion_ids"][row][out["completion_mask"][row].bool()]
        ids = torch.cat([torch.tensor(prompt), completion])[None]
        expected = naive_completion_logps(model, ids, torch.ones_like(ids, dtype=torch.bool), len(completion), 0.7)
        torch.testing.assert_close(out["tf_cf_steps_shuffled"][row, :len(completion)].double(), expected[0],
                                   atol=1e-5, rtol=1e-5)
    # The completions of one prompt share one permutation.
    assert all(shuffled[i] == shuffled[i - i % 4] for i in range(len(rows)))
    logged = trainer.state.log_history[0]
    for name in ("predictive_entropy", "ctx", "order"):
        assert 0 < logged[f"policy/ratio/{name}"] <= logged["policy/ratio/union"] <= 1


def test_rows_without_span_marks_are_refused_naming_the_prompt(tmp_path):
    trainer, _, _ = make_trainer(tmp_path, "facts", [{"name": "context_dependency"}],
                                 {"name": "pgpo", "signal": "context_dependency"}, data=dataset("facts", spans=False))
    with pytest.raises(ValueError, match="prompt 'Let .* has no \\['evidence'\\] span marks"):
        trainer.train()
