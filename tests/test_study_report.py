"""`tokenfocus study` on a tiny model (resumable), and the report in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
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
    }))
    study = load_study_config(config)
    run_study(study, log=lambda m: None)
    return root, study


def test_study_runs_every_arm_and_seed_and_resumes_without_rerunning(study_dir):
    root, study = study_dir
    index = json.loads((root / "out" / "study.json").read_text())
    assert {(r["arm"], r["seed"]) for r in index["runs"]} == {(a, s) for a in study.arms for s in (0, 1)}
    assert all(r["status"] == "done" for r in index["runs"])
    for run in index["runs"]:
        run_dir = root / "out" / run["dir"]
        assert (run_dir / "eval" / "test-final.json").is_file() and (run_dir / "samples" / "tokens.jsonl").is_file()
    # Same initial model, data and sampling seed: every arm sees the same first generation batch.
    first = {r["arm"]: [json.loads(line) for line in (root / "out" / r["dir"] / "metrics.jsonl").open()][0]
             for r in index["runs"] if r["seed"] == 0}
    assert len({round(row["reward/mean"], 9) for row in first.values()}) == 1
    # Interrupt: drop one run's results; a rerun trains only that one.
    shutil.rmtree(root / "out" / "low2high-s1")
    messages = []
    run_study(study, log=messages.append)
    trained = [m for m in messages if m.startswith("[") and ("training" in m or "resuming" in m)]
    assert len(trained) == 1 and "low2high s1" in trained[0]
    assert sum("skipped" in m for m in messages) == 9


def test_verdicts_follow_the_logged_numbers(study_dir):
    root, _ = study_dir
    from tokenfocus.report.study_report import load_runs

    claims = verdicts(load_runs(root / "out"))
    assert set(claims) == {"random20_matches_full", "anchors_stable_aligned", "explorers_large_volatile",
                           "low2high_beats_full"}
    assert claims["random20_matches_full"][0] == "inconclusive"  # a random model's accuracy is at the floor
    for verdict, evidence in claims.values():
        assert verdict in ("reproduced", "not reproduced", "inconclusive") and evidence


def test_report_in_a_headless_browser(study_dir, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed for the report test: apt-get install -y chromium (make test does)"
    root, _ = study_dir
    page = render_report(root / "out")
    assert {p.name for p in (root / "out" / "plots").glob("*.png")} == {
        "reward.png", "accuracy.png", "grad_cos.png", "grad_norm.png", "entropy.png", "weights.png"}
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text  # self-contained
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = run.stdout
    assert dom.count('src="data:image/png;base64,') == 6  # every figure present
    assert dom.count("class=\"tok") >= 5  # the heatmap script ran and built the token spans
    assert "reproduced" in dom or "inconclusive" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not a blank page
