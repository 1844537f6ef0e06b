"""`tokenfocus study` on a tiny model (resumable), and the report in a real headless browser."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tokenfocus.report.study_report import render_report, verdicts
from tokenfocus.study import load_study_config, run_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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
    from tokenfocus.evidence import run_evidence

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
        digits = [sum(ch.isdigit() for ch in p.expression) for p in generate_problems(4, split="test", seed=run["seed"])]
        assert result["evidence_tokens_per_prompt"] == pytest.approx(sum(digits) / 4)
        for key in ("prompt_mass/all", "prompt_mass/anchors", "prompt_mass/explorers", "evidence_mass/all"):
            assert 0.0 <= result[key] <= 1.0, (run["dir"], key)
        assert result["evidence_mass/all"] <= result["prompt_mass/all"] + 1e-6  # the digits are part of the prompt
        expected_model = str(root / "out" / "warmup" / "final") if run["arm"] == "initial" else str(
            root / "out" / run["dir"] / "final")
        assert result["model"] == expected_model
    from tokenfocus.evidence import run_evidence

    messages = []
    assert run_evidence(root / "out", n=4, max_new_tokens=6, log=messages.append) == []  # all there: skipped
    assert len(messages) == len(index["runs"]) and all("skipped" in m for m in messages)
    with pytest.raises(ValueError, match="neither a study directory"):
        from tokenfocus.evidence import run_evidence

        run_evidence(root)


def test_study_runs_every_arm_and_seed_and_resumes_without_rerunning(study_dir):
    root, study = study_dir
    index = json.loads((root / "out" / "study.json").read_text())
    assert {(r["arm"], r["seed"]) for r in index["runs"]} == {(a, s) for a in [*study.arms, "initial"] for s in (0, 1)}
    assert all(r["status"] == "done" for r in index["runs"])
    for run in index["runs"]:
        run_dir = root / "out" / run["dir"]
        assert (run_dir / "eval" / "test-final.json").is_file()
        assert run["arm"] == "initial" or (run_dir / "samples" / "tokens.jsonl").is_file()
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
    assert any("warm-up model found, reused" in m for m in messages)
    assert not any(m.startswith("[initial") for m in messages)  # the starting model is not evaluated again


def test_verdicts_follow_the_logged_numbers(study_dir):
    root, _ = study_dir
    from tokenfocus.report.study_report import load_runs

    claims = verdicts(load_runs(root / "out"))
    assert set(claims) == {"random20_matches_full", "anchors_stable_aligned", "explorers_large_volatile",
                           "low2high_beats_full"}
    assert claims["random20_matches_full"][0] == "inconclusive"  # a random model's accuracy is at the floor
    for verdict, evidence in claims.values():
        assert verdict in ("reproduced", "not reproduced", "inconclusive") and evidence


def test_random20_verdict_needs_full_training_to_beat_the_starting_model():
    """random20 ≈ full is only evidence when full-token training gained something over the starting model."""
    def run(arm, seed, accuracy):
        return {"arm": arm, "seed": seed, "metrics": {1: {}}, "evals": {"test": {"pass@1": accuracy}}}

    runs = [run("full", 0, 0.40), run("full", 1, 0.42), run("random20", 0, 0.39), run("random20", 1, 0.41)]
    assert verdicts(runs)["random20_matches_full"][0] == "reproduced"
    degraded = runs + [run("initial", 0, 0.50), run("initial", 1, 0.48)]
    verdict, evidence = verdicts(degraded)["random20_matches_full"]
    assert verdict == "inconclusive" and "did not improve on the starting model" in evidence
    improved = runs + [run("initial", 0, 0.20), run("initial", 1, 0.22)]
    assert verdicts(improved)["random20_matches_full"][0] == "reproduced"
    lost = [run("full", 0, 0.40), run("full", 1, 0.42), run("random20", 0, 0.21), run("random20", 1, 0.23),
            run("initial", 0, 0.20), run("initial", 1, 0.22)]
    assert verdicts(lost)["random20_matches_full"][0] == "not reproduced"


def test_report_in_a_headless_browser(study_dir, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed for the report test: apt-get install -y chromium (make test does)"
    root, _ = study_dir
    page = render_report(root / "out")
    assert {p.name for p in (root / "out" / "plots").glob("*.png")} == {
        "reward.png", "accuracy.png", "grad_cos.png", "grad_norm.png", "entropy.png", "weights.png", "evidence.png"}
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text  # self-contained
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = run.stdout
    assert dom.count('src="data:image/png;base64,') == 7  # every figure present
    assert "attention_mass" in dom  # the prompt-mass signal is one of the heatmap's switchable signals
    assert 'id="evidence"' in dom and "prompt mass: anchors" in dom  # the evidence-gathering table
    assert dom.count("class=\"tok") >= 5  # the heatmap script ran and built the token spans
    assert "reproduced" in dom or "inconclusive" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not a blank page
