"""`tokenfocus study` end to end on a tiny model: every arm and seed, the warm-up, evidence gathering, resuming
without rerunning, and the report rendered from the study's own files."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml

from tokenfocus.config import load_study_config
from tokenfocus.recipes.evidence import run_evidence
from tokenfocus.recipes.study import run_study
from tokenfocus.report.study_report import CLAIMS, load_runs, render_report, verdicts


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    config = root / "study.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128",
        "task": {"name": "arithmetic", "tiers": ["D1", "D2"], "n_train": 64},
        "train": {"reward": {"kind": "digits"}, "save_steps": 2,
                  "trl": {"max_steps": 3, "num_generations": 4, "per_device_train_batch_size": 8,
                          "max_completion_length": 12, "learning_rate": 1e-3},
                  "diagnostics": {"every": 2, "project_dim": 256, "bootstrap": 4}},
        "arms": {"full": "dapo", "random20": "random20", "anchors20": "anchors20", "explorers20": "explorers20",
                 "low2high": "low2high"},
        "seeds": [0, 1],
        "eval": {"splits": ["test", "hard-test"], "n": 6, "k": 0, "max_new_tokens": 8},
        "samples": 2,
        "dir": str(root / "out"),
        "warmup": {"n_train": 16, "epochs": 1, "learning_rate": 1e-3, "batch_size": 8},
    }))
    study = load_study_config(config)
    run_study(study, log=lambda m: None)
    run_evidence(root / "out", n=4, max_new_tokens=6, log=lambda m: None)
    return root, study


def test_evidence_gathering_numbers_for_every_model(study_dir):
    """Attention mass on the prompt and on its number tokens (the operand digits), for every trained model
    and the starting model; the digit marks count exactly the expression's digits."""
    from tokenfocus.tasks import generate_problems

    root, study = study_dir
    index = json.loads((root / "out" / "study.json").read_text())
    for run in index["runs"]:
        result = json.loads((root / "out" / run["dir"] / "evidence.json").read_text())
        digits = [sum(ch.isdigit() for ch in p.expression) for p in generate_problems(4, split="test", seed=0)]
        assert result["evidence_tokens_per_prompt"] == pytest.approx(sum(digits) / 4)
        for key in ("prompt_mass/all", "prompt_mass/anchors", "prompt_mass/explorers", "evidence_mass/all"):
            assert 0.0 <= result[key] <= 1.0, (run["dir"], key)
        assert result["evidence_mass/all"] <= result["prompt_mass/all"] + 1e-6  # the digits are part of the prompt
        expected_model = str(root / "out" / "warmup" / "final") if run["arm"] == "initial" else str(
            root / "out" / run["dir"] / "final")
        assert result["model"] == expected_model
    messages = []
    assert run_evidence(root / "out", n=4, max_new_tokens=6, log=messages.append) == []  # all there: skipped
    assert len(messages) == len(index["runs"]) and all("skipped" in m for m in messages)
    with pytest.raises(ValueError, match="neither a study directory"):
        run_evidence(root)


