"""Every preset config parses; bad configs list all their problems at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenfocus.methods import ConfigError, MethodConfig

import yaml

ALL = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
STUDIES = [p for p in ALL if "arms" in yaml.safe_load(p.read_text())]
CONFIGS = [p for p in ALL if p not in STUDIES]  # method configs (signals + policy + loss)


def test_there_are_paper_presets():
    assert len(CONFIGS) >= 10
    index = (Path(__file__).parents[1] / "configs" / "PAPERS.md").read_text()
    for path in CONFIGS:
        assert path.name in index, f"{path.name} is not listed in configs/PAPERS.md"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    config = MethodConfig.from_yaml(path)
    assert config.paper and config.policy["name"]


def test_bad_config_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "signals: [attention_entropi]\n"
        "policy: {name: quantile, rate: 0.2}\n"
        "loss: {preset: dapo, norm: mean, epsilon: 0.2}\n"
        "optimiser: adam\n"
    )
    with pytest.raises(ConfigError) as error:
        MethodConfig.from_yaml(bad)
    message = str(error.value)
    for expected in ("unknown key(s) ['optimiser']", "Unknown signal 'attention_entropi'", "unknown option(s) ['rate']",
                     "loss: unknown option(s) ['epsilon']"):
        assert expected in message, message


def test_duplicate_yaml_keys_are_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("policy: {name: full}\npolicy: {name: random}\n")
    with pytest.raises(ConfigError, match="duplicate key 'policy' at line 2"):
        MethodConfig.from_yaml(dup)


def test_out_of_range_loss_values(tmp_path):
    bad = tmp_path / "range.yaml"
    bad.write_text("loss: {preset: dapo, epsilon_low: 1.5, beta: -1}\n")
    with pytest.raises(ConfigError, match="epsilon_low.*beta and entropy_coef must be >= 0"):
        MethodConfig.from_yaml(bad)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "train").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_train_configs_validate(path):
    from tokenfocus.train_config import load_train_config

    config = load_train_config(path)
    assert config.resolved_method is not None and config.trl_args()["max_steps"] >= 1


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_configs_validate(path):
    from tokenfocus.study import load_study_config

    study = load_study_config(path)
    assert {"full", "random20", "anchors20", "explorers20", "low2high"} <= set(study.arms)


def test_the_required_study_configs_exist():
    assert {p.name for p in STUDIES} >= {"quickstart.yaml", "study-arith.yaml"}
