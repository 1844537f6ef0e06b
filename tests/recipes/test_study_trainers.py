"""A study whose arms are DPO pair weightings or SFT/OTR settings (``trainer: dpo | sft``): every arm and seed trains
with its recipe, is evaluated on the one fixed held-out set with the task's own reward, and the report renders;
train keys the trainer would ignore are refused."""

from __future__ import annotations

import json

import pytest
import yaml

from tokenfocus.config import ConfigError, load_study_config
from tokenfocus.config.dpo import DPORunConfig
from tokenfocus.config.sft import SFTRunConfig
from tokenfocus.recipes.study import run_study
from tokenfocus.report.study_report import render_report

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"


def _write(tmp_path, **data):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"model": TINY, "seeds": [0], "samples": 1, "dir": str(tmp_path / "out"),
                                    "eval": {"sets": {"in-dist": {"split": "test", "tiers": {"D1": 3}},
                                                      "hard": {"split": "test", "tiers": {"H1": 2}}},
                                             "k": 0, "max_new_tokens": 8}, **data}))
    return path


def test_a_dpo_study_trains_each_weighting_and_reports(tmp_path):
    path = _write(tmp_path, trainer="dpo", task={"name": "json_answers", "tiers": ["D1"]},
                  train={"pairs": {"task": {"name": "json_answers", "tiers": ["D1"]}, "n": 8}, "save_steps": 1,
                         "trl": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                                 "max_length": 128}},
                  arms={"full": {"mode": "uniform"}, "tab_po": {"mode": "diff", "barrier": 1.0}},
                  claims=[{"arm": "tab_po", "test": "beats", "text": "TAB-PO beats DPO", "paper": "2603.00025"}])
    study = load_study_config(path)
    assert isinstance(study.run_config("tab_po", 0), DPORunConfig)
    run_study(study, log=lambda m: None)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    assert index["trainer"] == "dpo"
    assert {(r["arm"], r["status"]) for r in index["runs"]} == {("initial", "done"), ("full", "done"),
                                                                 ("tab_po", "done")}
    metrics = [json.loads(line) for line in (tmp_path / "out" / "tab_po-s0" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/barrier" in row for row in metrics)
    result = json.loads((tmp_path / "out" / "tab_po-s0" / "eval" / "in-dist-final.json").read_text())
    assert result["task"] == "json_answers" and result["n"] == 3
    assert render_report(tmp_path / "out").is_file()


def test_an_sft_study_runs_plain_sft_and_otr_arms(tmp_path):
    path = _write(tmp_path, trainer="sft", task={"name": "arithmetic", "tiers": ["D1"]},
                  train={"data": {"task": {"name": "arithmetic", "tiers": ["D1"]}, "n": 16}, "save_steps": 1,
                         "trl": {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3,
                                 "max_length": 128}},
                  arms={"full": None, "otr": {"k": 4}})
    study = load_study_config(path)
    assert isinstance(study.run_config("otr", 0), SFTRunConfig) and study.run_config("full", 0).otr is None
    run_study(study, log=lambda m: None)
    rows = (tmp_path / "out" / "otr-s0" / "metrics.jsonl").read_text()
    assert "otr/gt_sample_frac" in rows
    assert "otr/gt_sample_frac" not in (tmp_path / "out" / "full-s0" / "metrics.jsonl").read_text()


def test_an_arm_may_change_its_trl_settings_and_only_its_own(tmp_path):
    """One DPO study holds the same weighting at two learning rates; the override reaches DPOConfig, the other arm
    keeps train.trl, and a bad override is refused at load naming the arm."""
    from trl import DPOConfig

    pairs = {"task": {"name": "json_answers", "tiers": ["D1"]}, "n": 8}
    trl = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 5e-6, "max_length": 128}
    path = _write(tmp_path, trainer="dpo", task={"name": "json_answers", "tiers": ["D1"]},
                  train={"pairs": pairs, "trl": trl},
                  arms={"full": {"mode": "uniform"}, "full_lo": {"mode": "uniform", "trl": {"learning_rate": 1e-6}},
                        "tab_po_lo": {"mode": "diff", "barrier": 1.0, "trl": {"learning_rate": 1e-6, "beta": 0.5}},
                        "plain_lo": {"trl": {"learning_rate": 1e-6}}})
    study = load_study_config(path)
    args = {arm: DPOConfig(**study.run_config(arm, 0).trl_args()) for arm in study.arms}
    assert {arm: a.learning_rate for arm, a in args.items()} == {"full": 5e-6, "full_lo": 1e-6, "tab_po_lo": 1e-6,
                                                                 "plain_lo": 1e-6}
    assert (args["full"].beta, args["tab_po_lo"].beta, args["full_lo"].max_steps) == (0.1, 0.5, 2)
    assert study.run_config("tab_po_lo", 0).weighting.barrier == 1.0
    assert study.run_config("plain_lo", 0).weighting.mode == "uniform"
    assert study.arms["full_lo"] == {"mode": "uniform", "trl": {"learning_rate": 1e-6}}  # what study.json records
    sft = _write(tmp_path, trainer="sft", task={"name": "arithmetic", "tiers": ["D1"]},
                 train={"data": {"task": {"name": "arithmetic", "tiers": ["D1"]}, "n": 16}, "trl": trl},
                 arms={"full": None, "full_lo": {"trl": {"learning_rate": 1e-6}},
                       "otr_lo": {"k": 4, "trl": {"learning_rate": 1e-6}}})
    study = load_study_config(sft)
    assert study.run_config("full_lo", 0).otr is None and study.run_config("otr_lo", 0).otr.k == 4
    assert study.run_config("full_lo", 0).trl["learning_rate"] == 1e-6 == study.run_config("otr_lo", 0).trl[
        "learning_rate"]
    assert study.run_config("full", 0).trl["learning_rate"] == 5e-6
    for bad, expected in (({"mode": "uniform", "trl": 1e-6}, "arm 'full_lo': trl: expected a mapping"),
                          ({"mode": "uniform", "trl": {"learning_rat": 1e-6}}, "learning_rat")):
        path = _write(tmp_path, trainer="dpo", task={"name": "json_answers", "tiers": ["D1"]},
                      train={"pairs": pairs, "trl": trl}, arms={"full": {"mode": "uniform"}, "full_lo": bad})
        with pytest.raises(ConfigError, match=expected):
            load_study_config(path)


def test_train_keys_a_trainer_would_ignore_are_refused(tmp_path):
    path = _write(tmp_path, trainer="dpo", task={"name": "json_answers"}, arms={"full": {"mode": "uniform"}},
                  train={"reward": {"kind": "digits"}, "trl": {"max_steps": 1}})
    with pytest.raises(ConfigError) as error:
        load_study_config(path)
    assert "['reward'] are not read by trainer 'dpo'" in str(error.value) and "train.pairs" in str(error.value)
    path = _write(tmp_path, trainer="ppo", task={"name": "arithmetic"}, arms={"full": "dapo"})
    with pytest.raises(ConfigError, match="trainer: 'ppo' is not one of"):
        load_study_config(path)


def test_a_teacher_study_makes_and_scores_its_teacher_and_each_arm_distils_its_own_way(tmp_path):
    """teacher: {sft: ...}: the study makes the teacher by longer SFT of ``model``, evaluates it as arm "teacher",
    and each arm's teacher settings (model defaulting to the study's) and reward reach its run."""
    path = _write(tmp_path, task={"name": "arithmetic", "tiers": ["D1"], "n_train": 16},
                  teacher={"sft": {"n_train": 16, "epochs": 1, "learning_rate": 1e-3, "batch_size": 8}},
                  train={"reward": {"kind": "digits"}, "save_steps": 1,
                         "trl": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8,
                                 "max_completion_length": 8, "learning_rate": 1e-3}},
                  arms={"full": "dapo", "opd": {"method": "dapo", "teacher": {"form": "loss", "coef": 1.0,
                                                                             "rl": False}},
                        "failed_b": {"teacher": {"form": "advantage", "gate": "failed"},
                                     "reward": {"kind": "answer", "answer_line_only": True}}},
                  eval={"sets": {"in-dist": {"split": "test", "tiers": {"D1": 3}},
                                 "long": {"task": {"name": "long_facts"}, "tiers": {"L20": 2}}},
                        "k": 0, "max_new_tokens": 8})
    study = load_study_config(path)
    teacher = str(tmp_path / "out" / "teacher" / "final")
    assert study.teacher_model == teacher and study.run_config("full", 0).teacher is None
    opd = study.run_config("opd", 0)
    assert opd.teacher == teacher and opd.distill.form == "loss" and opd.distill.rl is False
    failed = study.run_config("failed_b", 0)
    assert failed.distill.gate == "failed" and failed.reward.kind == "answer" and failed.reward.answer_line_only
    assert study.run_config("full", 0).reward.kind == "digits"
    run_study(study, log=lambda m: None)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    assert index["teacher"] == {"sft": {"n_train": 16, "epochs": 1, "learning_rate": 1e-3, "batch_size": 8}}
    assert {(r["arm"], r["status"]) for r in index["runs"]} == {
        ("initial", "done"), ("teacher", "done"), ("full", "done"), ("opd", "done"), ("failed_b", "done")}
    assert (tmp_path / "out" / "teacher" / "eval" / "in-dist-final.json").is_file()
    long = json.loads((tmp_path / "out" / "opd-s0" / "eval" / "long-final.json").read_text())
    assert long["task"] == "long_facts" and long["n"] == 2  # an eval set of another task: a skill to keep
    metrics = (tmp_path / "out" / "opd-s0" / "metrics.jsonl").read_text()
    assert "loss/teacher_kl" in metrics and "loss/teacher_kl" not in (tmp_path / "out" / "full-s0" /
                                                                      "metrics.jsonl").read_text()
    assert "teacher" in render_report(tmp_path / "out").read_text()