def test_study_runs_every_arm_and_seed_and_resumes_without_rerunning(study_dir):
    root, study = study_dir
    index = json.loads((root / "out" / "study.json").read_text())
    # The starting model is evaluated once (seed None): every arm and seed is scored on the same problems.
    assert sorted((r["arm"], r["seed"]) for r in index["runs"] if r["arm"] != "initial") == sorted(
        (a, s) for a in study.arms for s in (0, 1))
    assert [r["seed"] for r in index["runs"] if r["arm"] == "initial"] == [None]
    assert all(r["status"] == "done" for r in index["runs"])
    for run in index["runs"]:
        run_dir = root / "out" / run["dir"]
        assert (run_dir / "eval" / "test-final.json").is_file()
        assert run["arm"] == "initial" or (run_dir / "samples" / "tokens.jsonl").is_file()
        # A finished run keeps final/ and drops its checkpoints (never resumed; 1.6 GB each on SmolLM2).
        assert run["arm"] == "initial" or ((run_dir / "final").is_dir() and not list(run_dir.glob("checkpoint-*")))
    # Every arm trains from the warm-up model, which SFT moved away from the base model.
    warm = root / "out" / "warmup" / "final"
    assert all(yaml.safe_load((root / "out" / r["dir"] / "config.yaml").read_text())["model"] == str(warm)
               for r in index["runs"] if r["arm"] != "initial")
    from tokenfocus.models import load_model

    base, _ = load_model(study.model)
    tuned, _ = load_model(str(warm))
    changed = [n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert len(changed) > 10
    sft_losses = [row["loss/train"] for row in map(json.loads, (warm.parent / "metrics.jsonl").open())
                  if "loss/train" in row]
    assert len(sft_losses) == 2 and all(math.isfinite(v) for v in sft_losses)  # 16 rows / batch 8
    # The gradient diagnostics also log evidence gathering: attention mass on the prompt.
    diag_rows = [row for row in map(json.loads, (root / "out" / "full-s0" / "metrics.jsonl").open())
                 if "diag/prompt_mass/all" in row]
    assert diag_rows and all(0.0 <= row["diag/prompt_mass/all"] <= 1.0 for row in diag_rows)
    # Same initial model, data and sampling seed: every arm sees the same first generation batch.
    first = {r["arm"]: [json.loads(line) for line in (root / "out" / r["dir"] / "metrics.jsonl").open()][0]
             for r in index["runs"] if r["seed"] == 0 and r["arm"] != "initial"}
    assert len({round(row["reward/mean"], 9) for row in first.values()}) == 1
    # Interrupt: drop one run's results; a rerun trains only that one.
    shutil.rmtree(root / "out" / "low2high-s1")
    messages = []
    run_study(study, log=messages.append)
    trained = [m for m in messages if m.startswith("[") and ("training" in m or "resuming" in m)]
    assert len(trained) == 1 and "low2high s1" in trained[0]
    assert sum("skipped" in m for m in messages) == 9
    # Same problems, in the same order, for the starting model and every trained model.
    prompts = {r["dir"]: [p["prompt"] for p in json.loads(
        (root / "out" / r["dir"] / "eval" / "test-final.json").read_text())["problems"]] for r in index["runs"]}
    assert len({tuple(v) for v in prompts.values()}) == 1 and len(next(iter(prompts.values()))) == 6
    assert any("warm-up model found, reused" in m for m in messages)
    assert not any(m.startswith("[initial") for m in messages)  # the starting model is not evaluated again
    # Stopped while its results were written (eval, drift, samples come after final/): one run lost its samples and
    # drift, another its second eval set. A rerun trains neither and writes only what each lacks.
    stopped, half = root / "out" / "random20-s0", root / "out" / "anchors20-s1"
    (stopped / "drift.json").unlink()
    (stopped / "samples" / "tokens.jsonl").unlink()
    (half / "eval" / "hard-test-final.json").unlink()
    kept = {path: path.stat().st_mtime_ns for path in (stopped / "eval" / "test-final.json",
                                                      stopped / "eval" / "hard-test-final.json",
                                                      half / "eval" / "test-final.json", half / "drift.json")}
    eval_lines = {d: sum('"event": "eval"' in line for line in (d / "metrics.jsonl").open()) for d in (stopped, half)}
    messages = []
    run_study(study, log=messages.append)
    assert not [m for m in messages if "training" in m or "resuming" in m]
    finishing = [m for m in messages if "writing what is missing" in m]
    assert finishing == ["[random20 s0] trained; writing what is missing: drift.json, samples/tokens.jsonl",
                         "[anchors20 s1] trained; writing what is missing: eval/hard-test-final.json"]
    assert (stopped / "drift.json").is_file() and (stopped / "samples" / "tokens.jsonl").is_file()
    assert (half / "eval" / "hard-test-final.json").is_file()
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # what was there is not written again
    assert {d: sum('"event": "eval"' in line for line in (d / "metrics.jsonl").open()) for d in eval_lines} == {
        stopped: eval_lines[stopped], half: eval_lines[half] + 1}
    assert sum("skipped" in m for m in messages) == 8


def test_the_report_renders_from_the_study_files(study_dir):
    """The study's own files carry everything the report reads: every claim gets a verdict, every figure a PNG.
    (The verdict logic itself is tested on constructed runs in tests/report/test_study_report.py.)"""
    root, _ = study_dir
    runs = load_runs(root / "out")
    assert any(run["weights"] for run in runs if run["arm"] == "low2high")  # policy_weights.jsonl was logged
    claims = verdicts(runs)
    assert set(claims) == {key for key, _ in CLAIMS}
    assert claims["random20_recovers_full"][0] == "inconclusive"  # a random model's accuracy is at the floor
    assert all(evidence for _, evidence in claims.values())
    render_report(root / "out")
    assert {p.name for p in (root / "out" / "plots").glob("*.png")} == {
        "reward.png", "accuracy.png", "grad_cos.png", "grad_norm.png", "entropy.png", "weights.png", "evidence.png"}


def test_a_failing_run_does_not_stop_the_study(tmp_path, monkeypatch):
    """random20 fails at seed 0 only: every other arm x seed still runs, study.json records the failure with its
    error, the log names the arm and seed, and run_study ends with StudyRunsFailed listing it. (Training,
    evaluation and loading are stubbed: this is the study's control flow.)"""
    from tokenfocus import models
    from tokenfocus.recipes import study as study_recipe
    from tokenfocus.recipes import train as train_recipe

    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny-llama", "task": {"name": "arithmetic", "n_train": 8},
        "arms": {"full": "dapo", "random20": "random20", "low2high": "low2high"}, "seeds": [0, 1],
        "eval": {"splits": ["test"], "n": 2}, "samples": 0, "dir": str(tmp_path / "out")}))
    study = load_study_config(config)

    def fake_train(cfg, resume=False, log=print, overwrite=False):
        if cfg.run_dir.name == "random20-s0":
            raise RuntimeError("CUDA out of memory")
        (cfg.run_dir / "final").mkdir(parents=True)
        return cfg.run_dir, None

    def fake_eval(model, tokenizer, study, run_dir):
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / "test-final.json").write_text("{}")

    monkeypatch.setattr(train_recipe, "run_train", fake_train)
    monkeypatch.setattr(models, "load_model", lambda spec: (None, None))
    monkeypatch.setattr(study_recipe, "_evaluate_sets", fake_eval)
    monkeypatch.setattr(study_recipe, "_write_drift", lambda *args: None)
    monkeypatch.setattr(study_recipe, "model_fingerprint", lambda model: "f")
    messages = []
    with pytest.raises(study_recipe.StudyRunsFailed, match=r"1 run\(s\) failed: random20 s0 \(RuntimeError: CUDA out"):
        run_study(study, log=messages.append)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    status = {(r["arm"], r["seed"]): r["status"] for r in index["runs"]}
    assert status == {**{(a, s): "done" for a in ("full", "random20", "low2high") for s in (0, 1)},
                      ("initial", None): "done", ("random20", 0): "failed"}
    failed = next(r for r in index["runs"] if r["status"] == "failed")
    assert failed["error"] == "RuntimeError: CUDA out of memory" and "fake_train" in failed["traceback"]
    assert "[random20 s0] failed: RuntimeError: CUDA out of memory" in messages
    # Rerunning retries the failed run only.
    monkeypatch.setattr(train_recipe, "run_train", lambda cfg, resume=False, log=print, overwrite=False: (
        (cfg.run_dir / "final").mkdir(parents=True), (cfg.run_dir, None))[1])
    messages.clear()
    run_study(study, log=messages.append)
    assert [m for m in messages if "training" in m] == [f"[random20 s0] training -> {tmp_path / 'out' / 'random20-s0'}"]


