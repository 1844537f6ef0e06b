"""Nothing lost: a run directory is never replaced without --overwrite, a resume refuses a changed config unless
told, a torn metrics tail is set aside before appending; the same rules for analyze and eval outputs."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tokenfocus.cli import app
from tokenfocus.config import ConfigError, load_train_config
from tokenfocus.io import latest_metrics, read_jsonl
from tokenfocus.recipes.analyze import load_prompt_file
from tokenfocus.recipes.train import added_defaults, config_differences, run_train
from tokenfocus.rollout import PromptError

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"


def config_file(tmp_path, method="random20", max_steps=2, **run):
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump({
        "model": TINY, "task": {"name": "arithmetic", "tiers": ["D1"], "n_train": 16}, "method": method,
        "reward": {"kind": "digits"},
        "trl": {"max_steps": max_steps, "num_generations": 4, "per_device_train_batch_size": 8,
                "max_completion_length": 8, "learning_rate": 1e-3},
        "run": {"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 1, **run},
    }))
    return path


def test_a_new_run_never_replaces_a_non_empty_directory_without_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss/train": 5.0}\n')  # a run killed before a checkpoint
    config = load_train_config(config_file(tmp_path))
    with pytest.raises(ValueError, match="is not empty \\(metrics.jsonl\\); pass --overwrite"):
        run_train(config)
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss/train": 5.0}\n'  # untouched
    run_train(config, overwrite=True)
    rows = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(rows) == [1, 2] and rows[1]["loss/train"] != 5.0  # one run only, not two mixed
    with pytest.raises(ValueError, match="--resume continues a run and --overwrite replaces it"):
        run_train(config, resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is an existing file"):  # refused with the config, before any loading
        load_train_config(config_file(tmp_path), {"run.dir": str(tmp_path / "file")})


def test_resume_refuses_a_changed_config_and_names_the_difference(tmp_path):
    config = load_train_config(config_file(tmp_path, max_steps=2))
    run_train(config)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    changed = load_train_config(config_file(tmp_path, method="anchors20", max_steps=3))
    with pytest.raises(ValueError) as error:
        run_train(changed, resume=True)
    message = str(error.value)
    assert "resolved_method.name: 'random20' -> 'anchors20'" in message and "trl.max_steps: 2 -> 3" in message
    assert "--allow-config-change" in message
    run_train(changed, resume=True, allow_config_change=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved  # still describes the first steps
    assert yaml.safe_load((tmp_path / "run" / "config-resume-2.yaml").read_text())["method"] == "anchors20"
    assert sorted(latest_metrics(tmp_path / "run" / "metrics.jsonl")) == [1, 2, 3]


def test_a_field_added_later_with_its_neutral_default_is_no_difference_on_resume():
    """A run started before ``loss.sink_decorrelation`` existed resumes under the newer code; a non-default value of
    the new field, or a changed old one, is still a difference."""
    old = {"resolved_method": {"loss": {"beta": 0.0}}, "run": {"seed": 0}}
    same = {"resolved_method": {"loss": {"beta": 0.0, "sink_decorrelation": 0.0}}, "run": {"seed": 0}}
    assert config_differences(old, same) == ["resolved_method.loss.sink_decorrelation: '(absent)' -> 0.0"]
    assert config_differences(old, same, defaults=added_defaults()) == []
    turned_on = {"resolved_method": {"loss": {"beta": 0.0, "sink_decorrelation": 1.0}}, "run": {"seed": 0}}
    assert config_differences(old, turned_on, defaults=added_defaults()) == [
        "resolved_method.loss.sink_decorrelation: '(absent)' -> 1.0"]
    dropped = {"resolved_method": {"loss": {}}, "run": {"seed": 0}}  # a key the new config lacks stays a difference
    assert config_differences(old, dropped, defaults=added_defaults()) == [
        "resolved_method.loss.beta: 0.0 -> '(absent)'"]


def test_a_torn_metrics_tail_is_set_aside_before_the_resume_appends(tmp_path):
    config = load_train_config(config_file(tmp_path, max_steps=2))
    run_train(config)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as handle:
        handle.write('{"step": 3, "loss/tr')  # a writer killed mid-line
    run_train(load_train_config(config_file(tmp_path, max_steps=3)), resume=True, allow_config_change=True)
    rows = read_jsonl(metrics)  # every line parses: nothing glued to the torn one
    assert rows[-1].get("event") == "train_end" or "step" in rows[-1]
    (side,) = metrics.parent.glob("metrics.jsonl.torn-*")
    assert side.read_text() == '{"step": 3, "loss/tr'
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output


def test_analyze_outputs_are_never_replaced_silently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["analyze", "--model", TINY, "-p", "1+1?", "--max-new-tokens", "3", "-s", "position"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert (tmp_path / "runs" / "analyze" / "tokens.html").is_file()
    assert (tmp_path / "runs" / "analyze-2" / "tokens.html").is_file()  # the default --out never replaces
    refused = runner.invoke(app, [*args, "--out", "runs/analyze"])
    assert refused.exit_code == 2 and "is not empty; pass --overwrite" in refused.output
    assert runner.invoke(app, [*args, "--out", "runs/analyze", "--overwrite"]).exit_code == 0
    train_run = tmp_path / "train-run"
    train_run.mkdir()
    (train_run / "config.yaml").write_text("model: x\n")
    (train_run / "manifest.json").write_text('{"git": "kept"}')
    kept = runner.invoke(app, [*args, "--out", str(train_run), "--overwrite"])
    assert kept.exit_code == 2 and "holds a training run" in kept.output
    assert json.loads((train_run / "manifest.json").read_text()) == {"git": "kept"}
    (tmp_path / "a-file").write_text("")
    assert "is a file" in runner.invoke(app, [*args, "--out", "a-file"]).output


def test_prompt_files_non_utf8_and_json_lines_saved_as_json(tmp_path):
    latin = tmp_path / "p.txt"
    latin.write_bytes("Caf\xe9?\n".encode("latin-1"))
    with pytest.raises(PromptError, match="p.txt is not UTF-8"):
        load_prompt_file(latin)
    as_json = tmp_path / "p.json"
    as_json.write_text('{"prompt": "a?"}\n{"prompt": "b?"}\n')
    assert load_prompt_file(as_json) == ["a?", "b?"]
    as_json.write_text('["a?", {"question": "b?"}]')
    assert load_prompt_file(as_json) == ["a?", "b?"]
    as_json.write_text('[1]')
    with pytest.raises(PromptError, match="item 0"):
        load_prompt_file(as_json)


def test_eval_refuses_to_replace_an_earlier_result(tmp_path):
    runner = CliRunner()
    args = ["eval", "--model", TINY, "--run-dir", str(tmp_path / "r"), "--n", "2", "--k", "0", "--max-new-tokens", "2"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds this evaluation; pass --overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert len([r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if r.get("event") == "eval"]) == 2


def test_a_second_process_on_a_run_is_refused_before_it_loads_or_writes_anything(tmp_path, monkeypatch,
                                                                                  run_held_elsewhere):
    """Two processes on one run would write the same checkpoints: while another process holds the run (a study
    slice on the same arm, a forgotten train), run_train raises DirInUse naming that process, its command and the
    fix, before any model loads, and leaves the directory as it was; the CLI prints the same and exits 2 (its error
    code). The lock goes with its holder: once that process is killed (SIGKILL, nothing released by hand), the run
    starts. The lock file lies beside the run, so the new run's directory stays empty and --overwrite cannot delete
    the lock."""
    from tokenfocus import models
    from tokenfocus.io import DirInUse, run_lock

    config = load_train_config(config_file(tmp_path))
    run_dir = tmp_path / "run"
    holder = run_held_elsewhere(run_dir)
    loads = []
    monkeypatch.setattr(models, "load_model", lambda spec: loads.append(spec))
    with pytest.raises(DirInUse) as error:
        run_train(config)
    message = str(error.value)
    assert f"run {run_dir} is in use by process {holder.pid} (-c {run_dir} run --arms full)" in message
    assert f"kill -TERM {holder.pid} saves a checkpoint" in message and "run this again" in message
    assert loads == [] and not run_dir.exists()
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["train", str(config_file(tmp_path))])
    assert result.exit_code == 2 and f"is in use by process {holder.pid}" in result.output
    assert not run_dir.exists()
    holder.kill()
    holder.wait()
    with run_lock(run_dir):  # the same process may hold it around its own train (a study's arm does)
        run_train(config)
    assert (run_dir / "final").is_dir() and not (run_dir / f".{run_dir.name}.lock").exists()
    assert (tmp_path / ".run.lock").is_file()
    run_held_elsewhere(run_dir)
    with pytest.raises(DirInUse):  # an --overwrite from a second process is refused too: the finished run is kept
        run_train(config, overwrite=True)
    assert (run_dir / "final").is_dir()
