"""Study config validation (config/study.py): the study's own keys and every arm's train config -- model spec,
TRL ranges, policy dry run -- are checked before anything runs."""

from __future__ import annotations

import pytest
import yaml

from tokenfocus.config import ConfigError, load_study_config

TINY = "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128"


def study(tmp_path, **changes):
    data = {"model": TINY, "task": {"name": "arithmetic", "n_train": 8}, "arms": {"full": "dapo"},
            "seeds": [0], "dir": str(tmp_path / "out")}
    data.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def problems_of(path) -> str:
    with pytest.raises(ConfigError) as error:
        load_study_config(path)
    return str(error.value)


def test_every_arm_gets_the_new_checks(tmp_path):
    message = problems_of(study(tmp_path, arms={
        "wide": {"signals": ["attention_entropy"], "policy": {"name": "quantile", "ratio": 1.5}}, "full": "dapo"},
        train={"trl": {"learning_rate": -1.0, "num_generations": 1}}))
    assert "arm 'wide'" in message and "ratio must be in [0.0, 1.0], got 1.5" in message
    assert "trl.learning_rate must be >= 0" in message and "trl.num_generations must be >= 2" in message


@pytest.mark.parametrize("changes, expected", [
    ({"model": "tiny-llama:heads=0"}, "model: tiny-llama options must be >= 1: heads=0"),
    ({"task": {"name": ["arithmetic"]}}, "task.name: expected a registered task name"),
    ({"seeds": []}, "seeds: expected a non-empty list of ints"),
    ({"seeds": ["a"]}, "seeds: expected a non-empty list of ints"),
    ({"arms": {}}, "arms: expected a non-empty mapping"),
    ({"arms": ["full"]}, "study.arms: expected dict"),
    ({"samples": -1}, "samples must be >= 0"),
    ({"eval": {"n": 0, "splits": ["dev"]}}, "eval.n must be >= 1"),
    ({"eval": {"splits": ["dev"]}}, "eval.splits: 'dev': split 'dev' is not a split of task 'arithmetic'"),
    ({"eval": {"sets": {"in": {"split": "test", "tiers": {"D1": 500}}}}},
     "eval.sets: 'in': Could not draw 500 distinct test problems of tier D1"),
    ({"eval": {"sets": {"in": {"split": "test", "tiers": {"D7": 5}}}}}, "eval.sets: 'in': Unknown arithmetic tier"),
    ({"eval": {"sets": {"in": {"split": "tst"}}}}, "eval.sets: 'in': split 'tst' is not a split"),
    ({"eval": {"sets": {"in": {"split": "test", "tier": ["D1"]}}}}, "eval.sets.in: unknown key(s) ['tier']"),
    ({"eval": {"sets": {"in": {"tiers": "D1"}}}}, "eval.sets.in.tiers: expected a list of tiers or a mapping"),
    ({"eval": {"sets": {}}}, "eval.sets: expected a mapping {name: {split, tiers, n}}"),
    ({"eval": {"temperature": 0}}, "eval.temperature must be > 0"),
    ({"train": {"diagnostics_arms": ["ful"]}}, "train.diagnostics_arms: ['ful'] are not arms"),
    ({"train": {"save_steps": "often"}}, "train.save_steps: expected int"),
])
def test_study_problems_are_listed(tmp_path, changes, expected):
    assert expected in problems_of(study(tmp_path, **changes))


def test_numeric_strings_and_run_dir_file(tmp_path):
    config = load_study_config(study(tmp_path, samples="2", warmup={"learning_rate": "1e-5"}))
    assert config.samples == 2 and config.warmup.learning_rate == 1e-5
    (tmp_path / "taken").write_text("x")
    assert "dir: " in problems_of(study(tmp_path, dir=str(tmp_path / "taken")))