def test_a_study_may_grow_but_not_change_under_its_runs(tmp_path):
    """Adding arms or seeds continues a study; changing what its finished runs were trained with is refused."""
    from tokenfocus.recipes.study import run_study, study_changes

    old = {"model": "m", "arms": {"full": "dapo"}, "seeds": [0], "train": {"trl": {"learning_rate": 1e-6}},
           "description": "a"}
    grown = {**old, "arms": {"full": "dapo", "anchors20": "anchors20"}, "seeds": [0, 1], "description": "b"}
    assert study_changes(old, grown) == []
    # A study.yaml from before the report's note and see-also existed continues with them set or not.
    assert study_changes(old, {**grown, "note": "", "see_also": None}) == []
    assert study_changes(old, {**grown, "note": "read this first", "see_also": "../README.md"}) == []
    assert study_changes(old, {**grown, "arms": {"full": "grpo"}}) == ["arms.full: 'dapo' -> 'grpo'"]
    assert study_changes(old, {**old, "train": {"trl": {"learning_rate": 1e-5}}}) == [
        "train.trl.learning_rate: 1e-06 -> 1e-05"]

    class Study:  # only what run_study reads before anything runs
        dir = str(tmp_path)
        arms = {"full": "dapo"}
        seeds = [0]

        def to_dict(self):
            return {**old, "model": "other"}

    (tmp_path / "study.yaml").write_text(__import__("yaml").safe_dump(old))
    with pytest.raises(ValueError, match="(?s)model: 'm' -> 'other'.*--allow-config-change"):
        run_study(Study())


