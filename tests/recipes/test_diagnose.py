"""`tokenfocus diagnose` (recipes/diagnose.py): the trainer's diagnosis inputs rebuilt from sampled prompt groups.

Alignment (DESIGN.md): in the (B, C) completion layout, token c of a row sits at column P + c of the
[left-padded prompt | right-padded completion] batch and is predicted by position P + c - 1; the reference is a
forward over the row's real tokens alone (no padding), where the prompt has length p and token c sits at p + c.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from helpers import tiny
from tokenfocus import models
from tokenfocus.cli import app
from tokenfocus.diagnostics import DiagnosticsConfig, diagnosis_signals
from tokenfocus.recipes.diagnose import Group, diagnosis_inputs, group_advantages, layout, run_diagnosis

SMALL = DiagnosticsConfig(project_dim=512, bootstrap=2)


def random_groups(prompt_lengths, completion_lengths, g=3, seed=0):
    """One Group per prompt length, ``g`` completions each with the given lengths (cycled), rewards 0..g-1."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for i, p in enumerate(prompt_lengths):
        completions = [torch.randint(3, 99, (completion_lengths[(i * g + j) % len(completion_lengths)],),
                                     generator=gen).tolist() for j in range(g)]
        groups.append(Group(f"prompt {i}", torch.randint(3, 99, (p,), generator=gen).tolist(), completions,
                            [float(j) for j in range(g)]))
    return groups


def test_group_advantages_are_trls_group_scaled_rewards():
    """TRL 1.16 (scale_rewards="group"): A = (R - mean) / (std + 1e-4), std unbiased. By hand: [1, 0, 0, 0] has
    mean 1/4 and std sqrt((9/16 + 3/16) / 3) = 1/2; an all-equal group has A = 0."""
    from trl.trainer.utils import nanstd

    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4)
    advantages = group_advantages(rewards, 4)
    assert torch.allclose(advantages[:4], expected) and (advantages[4:] == 0).all()
    noisy = torch.rand(24)
    grouped = noisy.view(-1, 8)
    trl = (grouped - grouped.mean(1, keepdim=True)) / (nanstd(grouped, dim=1).unsqueeze(1) + 1e-4)
    assert torch.allclose(group_advantages(noisy, 8), trl.reshape(-1), atol=1e-6)


