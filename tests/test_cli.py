"""The command line: listings of the registries, and bad input refused before any model loads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tokenfocus import models
from tokenfocus.cli import app
from tokenfocus.config import method_presets
from tokenfocus.tasks import TASKS


def test_tasks_and_presets_list_every_registered_entry():
    runner = CliRunner()
    listed = runner.invoke(app, ["tasks"])
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in TASKS)
    presets = runner.invoke(app, ["presets"])
    assert presets.exit_code == 0, presets.output
    lines = presets.output.splitlines()
    assert {line.split()[0] for line in lines if not line.startswith(" ")} == set(method_presets())


@pytest.mark.parametrize("args, message", [
    (["--task", "arithmetc"], "did you mean 'arithmetic'"),
    (["--task", "gsm8k", "--path", "missing.jsonl"], "missing.jsonl"),
    (["--split", "validation"], "split 'validation' is not one of"),
])
def test_eval_refuses_a_bad_task_before_loading_a_model(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-llama", "--run-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