def _stub_study(tmp_path, monkeypatch, arms=("full", "random20"), seeds=(0, 1)):
    """A study whose training, evaluation and loading are stubbed (the study's control flow and files only)."""
    from tokenfocus import models
    from tokenfocus.recipes import study as study_recipe
    from tokenfocus.recipes import train as train_recipe

    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny-llama", "task": {"name": "arithmetic", "n_train": 8},
        "arms": {arm: "dapo" if arm == "full" else arm for arm in arms}, "seeds": list(seeds),
        "eval": {"sets": {"in-dist": {"split": "test", "tiers": {"D2": 3}}}}, "samples": 0,
        "dir": str(tmp_path / "out")}))

    def fake_train(cfg, resume=False, log=print, overwrite=False):
        (cfg.run_dir / "final").mkdir(parents=True)
        (cfg.run_dir / "final" / "model.safetensors").write_text("heavy")
        (cfg.run_dir / "checkpoint-2").mkdir()
        (cfg.run_dir / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
        (cfg.run_dir / "config.yaml").write_text("model: x\n")
        return cfg.run_dir, None

    def fake_eval(model, tokenizer, study, run_dir):
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / "in-dist-final.json").write_text('{"pass@1": 0.5, "problems": []}')

    monkeypatch.setattr(train_recipe, "run_train", fake_train)
    monkeypatch.setattr(models, "load_model", lambda spec: (None, None))
    monkeypatch.setattr(study_recipe, "_evaluate_sets", fake_eval)
    monkeypatch.setattr(study_recipe, "_write_drift", lambda model, tok, start, study, run_dir: (
        run_dir / "drift.json").write_text('{"l2": 1.0}'))
    monkeypatch.setattr(study_recipe, "model_fingerprint", lambda model: "fingerprint-a")
    return load_study_config(config), study_recipe


