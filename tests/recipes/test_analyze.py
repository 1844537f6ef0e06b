"""`tokenfocus analyze` end to end on a tiny model, and its errors on bad input."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from tokenfocus.cli import app

runner = CliRunner()


def test_analyze_end_to_end_on_tiny_model(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 2+2?"}\n\n{"question": "Name a colour."}\n')
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "analyze", "--model", "tiny-llama", "--prompts-file", str(prompts), "-p", "Hello", "--arithmetic", "2",
        "--signal", "attention_entropy", "--signal", '{"name": "attention_entropy", "layers": "all", "label": "ae_all"}',
        "--signal", "predictive_entropy", "--signal", "position", "--max-new-tokens", "6", "--temperature", "1.0",
        "--color-by", "ae_all", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "tokens.html" in result.output
    tensors = load_file(out / "signals.safetensors")
    assert set(tensors) == {"input_ids", "attention_mask", "response_mask", "signal.attention_entropy",
                            "signal.ae_all", "signal.predictive_entropy", "signal.position"}
    assert tensors["input_ids"].shape[0] == 5
    rows = [json.loads(line) for line in (out / "tokens.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows[:3]] == ["Hello", "What is 2+2?", "Name a colour."]
    for r, row in enumerate(rows):
        mask = tensors["response_mask"][r]
        assert row["positions"] == mask.nonzero().squeeze(-1).tolist()
        assert len(row["tokens"]) == len(row["offsets"]) == len(row["signals"]["ae_all"]) == int(mask.sum())
        assert row["signals"]["position"] == list(range(len(row["tokens"])))
        stored = tensors["signal.ae_all"][r, mask].tolist()
        assert row["signals"]["ae_all"] == pytest.approx(stored, abs=1e-5)
    page = (out / "tokens.html").read_text()
    assert "<script src" not in page and "http://" not in page and "https://" not in page  # self-contained
    assert '<option value="ae_all" selected>' in page
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["torch"] and manifest["seeds"] == {"seed": 0}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--signal", "attention_entropi", "-p", "x"], "Unknown signal 'attention_entropi'"),
        (["--signal", '{"name": "attention_entropy", "head": 1}', "-p", "x"], "unknown option"),
        (["--signal", "{bad json", "-p", "x"], "not valid JSON"),
        ([], "No prompts"),
        (["-p", "x" * 700], "do not fit the model context"),
        (["-p", "x", "--color-by", "nope"], "not among the requested signals"),
        (["-p", "x", "--ratio", "0.9"], "ratio must be in"),
        (["-p", "x", "--model", "what/ever/this"], "no model at 'what/ever/this'"),
        (["-p", "x", "-s", "context_dependency"], "prompts [0] have none. Draw prompts from a task that marks them"),
        (["--task", "facts:2", "-s", '{"name": "token_attribution", "counterfactual": "steps_shuffled"}'],
         "need the prompts' ['steps'] spans marked"),
        (["--task", "facts"], "expected NAME:N"),
        (["--task", "fact:2"], "not a registered task"),
        (["-p", "x", "-s", "teacher_kl"], "signals ['teacher_kl'] read a teacher's scores: pass --teacher SPEC"),
        (["-p", "x", "-s", "teacher_kl", "--teacher", "what/ever/this"], "--teacher: "),
    ],
)
def test_analyze_bad_input_gets_a_clear_error(tmp_path, args, message):
    result = runner.invoke(app, ["analyze", "--model", "tiny-llama", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_empty_or_broken_prompt_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    result = runner.invoke(app, ["analyze", "--model", "tiny-llama", "--prompts-file", str(empty)])
    assert result.exit_code == 2 and "holds no prompts" in result.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    result = runner.invoke(app, ["analyze", "--model", "tiny-llama", "--prompts-file", str(broken)])
    assert result.exit_code == 2 and "broken.jsonl:2" in result.output
    result = runner.invoke(app, ["analyze", "--model", "tiny-llama", "--prompts-file", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2 and "not found" in result.output


def test_analyze_counterfactual_signals_on_task_prompts(tmp_path):
    """Prompts drawn from a task carry their spans: the counterfactual signals run and the evidence matters."""
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "analyze", "--model", "tiny-llama", "--task", "steps:3", "--signal", "context_dependency",
        "--signal", '{"name": "token_attribution", "counterfactual": "steps_shuffled", "label": "order"}',
        "--signal", '{"name": "attention_mass", "keys": "marked", "label": "mass"}',
        "--max-new-tokens", "5", "--temperature", "1.0", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    tensors = load_file(out / "signals.safetensors")
    mask = tensors["response_mask"]
    assert mask.shape[0] == 3
    assert (tensors["signal.context_dependency"][mask] >= 0).all()
    assert tensors["signal.context_dependency"][mask].max() > 0 and tensors["signal.order"][mask].abs().max() > 0
    assert ((tensors["signal.mass"][mask] > 0) & (tensors["signal.mass"][mask] < 1)).all()
    assert (tensors["signal.context_dependency"][~mask] == 0).all()


def test_analyze_teacher_signals_with_a_teacher_model(tmp_path):
    """--teacher scores the responses: the log-ratio and the KL are those of two different models (non-zero), and
    the teacher's log-probs are log-probabilities."""
    out = tmp_path / "run"
    result = runner.invoke(app, [
        "analyze", "--model", "tiny-llama", "--teacher", "tiny-llama:seed=7", "--arithmetic", "2",
        "-s", "teacher_logprobs", "-s", "teacher_logratio", "-s", '{"name": "teacher_kl", "label": "kl"}',
        "--max-new-tokens", "5", "--temperature", "1.0", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    tensors = load_file(out / "signals.safetensors")
    mask = tensors["response_mask"]
    assert (tensors["signal.teacher_logprobs"][mask] < 0).all()
    assert (tensors["signal.kl"][mask] > 0).all() and tensors["signal.teacher_logratio"][mask].abs().max() > 0
    assert (tensors["signal.kl"][~mask] == 0).all()
    assert json.loads((out / "analysis.json").read_text())["teacher"] == "tiny-llama:seed=7"
