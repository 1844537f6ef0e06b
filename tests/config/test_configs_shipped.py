"""Every train and study config shipped in configs/ validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tokenfocus.config import load_study_config, load_train_config
from tokenfocus.config.dpo import load_dpo_config

CONFIGS = Path(__file__).parents[2] / "configs"
STUDIES = sorted(p for p in CONFIGS.glob("*.yaml") if "arms" in yaml.safe_load(p.read_text()))


def test_configs_holds_only_studies_and_train_configs():
    """Method presets live in the package (tokenfocus/config/methods), not beside the study configs."""
    assert set(CONFIGS.glob("*.yaml")) == set(STUDIES)


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_validate(path):
    config = load_train_config(path)
    assert config.method.name and config.trl_args()["max_steps"] >= 1


@pytest.mark.parametrize("path", sorted((CONFIGS / "dpo").glob("*.yaml")), ids=lambda p: p.name)
def test_dpo_configs_validate_and_name_their_condition(path):
    config = load_dpo_config(path)
    assert len(config.rows) == 256 and config.trl_args()["max_steps"] >= 1
    expected = {"dpo.yaml": ("uniform", 0), "weighted.yaml": ("diff", 0), "barrier.yaml": ("uniform", 1.0),
                "tab-po.yaml": ("diff", 1.0)}[path.name]
    assert (config.weighting.mode, config.weighting.barrier) == expected


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_configs_validate(path):
    """A study without declared claims judges the flagship's and has its arms; one with claims has their arms and
    the full-token baseline they are judged against."""
    study = load_study_config(path)
    if study.claims:
        assert {"full"} | {c["arm"] for c in study.claims} <= set(study.arms)
    else:
        assert {"full", "random20", "anchors20", "explorers20", "low2high"} <= set(study.arms)
    for arm in study.arms:
        assert study.run_config(arm, study.seeds[0]).run_dir.name == f"{arm}-s{study.seeds[0]}"


def test_the_required_study_configs_exist():
    assert {p.name for p in STUDIES} >= {"quickstart.yaml", "study-arith.yaml", "study-pgpo.yaml", "study-ktr.yaml"}


def test_the_counterfactual_papers_have_train_configs_on_tasks_that_mark_their_roles():
    for name, task in (("pgpo", "facts"), ("video-ktr", "steps"), ("d3s", "arithmetic")):
        config = load_train_config(CONFIGS / "train" / f"{name}.yaml")
        assert config.task.name == task and config.method.name == name.replace("-", "_")


@pytest.mark.parametrize("name", ["study-arith", "study-pgpo", "study-otr", "study-tabpo", "study-cdpo"])
def test_committed_studies_still_match_their_configs(name):
    """A study grows across sessions: a field added to the code since its study.yaml was written (with its neutral
    default) must not read as a change, or the next slice refuses to run."""
    from tokenfocus.recipes.study import study_changes

    saved = yaml.safe_load((CONFIGS.parent / "docs" / "results" / name / "runs" / "study.yaml").read_text())
    assert study_changes(saved, load_study_config(CONFIGS / f"{name}.yaml").to_dict()) == []
