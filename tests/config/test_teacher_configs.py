"""The teacher configs shipped in configs/teacher: the two teacher-making SFT configs validate, and every
teacher-guided train config trains two steps on tiny models (the teacher a saved tiny model), logging its term."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import tiny
from tokenfocus.config import load_train_config
from tokenfocus.config.sft import load_sft_config
from tokenfocus.io import latest_metrics
from tokenfocus.recipes.train import run_train

CONFIGS = Path(__file__).parents[2] / "configs" / "teacher"
TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"
TRAIN = sorted(p for p in CONFIGS.glob("*.yaml") if "teacher" in yaml.safe_load(p.read_text()))


def test_the_model_making_configs_validate_and_every_train_config_starts_from_one():
    """The student and the teacher of each teacher-guided config are models the make-* configs write: the student a
    1-epoch warm-up (the raw instruct model never writes the answer line, so its rollouts all score 0), the teacher
    three epochs on the same kind of gold solutions."""
    made = {}
    for name in ("make-teacher.yaml", "make-teacher-calc.yaml", "make-student.yaml", "make-student-calc.yaml"):
        config = load_sft_config(CONFIGS / name)
        assert len(config.rows) == 384 and config.otr is None
        made[f"{config.run_dir}/final"] = (name, config.trl["num_train_epochs"])
    assert len(TRAIN) == 6
    for path in TRAIN:
        data = yaml.safe_load(path.read_text())
        student, teacher = made[data["model"]], made[data["teacher"]["model"]]
        assert student[0].startswith("make-student") and teacher[0].startswith("make-teacher"), path.name
        assert student[1] < teacher[1] and student[0].endswith("calc.yaml") == teacher[0].endswith("calc.yaml")


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.name)
def test_each_teacher_config_trains_two_steps(tmp_path, path):
    teacher, tok = tiny(seed=9)
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    data = yaml.safe_load(path.read_text())
    data.update(model=TINY, run={"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 1})
    data["teacher"]["model"] = str(tmp_path / "teacher")
    data["task"]["n_train"] = 16
    data["trl"].update(max_steps=2, num_generations=4, per_device_train_batch_size=8, max_completion_length=8)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    run_dir, _ = run_train(load_train_config(config_path), log=lambda *a: None)
    rows = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(rows) == [1, 2]
    form = data["teacher"]["form"]
    assert ("loss/teacher_kl" in rows[2]) == (form == "loss")
    assert ("time/teacher_s" in rows[2]) == (form in ("advantage", "scope"))
    method = data["method"] if isinstance(data["method"], dict) else {}
    for signal in method.get("signals", []):  # teacher signals: scored, and the policy selected by them
        assert "time/teacher_signals_s" in rows[2] and f"signal/{signal['label']}/mean" in rows[2]