def test_a_study_runs_slice_by_slice_and_exports_light_files(tmp_path, monkeypatch):
    """--arms/--seeds run one slice; study.json keeps the other slices' entries; --export copies the light files
    (config, metrics, eval, drift; no model, no checkpoint) and merges the index, so slices run on different
    machines meet in one committed folder."""
    study, study_recipe = _stub_study(tmp_path, monkeypatch)
    dest = tmp_path / "committed"
    run_study(study, log=lambda m: None, arms=["full"], seeds=[0], export=dest)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [(r["arm"], r["seed"]) for r in index["runs"]] == [("initial", None), ("full", 0)]
    assert index["warmup_fingerprint"] == "fingerprint-a"
    run_study(study, log=lambda m: None, arms=["random20"], seeds=[1], export=dest)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    assert sorted((r["arm"], str(r["seed"])) for r in index["runs"]) == [
        ("full", "0"), ("initial", "None"), ("random20", "1")]
    exported = json.loads((dest / "study.json").read_text())
    assert sorted(r["dir"] for r in exported["runs"]) == ["full-s0", "initial", "random20-s1"]
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["full-s0/config.yaml", "full-s0/drift.json", "full-s0/eval/in-dist-final.json",
                     "full-s0/metrics.jsonl", "initial/eval/in-dist-final.json", "random20-s1/config.yaml",
                     "random20-s1/drift.json", "random20-s1/eval/in-dist-final.json", "random20-s1/metrics.jsonl",
                     "study.json", "study.yaml"]
    # A slice from another machine: merged by another study dir into the same export.
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "out", other)
    index = json.loads((other / "study.json").read_text())
    index["runs"] = [{"arm": "full", "seed": 1, "dir": "full-s1", "status": "done"}]
    (other / "study.json").write_text(json.dumps(index))
    shutil.copytree(other / "full-s0", other / "full-s1")
    study_recipe.export_light(other, dest)
    assert sorted(r["dir"] for r in json.loads((dest / "study.json").read_text())["runs"]) == [
        "full-s0", "full-s1", "initial", "random20-s1"]
    # ... but not one that started from another warm-up model.
    index["warmup_fingerprint"] = "fingerprint-b"
    (other / "study.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="different starting model.*fingerprint-a vs fingerprint-b"):
        study_recipe.export_light(other, dest)
    with pytest.raises(ValueError, match=r"--arms: \['fulll'\] are not arms of the study; its arms: \['full', "):
        run_study(study, arms=["fulll"])
    with pytest.raises(ValueError, match=r"--seeds: \[7\] are not seeds"):
        run_study(study, seeds=[7])


def test_a_slice_skips_a_run_another_process_holds_and_leaves_its_entry_alone(tmp_path, monkeypatch,
                                                                               run_held_elsewhere):
    """Two slices of one study started on overlapping arms: a run that another process holds (training or
    evaluating it) is skipped with a log line naming that process, gets no entry from this slice (the holder writes
    it) and is not touched; the other runs go on. Once the holder is gone, the next slice runs it."""
    from tokenfocus.io import run_lock

    study, _ = _stub_study(tmp_path, monkeypatch, seeds=(0,))
    held = tmp_path / "out" / "full-s0"
    holder = run_held_elsewhere(held)
    messages = []
    run_study(study, log=messages.append)
    assert any(m.startswith(f"[full s0] skipped: run {held} is in use by process {holder.pid}") for m in messages)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    assert sorted((r["arm"], r["status"]) for r in index["runs"]) == [("initial", "done"), ("random20", "done")]
    assert not held.exists() and (tmp_path / "out" / "random20-s0" / "final").is_dir()
    holder.kill()
    holder.wait()
    messages.clear()
    with run_lock(tmp_path / "out" / "random20-s0"):  # this process's own lock does not stop it (re-entrant)
        run_study(study, log=messages.append)
    assert "[random20 s0] done, skipped" in messages and not any("in use" in m for m in messages)
    index = json.loads((tmp_path / "out" / "study.json").read_text())
    assert sorted((r["arm"], r["status"]) for r in index["runs"]) == [
        ("full", "done"), ("initial", "done"), ("random20", "done")]
    assert (held / "final").is_dir()


def test_slices_merge_their_entries_one_at_a_time(tmp_path, monkeypatch, run_held_elsewhere):
    """study.json and the export are read, merged and written under the study's index lock: while another slice
    holds it (merging its own entry), this one waits instead of writing over it, and writes once it is free."""
    import threading

    study, study_recipe = _stub_study(tmp_path, monkeypatch, seeds=(0,))
    run_study(study, log=lambda m: None, arms=["full"])
    holder = run_held_elsewhere(tmp_path / "out" / study_recipe.INDEX_LOCK, file=True)
    dest = tmp_path / "committed"
    export = threading.Thread(target=study_recipe.export_light, args=(tmp_path / "out", dest))
    export.start()
    export.join(timeout=2)
    assert export.is_alive() and not (dest / "study.json").exists()  # waiting for the other slice
    holder.kill()
    holder.wait()
    export.join(timeout=60)
    assert not export.is_alive()
    assert [r["dir"] for r in json.loads((dest / "study.json").read_text())["runs"]] == ["initial", "full-s0"]


def test_a_counterfactual_study_on_marked_prompts_runs_and_reports(tmp_path):
    """The steps task marks evidence and steps: PGPO and Video-KTR arms train on their own signals, the samples
    carry the counterfactual signals and the spans, and the report judges the declared claims."""
    from tokenfocus.report.study_report import render_report

    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128",
        "task": {"name": "steps", "n_train": 16},
        "train": {"reward": {"kind": "digits"}, "save_steps": 2,
                  "trl": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8,
                          "max_completion_length": 6, "learning_rate": 1e-3}},
        "arms": {"full": "grpo", "pgpo": "pgpo", "video_ktr": "video_ktr"},
        "claims": [{"arm": "video_ktr", "test": "keeps_gain", "text": "KTR keeps the gain", "paper": "2601.19686"}],
        "seeds": [0],
        "eval": {"sets": {"in-dist": {"split": "test", "tiers": {"S2": 3}}, "hard": {"split": "test",
                                                                                       "tiers": {"S4": 3}}},
                 "k": 0, "max_new_tokens": 6},
        "samples": 2,
        "dir": str(tmp_path / "out"),
        "warmup": {"n_train": 8, "epochs": 1, "learning_rate": 1e-3, "batch_size": 8},
    }))
    root = run_study(load_study_config(config), log=lambda m: None)
    index = json.loads((root / "study.json").read_text())
    assert all(r["status"] == "done" for r in index["runs"]) and len(index["runs"]) == 4
    pgpo = [json.loads(line) for line in (root / "pgpo-s0" / "metrics.jsonl").open()]
    assert any(row.get("signal/context_dependency/mean", -1) >= 0 for row in pgpo)
    ktr = [json.loads(line) for line in (root / "video_ktr-s0" / "metrics.jsonl").open()]
    assert any("policy/ratio/ktr_order" in row for row in ktr)
    samples = [json.loads(line) for line in (root / "full-s0" / "samples" / "tokens.jsonl").open()]
    assert len(samples) == 2
    for row in samples:
        assert set(row["signals"]) >= {"context_dependency", "order_attribution", "attention_entropy"}
        assert set(row["spans"]) == {"evidence", "steps"}
        start, end = row["spans"]["evidence"][0]
        assert row["prompt"][start:end].isdigit()
    render_report(root)
    assert "| KTR keeps the gain (greedy pass@1, in-dist) |" in (root / "summary.md").read_text()