def test_layout_left_pads_prompts_and_right_pads_completions():
    groups = random_groups([3, 5], [2, 4, 1], g=3)
    batch, width_p = layout(groups, pad_id=2)
    assert width_p == 5 and batch.shape == (6, 5 + 4)
    for r in range(6):
        group = groups[r // 3]
        prompt, completion = group.prompt_ids, group.completion_ids[r % 3]
        assert batch.input_ids[r, width_p - len(prompt):width_p].tolist() == prompt
        assert batch.input_ids[r, width_p:width_p + len(completion)].tolist() == completion
        assert batch.attention_mask[r].nonzero().flatten().tolist() == list(
            range(width_p - len(prompt), width_p + len(completion)))
        assert batch.response_mask[r, width_p:].sum() == len(completion) and not batch.response_mask[r, :width_p].any()


def test_logprobs_fn_is_the_naive_gather_at_p_plus_c_minus_1_on_a_left_padded_batch():
    model, tok = tiny()
    groups = random_groups([4, 7, 2], [5, 1, 3, 6], g=2)
    built = diagnosis_inputs(model, groups, SMALL, tok.pad_token_id, temperature=0.7)
    rows = torch.arange(6)
    logps = built.logprobs_fn(rows)
    assert logps.shape == built.mask.shape and logps.requires_grad
    for r in rows.tolist():
        group = groups[r // 2]
        prompt, completion = group.prompt_ids, group.completion_ids[r % 2]
        sequence = torch.tensor(prompt + completion)[None]  # the row's real tokens, no padding
        with torch.no_grad():
            logits = model(input_ids=sequence).logits[0].double() / 0.7
        for c, token in enumerate(completion):
            reference = torch.log_softmax(logits[len(prompt) + c - 1], -1)[token]
            assert abs(float(logps[r, c].detach()) - float(reference)) < 1e-4, (r, c)
        assert built.mask[r].sum() == len(completion)
        assert built.completion_ids[r, :len(completion)].tolist() == completion
    grads = torch.autograd.grad(logps[built.mask].sum(), built.params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert torch.equal(built.inputs.group_ids, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert built.correct.tolist() == [False, True] * 3  # rewards 0, 1 per group; correct = reward >= 0.5


def test_signals_equal_the_trainers_for_the_same_batch(tmp_path):
    """The trainer's ``_rollout_signals`` (TRL's scorer + the recorder + ``signals_from_forward``) on the same batch
    gives the same (B, C) attention entropy, predictive entropy and prompt attention mass."""
    from datasets import Dataset
    from trl import GRPOConfig

    from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
    from tokenfocus.signals import parse_signal_specs

    model, tok = tiny(layers=3)
    groups = random_groups([4, 7, 2, 5], [5, 1, 3, 6], g=2)
    ours = diagnosis_inputs(model, groups, SMALL, tok.pad_token_id)
    batch, width_p = ours.batch, ours.prompt_width
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=2,
                      max_completion_length=8, use_cpu=True, bf16=False, report_to=[], beta=0.0,
                      gradient_checkpointing=False, save_strategy="no", disable_tqdm=True)
    trainer = TokenFocusGRPOTrainer(model=model, processing_class=tok, args=args,
                                    reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                                    train_dataset=Dataset.from_list([{"prompt": "x"}] * 8))
    out = {"prompt_ids": batch.input_ids[:, :width_p], "prompt_mask": batch.attention_mask[:, :width_p].long(),
           "completion_ids": batch.input_ids[:, width_p:], "completion_mask": batch.response_mask[:, width_p:].long()}
    theirs = trainer._rollout_signals(out, parse_signal_specs(diagnosis_signals(SMALL)))
    assert set(theirs) == set(ours.inputs.signals) == {"attention_entropy", "predictive_entropy", "attention_mass"}
    for label, values in theirs.items():
        assert torch.allclose(ours.inputs.signals[label], values.float(), atol=1e-5), label
    assert (ours.inputs.signals["attention_entropy"][ours.mask] > 0).all()


def digits_if_even(completions, answer, **_):
    """Informative (digit fraction, varied on a random model) only for prompts with an even answer."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) if int(a) % 2 == 0 else 0.0
            for c, a in zip(completions, answer)]


def test_run_diagnosis_diagnoses_each_batch_on_exactly_groups_informative_groups(tmp_path):
    from tokenfocus.tasks import build_task

    out = run_diagnosis("tiny-llama", {"name": "arithmetic", "tiers": ["D1"]}, tmp_path / "d", groups=3, batches=2,
                        num_generations=4, max_new_tokens=6, config=SMALL, reward=digits_if_even, log=lambda m: None)
    lines = [json.loads(line) for line in (out / "diagnosis.jsonl").read_text().splitlines()]
    assert [line["batch"] for line in lines] == [0, 1]
    answers = {e.prompt: int(e.answer) for e in build_task({"name": "arithmetic", "tiers": ["D1"]}).train_examples(48)}
    for line in lines:
        assert line["model"] == "tiny-llama" and line["diag/informative_groups"] == 3
        assert len(line["prompts"]) == 3 and all(answers[p] % 2 == 0 for p in line["prompts"])
        for subset in ("full", "random", "anchors", "middle", "explorers", "anchors_position_matched"):
            for metric in ("cos_full", "norm", "split_half_volatility", "token_grad_proxy"):
                assert math.isfinite(line[f"diag/grad/{subset}/{metric}"]), (subset, metric)
        assert line["diag/grad/full/cos_full"] == pytest.approx(1.0, abs=1e-9)
    assert set(lines[0]["prompts"]).isdisjoint(lines[1]["prompts"])
    summary = json.loads((out / "diagnosis.json").read_text())
    assert summary["groups"] == 3 and summary["batches"] == 2 and summary["reward"] == "digits_if_even"
    cos = summary["metrics"]["diag/grad/anchors/cos_full"]
    values = [line["diag/grad/anchors/cos_full"] for line in lines]
    assert cos["n"] == 2 and cos["mean"] == pytest.approx(sum(values) / 2)
    assert cos["sd"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))


def test_run_diagnosis_gives_up_naming_how_many_groups_were_informative(tmp_path):
    with pytest.raises(ValueError, match="only 0 of 4 prompts tried"):
        run_diagnosis("tiny-llama", {"name": "arithmetic"}, tmp_path / "d", groups=2, batches=1, num_generations=2,
                      max_new_tokens=2, config=SMALL, reward=lambda completions, **_: [1.0] * len(completions),
                      max_prompts=4, log=lambda m: None)


@pytest.mark.parametrize("args, message", [
    (["--groups", "1"], "groups must be >= 2"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--task", "arithmetc"], "did you mean 'arithmetic'"),
    (["--tiers", "D9"], "unknown tier"),
    (["--reward", "length"], "reward must be one of"),
    (["--num-generations", "1"], "num_generations must be >= 2"),
])
def test_cli_refuses_bad_input_before_loading_a_model(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    result = CliRunner().invoke(app, ["diagnose", "tiny-llama", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_refuses_a_non_empty_out_without_overwrite_then_runs(tmp_path, monkeypatch):
    out = tmp_path / "d"
    out.mkdir()
    (out / "old.txt").write_text("x")
    args = ["diagnose", "tiny-llama", "--tiers", "D1", "--groups", "2", "--batches", "1", "--num-generations", "4",
            "--max-new-tokens", "4", "--reward", "digits", "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
        refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "not empty" in refused.output
    done = CliRunner().invoke(app, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    assert len((out / "diagnosis.jsonl").read_text().splitlines()) == 1 and not (out / "old.txt").exists()
