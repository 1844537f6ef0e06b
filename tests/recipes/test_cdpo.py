"""cDPO: contrastive estimation against a naive softmax at the predicting position, the first-wrong-digit label,
and the pipeline end to end on tiny models (pairs whose weights line up with DPOTrainer's completion tokens)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tokenfocus.config.dpo import build_dpo_config
from tokenfocus.models import load_model
from tokenfocus.recipes.cdpo import (CDPOWeightsConfig, completion_ids, parse_cdpo_config, run_cdpo_weights,
                                     score_completions)
from tokenfocus.recipes.dpo import run_dpo
from tokenfocus.signals.critical import contrastive_token_probs, first_wrong_digit

TINY = "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"


def test_contrastive_probs_equal_a_naive_softmax_at_the_predicting_position():
    positive, _ = load_model(TINY + ",seed=1")
    negative, _ = load_model(TINY + ",seed=2")
    ids = torch.randint(3, 40, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    got = contrastive_token_probs(positive, negative, ids, mask, beta=1.0, chunk=3)
    with torch.no_grad():
        z_pos, z_neg = positive(input_ids=ids, attention_mask=mask).logits, negative(input_ids=ids,
                                                                                   attention_mask=mask).logits
    for b in range(2):
        assert got[b, 0] == 0
        for t in range(1, 9):
            expected = torch.softmax(2 * z_pos[b, t - 1] - z_neg[b, t - 1], -1)[ids[b, t]] * mask[b, t]
            assert float(got[b, t]) == pytest.approx(float(expected), abs=1e-6), (b, t)
    same = contrastive_token_probs(positive, positive, ids, mask, beta=1.0)  # no contrast: the model's own p
    assert torch.allclose(same[0, 1:], torch.softmax(z_pos[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0], atol=1e-6)


def test_completions_scored_in_padded_batches_equal_each_scored_alone():
    positive, tokenizer = load_model(TINY + ",seed=1")
    negative, _ = load_model(TINY + ",seed=2")
    prompt = [{"role": "user", "content": "What is 47+38?"}]
    texts = ["47+38 = 85\nAnswer: 85", "85", "47 + 38 is 75, so the answer is 75", "Answer: 86"]
    for beta in (1.0, 0.0):
        batched = score_completions(positive, negative, tokenizer, prompt, texts, beta, batch_size=3)  # 2 batches
        assert len(batched) == len(texts)
        for text, (ids, probs) in zip(texts, batched):
            prompt_ids, alone_ids = completion_ids(tokenizer, prompt, [{"role": "assistant", "content": text}])
            row = torch.tensor([prompt_ids + alone_ids])
            alone = contrastive_token_probs(positive, negative, row, torch.ones_like(row), beta=beta)
            assert ids == alone_ids and len(probs) == len(alone_ids)
            assert probs == pytest.approx(alone[0, len(prompt_ids):].tolist(), abs=1e-6), (text, beta)
    # beta 0 is the positive model's own p(y_t): the negative model does not enter
    own = score_completions(positive, positive, tokenizer, prompt, texts, 0.0)
    assert [p for _, p in own] == [p for _, p in score_completions(positive, negative, tokenizer, prompt, texts, 0.0)]


def test_first_wrong_digit_is_a_digit_departure_only():
    gold = "47+38 = 85\nAnswer: 85"
    assert first_wrong_digit("47+38 = 86\nAnswer: 86", gold) == 9
    assert first_wrong_digit("47+38 = 75\nAnswer: 75", gold) == 8
    assert first_wrong_digit("47+38 is 85", gold) is None  # a change of format, not a slip
    assert first_wrong_digit(gold, gold) is None


def test_the_pipeline_writes_pairs_dpo_reads_token_for_token(tmp_path, monkeypatch):
    from tokenfocus.tasks.arithmetic import Arithmetic

    # a random tiny model never answers right: score by a property of the text so both classes exist
    monkeypatch.setattr(Arithmetic, "reward", lambda self, config: (lambda texts, answers, **_: [
        float(len(t) % 2) for t in texts]))
    config = {"model": TINY, "task": {"name": "arithmetic", "tiers": ["D1"]}, "out": str(tmp_path / "pairs.jsonl"),
              "n_prompts": 3, "samples": 4, "max_new_tokens": 6, "lora_epochs": 1.0, "continuations": 2,
              "check_responses": 1}
    settings, task, out = parse_cdpo_config(config)
    summary = run_cdpo_weights(settings, task, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["pairs"] == len(rows) > 0 and summary["correct"] + summary["incorrect"] == 12
    assert {"top1_hit_rate", "chance_top1", "model_own_top1_hit_rate"} <= set(summary["first_wrong_digit"])
    for row in rows:
        assert row["chosen_weights"] == [1.0] * len(row["chosen_weights"])  # only_neg
        assert all(0 <= w <= 1 for w in row["rejected_weights"])
    assert (tmp_path / "pairs.jsonl.summary.json").is_file() and not (tmp_path / ".pairs.jsonl.lora").exists()
    dpo = build_dpo_config({"model": TINY, "pairs": {"path": str(out)}, "weights": {"mode": "column"},
                            "trl": {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128},
                            "run": {"dir": str(tmp_path / "run"), "save_steps": 1}})
    run_dir, trainer = run_dpo(dpo)  # the column weights' lengths match DPOTrainer's completions, or it refuses
    assert trainer.tf_token_level and (run_dir / "final").is_dir()
    with pytest.raises(ValueError, match="exists"):
        run_cdpo_weights(settings, task, out)
    # the saved models feed the critical_token signal, shown by analyze like any other signal
    from typer.testing import CliRunner

    from tokenfocus.cli import app

    spec = json.dumps({"name": "critical_token", "positive": str(tmp_path / "positive"),
                       "negative": str(tmp_path / "negative")})
    result = CliRunner().invoke(app, ["analyze", "--model", TINY, "-p", "1+1?", "--max-new-tokens", "4", "-s", spec,
                                      "--out", str(tmp_path / "analyze")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "analyze" / "tokens.html").read_text()
    assert "critical_token" in page


def test_bad_settings_are_listed():
    from tokenfocus.config import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_cdpo_config({"samples": 0, "lora_lr": -1, "colour": 1})
    message = str(error.value)
    assert "task:" in message and "out:" in message and "samples must be >= 1" in message and "colour" in message
    assert CDPOWeightsConfig().problems() == []


def test_a_dpo_run_makes_cdpo_pairs_from_its_reference_once_and_shares_them(tmp_path, monkeypatch):
    """pairs: {task, cdpo: {...}}: the first run makes the weighted pairs from its reference (what a study's DPO arms
    need: no pairs file exists before the warm-up does), caches them beside the run directory (exported with the
    study), and the next arm reads the cache: the uniform baseline and the weighted arm train on the same pairs."""
    from tokenfocus.recipes import cdpo as cdpo_recipe
    from tokenfocus.recipes.dpo import pairs_cache
    from tokenfocus.tasks.arithmetic import Arithmetic

    monkeypatch.setattr(Arithmetic, "reward", lambda self, config: (lambda texts, answers, **_: [
        float(len(t) % 2) for t in texts]))
    made, make = [], cdpo_recipe.run_cdpo_weights
    monkeypatch.setattr(cdpo_recipe, "run_cdpo_weights", lambda settings, task, out, log=print: (
        made.append(settings), make(settings, task, out, log=log))[1])

    def config(arm, weights):
        return build_dpo_config({
            "model": TINY, "weights": weights, "run": {"dir": str(tmp_path / arm), "save_steps": 1},
            "pairs": {"task": {"name": "arithmetic", "tiers": ["D1"]},
                      "cdpo": {"n_prompts": 3, "samples": 4, "max_new_tokens": 6, "continuations": 0}},
            "trl": {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 128}})

    weighted = config("cdpo", {"mode": "column", "weight_chosen": False})
    assert weighted.rows == [] and weighted.sampling["cdpo"]["n_prompts"] == 3
    run_dir, trainer = run_dpo(weighted)
    assert trainer.tf_token_level and (run_dir / "final").is_dir()
    assert len(made) == 1 and made[0].model == TINY and made[0].save_models is False
    cache = pairs_cache(weighted)
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert rows and all(len(r["rejected_weights"]) >= 1 for r in rows)
    assert cache.with_name(cache.name + ".summary.json").is_file()
    assert not (tmp_path / "positive").exists()  # no model is saved beside a study's runs
    uniform = config("full", {"mode": "uniform"})
    assert pairs_cache(uniform) == cache
    run_dir, trainer = run_dpo(uniform)
    assert len(made) == 1 and not trainer.tf_token_level  # the cache was read; plain DPO on the same pairs
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["pairs_resolved"] == {"source": "task arithmetic: cDPO pairs made from the reference", "rows": len(rows)}


def test_cdpo_pairs_settings_a_run_cannot_use_are_refused_before_loading(tmp_path):
    from tokenfocus.config import ConfigError

    base = {"model": TINY, "run": {"dir": str(tmp_path / "run")}, "weights": {"mode": "column"}}
    cases = [
        ({"task": {"name": "arithmetic"}, "cdpo": {"model": "x", "samples": 0}, "n": 4},
         ["pairs: ['n'] do not apply to cdpo pairs", "pairs.cdpo: ['model'] are not settable here",
          "pairs.cdpo.samples must be >= 1"]),
        ({"task": {"name": "arithmetic", "tiers": ["Q9"]}, "cdpo": {}}, ["Q9"]),
        ({"path": "x.jsonl", "cdpo": {}}, ["on_policy and cdpo apply to task pairs only"]),
    ]
    for pairs, expected in cases:
        with pytest.raises(ConfigError) as error:
            build_dpo_config({**base, "pairs": pairs})
        assert all(e in str(error.value) for e in expected), (pairs, str(error.value))