def test_a_distilling_slice_makes_the_teacher_before_the_warmup_and_a_teacher_free_one_leaves_it(tmp_path,
                                                                                                 monkeypatch):
    """Two slices started together on a new machine make the two starting models side by side: the teacher-free
    slice the warm-up, the distilling slice the teacher first (then it waits for the warm-up, ``run_warmup``'s lock)."""
    import tokenfocus.recipes.warmup as warmup

    made = []

    def record(model, task, config, out_dir, log=print):
        made.append(out_dir.name)
        if len(made) == 2 or out_dir.name == "warmup":
            raise KeyboardInterrupt  # stop the slice here: only the order is tested

    monkeypatch.setattr(warmup, "run_warmup", record)
    path = _write(tmp_path, task={"name": "arithmetic", "tiers": ["D1"], "n_train": 16},
                  warmup={"n_train": 8, "epochs": 1},
                  teacher={"sft": {"n_train": 16, "epochs": 1, "learning_rate": 1e-3, "batch_size": 8}},
                  arms={"full": "dapo", "opd": {"method": "dapo", "teacher": {"form": "loss", "rl": False}}})
    study = load_study_config(path)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, log=lambda m: None, arms=["full"])
    assert made == ["warmup"]
    made.clear()
    with pytest.raises(KeyboardInterrupt):
        run_study(study, log=lambda m: None, arms=["opd"])
    assert made == ["teacher", "warmup"]


