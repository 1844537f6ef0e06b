"""The jsonl task: your own prompts with answers and span marks; every bad row named before any model loads."""

from __future__ import annotations

import json

import pytest
import yaml

from tokenfocus import models
from tokenfocus.config import ConfigError, load_train_config
from tokenfocus.tasks import build_task

TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"
PROMPT = "Let a=4, b=5. Compute a*b."


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def config(tmp_path, data_path, method="pgpo"):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "task": {"name": "jsonl", "path": data_path.name},
                                    "method": method, "run": {"dir": str(tmp_path / "run")}}))
    return path


def test_rows_become_examples_with_their_spans_and_splits(tmp_path):
    rows = [{"prompt": f"Let a={i}, b=5. Compute a*b.", "answer": 5 * i, "spans": {"evidence": [[4, 12]]},
             "split": "train" if i % 4 else "test", "solution": f"{i}*5 = {5 * i}\nAnswer: {5 * i}"} for i in range(1, 9)]
    task = build_task({"name": "jsonl", "path": str(write(tmp_path / "d.jsonl", rows))})
    assert task.check() == [] and task.roles == ("evidence",)
    train = task.train_examples()
    assert [e.answer for e in train] == ["5", "10", "15", "25", "30", "35"]
    assert train[0].spans == {"evidence": [(4, 12)]} and train[0].prompt[4:12] == "a=1, b=5"
    assert [e.answer for e in task.eval_examples("test", 10)] == ["20", "40"]
    assert [e.answer for e in task.gold_examples(2)] == ["30", "35"]  # from the back


def test_every_bad_row_is_named_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    data = write(tmp_path / "d.jsonl", [
        {"prompt": PROMPT, "answer": "20", "spans": {"evidence": [[4, 12]]}},
        {"prompt": PROMPT, "answer": "20", "spans": {"evidence": [[4, 4]]}},
        {"prompt": PROMPT, "answer": "20", "spans": {"evidence": [[20, 40]]}},
        {"prompt": PROMPT, "answer": "20", "spans": {"evidence": [[4, 8], [6, 12]]}},
        {"prompt": PROMPT, "answer": "20", "spans": {"visual": [[0, 3]]}},
        {"prompt": PROMPT, "answer": "20", "spans": [[4, 12]]},
        {"prompt": "", "answer": "20"},
        {"prompt": PROMPT},
        {"prompt": PROMPT, "answer": "20", "split": "dev"},
        "{not json",
    ])
    with pytest.raises(ConfigError) as error:
        load_train_config(config(tmp_path, data))
    message = str(error.value)
    for expected in (
        "task.d.jsonl:2: evidence span [4, 4) is empty: a span needs end > start (character offsets into 'prompt'",
        "task.d.jsonl:3: evidence span [20, 40) lies outside the prompt, whose 26 characters are [0, 26)",
        "task.d.jsonl:4: evidence span [6, 12) overlaps or precedes [4, 8)",
        "task.d.jsonl:5: unknown span role 'visual'",
        "task.d.jsonl:6: 'spans' must map a role to a list",
        "task.d.jsonl:7: needs a non-empty string 'prompt'",
        "task.d.jsonl:8: needs an 'answer'",
        "task.d.jsonl:9: split 'dev' is not one of ['train', 'test']",
        "task.d.jsonl:10: not valid JSON",
    ):
        assert expected in message, (expected, message)
    assert "d.jsonl:1:" not in message


def test_a_signal_needing_marks_names_the_rows_without_them(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    rows = [{"prompt": f"Let a={i}, b=5. Compute a*b.", "answer": 5 * i, "split": "train"} for i in range(1, 4)]
    rows[1]["spans"] = {"evidence": [[4, 12]]}
    data = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(ConfigError, match="method: signals \\['context_dependency'\\] need the prompt's 'evidence' "
                                          "tokens marked, but rows at lines 1, 3 of .*d.jsonl have no 'evidence' "
                                          "spans; add them"):
        load_train_config(config(tmp_path, data))
    assert load_train_config(config(tmp_path, data, method="dapo")).task.roles == ()


def test_missing_empty_and_non_utf8_files(tmp_path):
    with pytest.raises(ValueError, match="dataset file .*missing.jsonl not found"):
        build_task({"name": "jsonl", "path": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ValueError, match="path: required"):
        build_task({"name": "jsonl"})
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no rows"):
        build_task({"name": "jsonl", "path": str(tmp_path / "empty.jsonl")})
    (tmp_path / "latin.jsonl").write_bytes('{"prompt": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        build_task({"name": "jsonl", "path": str(tmp_path / "latin.jsonl")})
    only_train = write(tmp_path / "t.jsonl", [{"prompt": PROMPT, "answer": "20", "split": "train"}])
    with pytest.raises(ValueError, match="has no 'test' rows"):
        build_task({"name": "jsonl", "path": str(only_train)}).eval_examples("test", 3)


def test_a_marked_file_trains_with_pgpo_through_the_recipe(tmp_path):
    from tokenfocus.recipes.train import run_train

    rows = [{"prompt": f"Let a={i}, b={j}. Compute a*b.", "answer": i * j, "split": "train",
             "spans": {"evidence": [[4, 12 + (i > 9)]]}} for i in range(2, 14) for j in (3, 7)]
    data = write(tmp_path / "d.jsonl", rows)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "model": TINY, "task": {"name": "jsonl", "path": data.name, "n_train": 8}, "method": "pgpo",
        "reward": {"kind": "digits"}, "run": {"dir": str(tmp_path / "run"), "save_steps": 1},
        "trl": {"max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 4}}))
    run_dir, _ = run_train(load_train_config(path), log=lambda *a: None)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["signal/context_dependency/mean"] >= 0 and "time/counterfactual_s" in record