def test_a_slice_on_a_new_machine_with_the_start_already_evaluated_exports_and_keeps_the_fingerprint(
        tmp_path, monkeypatch):
    """A later slice in a fresh checkout: the starting model's evaluation is taken from the committed export, so
    nothing else loads the starting model before the first export. The slice still records and checks the warm-up
    fingerprint (it once wrote None and was refused as 'a different starting model'), and a slice from another
    starting model is refused before anything trains."""
    study, study_recipe = _stub_study(tmp_path, monkeypatch)
    dest = tmp_path / "committed"
    pairs = "pairs-on-policy-0123456789ab.jsonl"  # sampled once by the first DPO arm (recipes.dpo.pairs_cache)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / pairs).write_text('{"prompt": "p", "chosen": "12", "rejected": "13"}\n')
    (tmp_path / "out" / f"{pairs}.json").write_text('{"pass_rate": 0.4}')
    run_study(study, log=lambda m: None, arms=["full"], seeds=[0], export=dest)
    assert (dest / pairs).read_text() == (tmp_path / "out" / pairs).read_text()
    assert (dest / f"{pairs}.json").is_file()
    shutil.rmtree(tmp_path / "out")  # the new machine: only the committed files
    (tmp_path / "out" / "initial").mkdir(parents=True)
    shutil.copytree(dest / "initial" / "eval", tmp_path / "out" / "initial" / "eval")
    seen, train_arm = [], study_recipe.train_arm
    monkeypatch.setattr(study_recipe, "train_arm", lambda config, **options: (
        seen.append((config.run_dir.parent / pairs).read_text()), train_arm(config, **options))[1])
    run_study(study, log=lambda m: None, arms=["random20"], seeds=[0], export=dest)
    assert seen == [(dest / pairs).read_text()]  # the slice trained on the committed pairs, not re-sampled ones
    (tmp_path / "out" / pairs).write_text("kept\n")  # a file the slice already has is not overwritten
    assert study_recipe.restore_shared(dest, tmp_path / "out", log=lambda m: None) == [] and (
        tmp_path / "out" / pairs).read_text() == "kept\n"
    exported = json.loads((dest / "study.json").read_text())
    assert exported["warmup_fingerprint"] == "fingerprint-a"
    assert sorted(r["dir"] for r in exported["runs"]) == ["full-s0", "initial", "random20-s0"]

    trained = []
    monkeypatch.setattr(study_recipe, "model_fingerprint", lambda model: "fingerprint-b")
    monkeypatch.setattr(study_recipe, "train_arm", lambda config, **options: trained.append(config))
    with pytest.raises(ValueError, match="different starting model.*fingerprint-a vs fingerprint-b here"):
        run_study(study, log=lambda m: None, arms=["full"], seeds=[1], export=dest)
    assert trained == []
    assert json.loads((dest / "study.json").read_text()) == exported  # nothing the user had is touched