def test_teacher_settings_a_study_cannot_run_are_refused_before_anything_loads(tmp_path):
    base = {"task": {"name": "arithmetic", "tiers": ["D1"]}, "train": {"reward": {"kind": "digits"}}}
    cases = [
        ({"arms": {"opd": {"teacher": {"form": "loss"}}}}, "its teacher has no model"),
        ({"teacher": {"model": TINY, "sft": {"n_train": 4}}, "arms": {"full": "dapo"}}, "give exactly one of model"),
        ({"teacher": {"sft": {"n_train": 0}}, "arms": {"full": "dapo"}}, "teacher.sft.n_train must be >= 1"),
        ({"teacher": {"model": TINY}, "arms": {"teacher": "dapo"}}, "'teacher' is reserved"),
        ({"teacher": {"model": TINY}, "arms": {"x": {"method": "dapo", "policy": {}}}}, "move ['policy'] into"),
        ({"teacher": {"model": TINY}, "arms": {"x": {"teacher": {"coef": -1}}}}, "coef must be >= 0"),
        ({"arms": {"full": "dapo"}, "eval": {"sets": {"long": {"task": {"name": "long_facts"}, "tiers": {"D1": 2}}}}},
         "'long': Unknown long_facts tier(s) ['D1']"),
        ({"arms": {"full": "dapo"}, "eval": {"sets": {"long": {"task": "long_facts"}}}}, "sets.long.task: expected"),
    ]
    for extra, expected in cases:
        with pytest.raises(ConfigError) as error:
            load_study_config(_write(tmp_path, **{**base, **extra}))
        assert expected in str(error.value), (extra, str(error.value))


def test_a_slice_of_teacher_free_arms_neither_makes_nor_scores_the_teacher(tmp_path):
    """A study grows in slices, one per process: the GRPO baseline may run while another process makes the teacher
    and scores it. So a slice of arms that do not distil leaves the teacher alone, even once it exists; a slice that
    distils makes it, scores it, and writes what a stop left missing."""
    path = _write(tmp_path, task={"name": "arithmetic", "tiers": ["D1"], "n_train": 16},
                  teacher={"sft": {"n_train": 16, "epochs": 1, "learning_rate": 1e-3, "batch_size": 8}},
                  train={"reward": {"kind": "digits"},
                         "trl": {"max_steps": 1, "num_generations": 4, "per_device_train_batch_size": 8,
                                 "max_completion_length": 8, "learning_rate": 1e-3}},
                  arms={"full": "dapo", "opd": {"method": "dapo", "teacher": {"form": "loss", "rl": False}}},
                  seeds=[0, 1])
    study = load_study_config(path)
    assert [study.distils(arm) for arm in study.arms] == [False, True]
    out = tmp_path / "out"
    run_study(study, arms=["full"], seeds=[0], log=lambda m: None)
    assert not (out / "teacher").exists()
    arms = {r["arm"] for r in json.loads((out / "study.json").read_text())["runs"]}
    assert arms == {"initial", "full"}
    run_study(study, arms=["opd"], seeds=[0], log=lambda m: None)
    assert (out / "teacher" / "final" / "config.json").is_file()
    assert (out / "teacher" / "eval" / "in-dist-final.json").is_file()
    (out / "teacher" / "eval" / "in-dist-final.json").unlink()  # stopped before its evaluation was written
    run_study(study, arms=["full"], seeds=[1], log=lambda m: None)
    assert not (out / "teacher" / "eval" / "in-dist-final.json").exists()
    run_study(study, arms=["opd"], seeds=[1], log=lambda m: None)
    assert (out / "teacher" / "eval" / "in-dist-final.json").is_file()
