"""GSM8K (tasks/gsm8k.py): loading from a local JSONL, bad rows named by line, the task's paths and prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import GSM8K_DIR
from tokenfocus.tasks import DatasetError, build_task, load_gsm8k
from tokenfocus.tasks.gsm8k import GSM8K, GSM8KOptions


def test_gsm8k_from_local_jsonl_and_bad_rows(tmp_path):
    rows = load_gsm8k(str(GSM8K_DIR), "test", limit=5)
    assert len(rows) == 5 and rows[0]["answer"] == "18" and rows[0]["prompt"].startswith("Janet")
    assert len(load_gsm8k(str(GSM8K_DIR / "train.jsonl"), limit=3)) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DatasetError, match="bad.jsonl: line 3 needs string fields"):
        load_gsm8k(str(bad))
    bad.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DatasetError, match="line 1: the answer field has no '#### <number>' line"):
        load_gsm8k(str(bad))
    with pytest.raises(DatasetError, match="not found"):
        load_gsm8k(str(tmp_path / "missing.jsonl"))


def test_relative_to_resolves_a_relative_path_and_leaves_the_hub_id_alone(tmp_path):
    """A config's `path: data/gsm8k` means data/gsm8k next to the config file; `openai/gsm8k` is a hub id and an
    absolute path is already resolved."""
    # build_task would refuse a relative path that does not exist from here, so the task is built directly.
    relative = GSM8K(GSM8KOptions(path="data/gsm8k"))
    task = build_task({"name": "gsm8k", "path": str(GSM8K_DIR)})
    resolved = relative.relative_to(tmp_path)
    assert resolved.options.path == str(tmp_path / "data" / "gsm8k")
    assert relative.options.path == "data/gsm8k"  # the original is unchanged (options are frozen data)
    hub = build_task({"name": "gsm8k", "path": "openai/gsm8k"})
    assert hub.relative_to(tmp_path).options.path == "openai/gsm8k"
    assert task.relative_to(tmp_path).options.path == str(GSM8K_DIR)
    assert Path(resolved.options.path).is_absolute()


def test_sample_prompts_are_gsm8k_questions_not_arithmetic():
    task = build_task({"name": "gsm8k", "path": str(GSM8K_DIR)})
    prompts = task.sample_prompts(3)
    questions = [json.loads(line)["question"] for line in (GSM8K_DIR / "test.jsonl").read_text().splitlines()[:3]]
    assert len(prompts) == 3
    for prompt, question in zip(prompts, questions):
        assert prompt.startswith(question) and prompt.endswith('Give the final answer in the form "Answer: N".')
        assert "Compute " not in prompt


def test_a_non_utf8_dataset_file_is_named(tmp_path):
    from tokenfocus.tasks import DatasetError, load_gsm8k

    path = tmp_path / "train.jsonl"
    path.write_bytes('{"question": "Caf\xe9?", "answer": "#### 1"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="train.jsonl is not UTF-8"):
        load_gsm8k(str(path))