def test_a_warmup_recreated_on_another_cpu_continues_the_study_only_if_it_behaves_as_the_committed_start(
        tmp_path, monkeypatch):
    """Another kind of CPU re-creates the warm-up a few ulps away (another fingerprint). Without --rebuilt-warmup
    the slice is refused before training; with it, the re-created start is evaluated and compared problem by problem
    with the committed evaluation: equivalent -> the slice runs, the comparison is recorded and the committed
    evaluation of the start is kept; not equivalent -> refused, nothing trained, nothing the user had touched."""
    study, study_recipe = _stub_study(tmp_path, monkeypatch)
    greedy = {"outcomes": [1, 0, 1, 1, 0] * 20, "sampled": [0.5] * 100}  # 100 problems

    def fake_eval(model, tokenizer, study, run_dir):
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        problems = [{"prompt": f"p{i}", "greedy": g, "sampled": s}
                    for i, (g, s) in enumerate(zip(greedy["outcomes"], greedy["sampled"], strict=True))]
        (run_dir / "eval" / "in-dist-final.json").write_text(json.dumps(
            {"pass@1": sum(greedy["outcomes"]) / 100, "mean@4": 0.5, "k": 4, "problems": problems}))

    monkeypatch.setattr(study_recipe, "_evaluate_sets", fake_eval)
    dest = tmp_path / "committed"
    run_study(study, log=lambda m: None, arms=["full"], seeds=[0], export=dest)
    committed_start = (dest / "initial" / "eval" / "in-dist-final.json").read_text()
    shutil.rmtree(tmp_path / "out")  # another machine, another CPU
    monkeypatch.setattr(study_recipe, "model_fingerprint", lambda model: "fingerprint-b")
    trained = []
    real_train = study_recipe.train_arm
    monkeypatch.setattr(study_recipe, "train_arm", lambda config, **o: (trained.append(config.run_dir.name),
                                                                         real_train(config, **o))[1])
    with pytest.raises(ValueError, match="fingerprint-a vs fingerprint-b here.*--rebuilt-warmup"):
        run_study(study, log=lambda m: None, arms=["random20"], seeds=[0], export=dest)
    assert trained == []

    # a model that moved a little (as a 60-step RL run does): 99 % greedy agreement, but 80 % of the sampled scores
    greedy["outcomes"][3] = 0
    greedy["sampled"] = [0.25] * 20 + [0.5] * 80
    with pytest.raises(ValueError, match="does not behave as the study's starting model.*99/100 problems, sampled "
                                         "score on 80/100"):
        run_study(study, log=lambda m: None, arms=["random20"], seeds=[0], export=dest, rebuilt_warmup=True)
    assert trained == [] and (dest / "initial" / "eval" / "in-dist-final.json").read_text() == committed_start

    shutil.rmtree(tmp_path / "out")
    greedy["sampled"] = [0.5] * 100  # the re-created warm-up: one near-tie flips greedily, the samples all agree
    run_study(study, log=lambda m: None, arms=["random20"], seeds=[0], export=dest, rebuilt_warmup=True)
    assert trained == ["random20-s0"]
    exported = json.loads((dest / "study.json").read_text())
    assert exported["warmup_fingerprint"] == "fingerprint-a"
    [record] = exported["warmup_equivalents"]
    assert (record["fingerprint"], record["of"], record["equivalent"]) == ("fingerprint-b", "fingerprint-a", True)
    assert record["sets"]["in-dist"]["greedy_agree"] == 99
    runs = {r["dir"]: r for r in exported["runs"]}
    assert runs["random20-s0"]["warmup_fingerprint"] == "fingerprint-b" and "full-s0" in runs
    assert (dest / "initial" / "eval" / "in-dist-final.json").read_text() == committed_start
    # the next slice on that machine: the recorded equivalence is enough (no second comparison needed)
    shutil.rmtree(tmp_path / "out" / "initial-rebuilt")
    run_study(study, log=lambda m: None, arms=["full"], seeds=[1], export=dest)
    assert trained == ["random20-s0", "full-s1"] and not (tmp_path / "out" / "initial-rebuilt").exists()