def test_a_warmup_study_does_not_check_the_not_yet_trained_model(tmp_path):
    """Arms train from dir/warmup/final, which the warm-up writes; the study's own model is checked instead."""
    config = load_study_config(study(tmp_path, warmup={"n_train": 8}))
    assert config.start_model.endswith("warmup/final")
    assert "model: " in problems_of(study(tmp_path, warmup={"n_train": 8}, model="tiny-llama:layers=0"))


def test_eval_sets_are_one_fixed_mix_for_the_whole_study(tmp_path):
    config = load_study_config(study(tmp_path, eval={
        "sets": {"in-dist": {"split": "test", "tiers": {"D2": 5, "D3": 3}}, "hard": {"split": "test", "tiers": ["H3"],
                                                                                  "n": 4}},
        "k": 4, "seed": 7}))
    assert config.eval.eval_sets() == {"in-dist": {"split": "test", "n": 8, "tiers": {"D2": 5, "D3": 3}, "task": None},
                                       "hard": {"split": "test", "n": 4, "tiers": ["H3"], "task": None}}
    assert config.eval.seed == 7 and config.eval.k == 4
    legacy = load_study_config(study(tmp_path, eval={"splits": ["test", "hard-test"], "n": 5}))
    assert legacy.eval.eval_sets() == {"test": {"split": "test", "n": 5, "tiers": None, "task": None},
                                       "hard-test": {"split": "hard-test", "n": 5, "tiers": None, "task": None}}
    # shared_prefill is recorded only when set: a study.yaml written before the key compares equal without it
    assert "shared_prefill" not in config.index()["eval"]
    shared = load_study_config(study(tmp_path, eval={"k": 4, "shared_prefill": True}))
    assert shared.index()["eval"]["shared_prefill"] is True


def test_declared_claims_are_checked_against_the_arms_and_sets(tmp_path):
    arms = {"full": "dapo", "pgpo": "pgpo"}
    task = {"name": "facts", "n_train": 8}
    eval_sets = {"sets": {"in-dist": {"split": "test", "tiers": {"F2": 3}}, "hard": {"split": "test",
                                                                                      "tiers": {"F4": 3}}}}
    good = [{"arm": "pgpo", "test": "beats", "set": "hard", "text": "PGPO helps", "paper": "2604.01840"}]
    loaded = load_study_config(study(tmp_path, arms=arms, task=task, eval=eval_sets, claims=good))
    assert loaded.claims == good and loaded.index()["claims"] == good
    message = problems_of(study(tmp_path, arms=arms, task=task, eval=eval_sets, claims=[
        {"arm": "full", "test": "beats", "text": "x"}, {"arm": "pgpo", "test": "wins", "text": "x", "set": "easy"},
        {"arm": "pgpo", "tset": "beats"}, "pgpo"]))
    for expected in ("claims[0].arm: 'full' must be an arm other than 'full' (the baseline)",
                     "claims[1].test: 'wins' is not one of ['beats', 'keeps_gain', 'preserves']",
                     "claims[1].set: 'easy' is not 'in-dist', 'hard' or an eval set [",
                     "claims[2]: unknown key 'tset'", "claims[2]: missing required key 'text'",
                     "claims[3]: expected a mapping"):
        assert expected in message, (expected, message)
    no_full = problems_of(study(tmp_path, arms={"dapo": "dapo", "pgpo": "pgpo"}, task=task, claims=good))
    assert "judged against an arm named 'full' (the baseline); the study has none" in no_full
    against = [{**good[0], "against": "dapo"}]  # a named baseline needs no arm called full
    assert load_study_config(study(tmp_path, arms={"dapo": "dapo", "pgpo": "pgpo"}, task=task, eval=eval_sets,
                                   claims=against)).claims == against
    message = problems_of(study(tmp_path, arms=arms, task=task, eval=eval_sets, claims=[
        {**good[0], "against": "opd"}, {**good[0], "against": "pgpo"}]))
    assert "claims[0].against: 'opd' is not an arm" in message
    assert "claims[1].arm: 'pgpo' must be an arm other than 'pgpo' (the baseline)" in message
