"""Train config validation (config/train.py): every problem listed at once, before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import GSM8K_DIR
import yaml

from tokenfocus import models
from tokenfocus.config import ConfigError, load_train_config

TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"


def test_config_problems_are_listed_together_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "model": TINY,
        "task": {"name": "gsm8k", "path": str(tmp_path / "missing.jsonl"), "n_train": "many"},
        "method": "anchors2O",
        "reward": {"timeout_s": -1},
        "trl": {"max_step": 3, "learning_rate": "fast", "loss_type": "dapo"},
        "run": {"dir": str(tmp_path / "r"), "save_steps": 0, "sed": 1},
    }))
    with pytest.raises(ConfigError) as error:
        load_train_config(bad)
    message = str(error.value)
    for expected in (
        "task.n_train: expected int, got str", "dataset file", "not found", "anchors2O", "reward.timeout_s must be > 0",
        "unknown GRPOConfig field 'max_step' (did you mean 'max_steps'?)", "trl.loss_type: set it through method",
        "run.save_steps must be >= 1", "run: unknown key 'sed' (did you mean 'seed'?)",
    ):
        assert expected in message, (expected, message)
    dup = tmp_path / "dup.yaml"
    dup.write_text("model: a\nmodel: b\n")
    with pytest.raises(ConfigError, match="duplicate key 'model' at line 2"):
        load_train_config(dup)
    with pytest.raises(ConfigError, match="top level: unknown key 'modle' \\(did you mean 'model'\\?\\)"):
        bad.write_text("modle: x\n")
        load_train_config(bad)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "m.yaml").write_text("policy: {name: full}\nloss: {preset: grpo}\n")
    path = tmp_path / "configs" / "c.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "task": {"name": "gsm8k", "path": "../data/train.jsonl"},
                                    "method": "m.yaml", "run": {"dir": str(tmp_path / "run")}}))
    config = load_train_config(path)
    assert config.task.options.path == str(tmp_path / "configs" / "../data/train.jsonl")
    assert config.task.train_examples(1)[0].answer == "2"
    assert config.method.loss.norm == "seq_mean_token_mean"
    assert config.to_dict()["task"]["path"] == config.task.options.path  # config.yaml records the resolved path


def test_overrides_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "method": "anchors20"}))
    config = load_train_config(path, {"run.dir": str(tmp_path / "x"), "trl.max_steps": 3})
    assert config.run_dir == tmp_path / "x" and config.trl_args()["max_steps"] == 3
    assert config.run.save_steps == 10 and config.trl_args()["save_steps"] == 10  # RunConfig's one default
    assert config.task.name == "arithmetic" and config.reward.kind == "answer"


def test_the_device_is_the_gpu_when_there_is_one_unless_the_config_says(tmp_path, monkeypatch):
    """A config trains on a laptop CPU and, unchanged, on a GPU machine (it once ran on the CPU there: use_cpu was a
    fixed default); an explicit trl.use_cpu wins. The same for dpo and sft configs."""
    import torch

    from tokenfocus.config.dpo import build_dpo_config
    from tokenfocus.config.sft import build_sft_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "method": "dapo", "run": {"dir": str(tmp_path / "x")}}))
    dpo = {"model": TINY, "pairs": {"task": {"name": "json_answers"}, "n": 4}, "run": {"dir": str(tmp_path / "d")}}
    sft = {"model": TINY, "data": {"task": {"name": "arithmetic"}, "n": 4}, "run": {"dir": str(tmp_path / "s")}}
    configs = [load_train_config(path), build_dpo_config(dpo), build_sft_config(sft)]  # validated on this CPU
    pinned = [load_train_config(path, {"trl.use_cpu": True}), build_sft_config({**sft, "trl": {"use_cpu": True}})]
    for cuda in (False, True):  # the device is read when the trainer's arguments are made
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        assert [config.trl_args()["use_cpu"] for config in configs] == [not cuda] * 3
        assert [config.trl_args()["use_cpu"] for config in pinned] == [True, True]


def write(tmp_path, name="c.yaml", **sections):
    data = {"model": TINY, "method": "dapo", "run": {"dir": str(tmp_path / "run")}}
    data.update(sections)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def problems_of(path) -> str:
    with pytest.raises(ConfigError) as error:
        load_train_config(path)
    return str(error.value)


def test_numeric_strings_are_numbers(tmp_path):
    """PyYAML reads 1e-5 (no dot) as the string "1e-5": in trl, our own sections and policy options it is a number."""
    path = tmp_path / "c.yaml"
    path.write_text(f"model: '{TINY}'\nrun: {{dir: {tmp_path / 'run'}}}\ntrl: {{learning_rate: 1e-5, max_steps: 1e1}}\n"
                    "reward: {timeout_s: 5e0}\nmethod: {signals: [attention_entropy], "
                    "policy: {name: quantile, ratio: 2e-1}}\n")
    assert yaml.safe_load(path.read_text())["trl"]["learning_rate"] == "1e-5"  # what PyYAML does
    config = load_train_config(path)
    assert config.trl_args()["learning_rate"] == 1e-5 and config.trl_args()["max_steps"] == 10
    assert config.reward.timeout_s == 5.0 and config.method.policy.options["ratio"] == 0.2


def test_trl_values_out_of_range_are_listed(tmp_path):
    message = problems_of(write(tmp_path, trl={
        "learning_rate": -1e-5, "temperature": -1.0, "per_device_train_batch_size": 0, "max_completion_length": -3,
        "num_generations": 1, "max_steps": "two", "top_p": 1.5}))
    for expected in ("trl.learning_rate must be >= 0, got -1e-05", "trl.temperature must be > 0",
                     "trl.per_device_train_batch_size must be >= 1, got 0", "trl.max_completion_length must be >= 1",
                     "trl.num_generations must be >= 2, got 1", "trl.max_steps: expected int, got str ('two')",
                     "trl.top_p must be in (0, 1]"):
        assert expected in message, (expected, message)


@pytest.mark.parametrize("policy, expected", [
    ({"name": "quantile", "ratio": 1.5}, "ratio must be in [0.0, 1.0], got 1.5"),
    ({"name": "random", "ratio": -0.2}, "ratio must be in [0.0, 1.0], got -0.2"),
    ({"name": "low2high", "w_min": 1.5}, "need w_min <= 1 <= w_max"),
    ({"name": "low2high", "schedule": "lin"}, "schedule='lin' is not one of"),
    ({"name": "pgpo", "signal": "attention_entropy", "tau": 1.0}, "tau must be in (0, 1)"),
    ({"name": "d3s_samples", "n_init": 2.0}, "ratio must be in"),
    ({"name": "quantile", "ratio": "lots"}, "quantile.ratio: expected float, got str ('lots')"),
])
def test_policy_options_refused_at_run_time_are_config_problems(tmp_path, monkeypatch, policy, expected):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    message = problems_of(write(tmp_path, method={"signals": ["attention_entropy"], "policy": policy}))
    assert "policy:" in message and expected in message, message


@pytest.mark.parametrize("method, expected", [
    ({"signals": "attention_entropy", "policy": "full"},
     "signals: expected a list of signal specs, got str ('attention_entropy')"),
    ({"signals": [{"name": "attention_entropy", "layers": "e"}], "policy": "full"},
     "signals: attention_entropy: layers='e': expected 'middle', 'all', an int or a list of ints"),
    ({"signals": [{"name": "attention_entropy", "layers": []}], "policy": "full"}, "layers=[]"),
    ({"policy": "full", "loss": "dapo"}, "loss: expected a mapping"),
    ({"policy": "full", "loss": {"preset": "dapo", "epsilon_low": "wide"}}, "loss.epsilon_low: expected float"),
])
def test_a_bare_string_where_a_list_or_mapping_is_expected_names_the_key(tmp_path, method, expected):
    assert expected in problems_of(write(tmp_path, method=method))


@pytest.mark.parametrize("sections, expected", [
    ({"reward": {"timeout_s": "fast"}}, "reward.timeout_s: expected float, got str ('fast')"),
    ({"diagnostics": {"every": "often"}}, "diagnostics.every: expected int, got str ('often')"),
    ({"diagnostics": {"layers": "e"}}, "diagnostics.layers='e'"),
    ({"reward": {"timeout_s": float("nan")}}, "reward.timeout_s: expected a number, got nan"),
    ({"model": "tiny-llama:layers=0"}, "model: tiny-llama options must be >= 1: layers=0"),
    ({"model": "no such model"}, "model: Unknown model spec"),
    ({"model": "/nonexistent/dir/model.gguf"}, "model: GGUF file not found"),
    ({"task": {"name": ["arithmetic"]}}, "task.name: expected a registered task name"),
])
def test_values_that_used_to_fail_late_are_listed(tmp_path, sections, expected):
    assert expected in problems_of(write(tmp_path, **sections))


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    assert "run.dir: " in problems_of(write(tmp_path, run={"dir": str(tmp_path / "taken")}))
    assert "which is a file" in problems_of(write(tmp_path, run={"dir": str(tmp_path / "taken" / "run")}))


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(f"model: {TINY}\ntrl: {{max_steps: 3\nrun: {{dir: x}}\n")
    with pytest.raises(ConfigError, match=rf"{path}, line \d+, column \d+: invalid YAML"):
        load_train_config(path)
    path.write_text("model: [a\n")
    with pytest.raises(ConfigError, match=rf"{path}, line 2"):
        load_train_config(path)


def test_offline_hub_id_that_is_not_cached_is_a_config_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = problems_of(write(tmp_path, model="nonexistent/model"))
    assert "model: 'nonexistent/model' is neither a local directory" in message and "HF_HUB_OFFLINE" in message


# GRPOConfig fields only TRL's own loss reads, a non-default value of each, and what the refusal points to.
LOSS_ONLY_TRL = [
    ("off_policy_mask_threshold", 0.5, "off-policy sequence mask"),
    ("use_bias_correction_kl", False, "method.loss.kl_ratio_correction"),
    ("entropy_coef", 0.01, "method.loss.entropy_coef"),
    ("use_adaptive_entropy", True, "method.loss.entropy_coef"),
    ("entropy_coef_min", 0.1, "method.loss.entropy_coef"),
    ("entropy_coef_max", 0.5, "method.loss.entropy_coef"),
    ("entropy_coef_delta", 0.01, "method.loss.entropy_coef"),
    ("entropy_target", 0.5, "method.loss.entropy_coef"),
    ("sapo_temperature_neg", 2.0, "method.loss.objective"),
    ("sapo_temperature_pos", 2.0, "method.loss.objective"),
    ("vespo_k_pos", 1.0, "method.loss.objective"),
    ("vespo_lambda_pos", 1.0, "method.loss.objective"),
    ("vespo_k_neg", 1.0, "method.loss.objective"),
    ("vespo_lambda_neg", 1.0, "method.loss.objective"),
    ("router_aux_loss_coef", 0.01, "router"),
]


@pytest.mark.parametrize("field, value, instead", LOSS_ONLY_TRL, ids=[f for f, _, _ in LOSS_ONLY_TRL])
def test_trl_fields_only_trls_own_loss_reads_are_refused_unless_default(tmp_path, monkeypatch, field, value, instead):
    """tokenfocus replaces GRPOTrainer._compute_loss: a loss setting only TRL's loss reads would be silently ignored,
    so a non-default value is a config problem (naming the field and what to use instead) before any model loads;
    TRL's default value passes."""
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    message = problems_of(write(tmp_path, trl={field: value}))
    assert f"trl.{field}" in message and instead in message, message
    from trl import GRPOConfig

    default = GRPOConfig.__dataclass_fields__[field].default
    assert load_train_config(write(tmp_path, "ok.yaml", trl={field: default})).trl[field] == default


@pytest.mark.parametrize("task, method, missing", [
    ("arithmetic", "pgpo", "'evidence'"),
    ("facts", "video_ktr", "'steps'"),
    ("gsm8k", "video_ktr_image", "'evidence'"),
])
def test_signals_needing_prompt_marks_on_a_task_without_them_are_refused_before_loading(tmp_path, monkeypatch, task,
                                                                                          method, missing):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    gsm8k = GSM8K_DIR / "train.jsonl"
    spec = {"name": task, **({"path": str(gsm8k)} if task == "gsm8k" else {})}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "task": spec, "method": method, "run": {"dir": str(tmp_path / "r")}}))
    with pytest.raises(ConfigError, match=f"method: signals .* need the prompt's {missing} tokens marked, but task "
                                          f"'{task}' marks"):
        load_train_config(path)
    path.write_text(yaml.safe_dump({"model": TINY, "task": {"name": "steps"}, "method": method,
                                    "run": {"dir": str(tmp_path / "r")}}))
    assert load_train_config(path).method.name == method  # the steps task marks both roles
