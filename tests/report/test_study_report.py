"""The study report (report/study_report.py), on run files written by the test: load_runs, summary, the
verdicts on runs whose expected verdict is known by construction, and the page in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tokenfocus.report.study_report import CLAIMS, load_runs, render_report, summary, verdicts

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARMS = ("full", "random20", "anchors20", "explorers20", "low2high")


# --- constructed runs -----------------------------------------------------------------------------------


def run(arm, seed, test=None, hard=None, diag=None, steps=(1, 2, 3)):
    """One run as ``load_runs`` returns it: ``diag`` (subset -> field -> value) is logged at every step."""
    metrics = {}
    for step in steps:
        row = {"step": step, "reward/mean": 0.1 * step}
        for subset, fields in (diag or {}).items():
            row.update({f"diag/grad/{subset}/{name}": float(value) for name, value in fields.items()})
        metrics[step] = row
    evals = {split: {"pass@1": value} for split, value in (("test", test), ("hard-test", hard)) if value is not None}
    return {"arm": arm, "seed": seed, "metrics": metrics, "evals": evals, "samples": [], "weights": {},
            "evidence": None}


def geometry(cos=(0.8, 0.3), volatility=(0.2, 0.6), norm=(1.0, 2.0), spread=0.05, full_norm=1.0):
    """Gradient diagnostics with anchors' / explorers' cos_full, split-half volatility and norm per token."""
    return {"anchors": {"cos_full": cos[0], "split_half_volatility": volatility[0], "norm_per_token": norm[0],
                        "bootstrap_cos_std": spread},
            "explorers": {"cos_full": cos[1], "split_half_volatility": volatility[1], "norm_per_token": norm[1],
                          "bootstrap_cos_std": spread},
            "full": {"norm": full_norm, "cos_full": 1.0}}


def gradient_verdicts(diag, steps=(1, 2, 3)):
    runs = [run(arm, 0, diag=diag, steps=steps) for arm in ("anchors20", "explorers20")]
    claims = verdicts(runs)
    return claims["anchors_stable_aligned"], claims["explorers_large_volatile"]


def test_anchors_aligned_and_stable_explorers_large_and_volatile_is_reproduced():
    """cos 0.8 vs 0.3 (difference 0.5 > spread 0.05), volatility 0.2 vs 0.6 (> 0.05), norm 1 vs 2 (+100 %)."""
    (aligned, evidence), (larger, _) = gradient_verdicts(geometry())
    assert aligned == "reproduced" and larger == "reproduced"
    assert "anchors 0.800, explorers 0.300" in evidence and "volatility: anchors 0.200, explorers 0.600" in evidence


def test_the_reverse_is_not_reproduced():
    (aligned, _), (larger, _) = gradient_verdicts(geometry(cos=(0.3, 0.8), volatility=(0.6, 0.2), norm=(2.0, 1.0)))
    assert aligned == "not reproduced" and larger == "not reproduced"


@pytest.mark.parametrize("diag, steps, reason", [
    (geometry(), (1,), "only 2 diagnosed batch(es); the gradient claims need at least 3"),  # one per run
    (geometry(full_norm=0.0), (1, 2, 3), "the full gradient is zero on the diagnosed batches"),
    ({}, (1, 2, 3), "no gradient diagnostics logged"),
])
def test_too_little_gradient_evidence_is_inconclusive(diag, steps, reason):
    for verdict, evidence in gradient_verdicts(diag, steps):
        assert verdict == "inconclusive" and reason in evidence


def test_differences_within_the_noise_or_disagreeing_are_inconclusive():
    """A cosine gap of 0.25 inside a bootstrap spread of 0.3 counts for nothing; equal volatility neither."""
    (aligned, evidence), (larger, _) = gradient_verdicts(geometry(cos=(0.8, 0.55), spread=0.3))
    assert aligned == "inconclusive" and larger == "reproduced"  # volatility and norm still clearly differ
    assert "bootstrap spread of the cosines 0.300" in evidence
    (aligned, _), (larger, _) = gradient_verdicts(geometry(volatility=(0.4, 0.42)))
    assert aligned == "inconclusive" and larger == "inconclusive"  # one direction each: not both
    (aligned, _), (larger, _) = gradient_verdicts(geometry(norm=(1.0, 1.0)))
    assert aligned == "reproduced" and larger == "inconclusive"


def test_random20_verdict_needs_full_training_to_beat_the_starting_model():
    """random20 ≈ full is only evidence when full-token training gained something over the starting model."""
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


def test_random20_at_the_floor_or_on_one_seed_is_inconclusive():
    floor = [run("full", s, 0.02) for s in (0, 1)] + [run("random20", s, 0.02) for s in (0, 1)]
    verdict, evidence = verdicts(floor)["random20_matches_full"]
    assert verdict == "inconclusive" and "at the floor (0.020)" in evidence
    verdict, evidence = verdicts([run("full", 0, 0.4), run("random20", 0, 0.4)])["random20_matches_full"]
    assert verdict == "inconclusive" and "one seed only" in evidence
    assert verdicts([run("full", 0), run("random20", 0)])["random20_matches_full"] == (
        "inconclusive", "no held-out evaluation")


@pytest.mark.parametrize("full, low2high, expected", [
    ((0.30, 0.32), (0.45, 0.47), "reproduced"),      # +0.15 > margin max(std 0.01, 0.01)
    ((0.45, 0.47), (0.30, 0.32), "not reproduced"),
    ((0.30, 0.34), (0.31, 0.35), "inconclusive"),    # +0.01 < margin (std 0.02)
    ((0.01, 0.02), (0.03, 0.04), "inconclusive"),    # both at the floor
])
def test_low2high_verdict_on_the_hard_split(full, low2high, expected):
    runs = [run("full", s, test=0.9, hard=a) for s, a in enumerate(full)]
    runs += [run("low2high", s, test=0.1, hard=a) for s, a in enumerate(low2high)]  # test split is not read
    verdict, evidence = verdicts(runs)["low2high_beats_full"]
    assert verdict == expected and evidence.startswith("hard-test")


# --- constructed run files --------------------------------------------------------------------------------


def write_run(run_dir: Path, arm: str, seed: int, *, test: float, hard: float, diag: dict | None) -> None:
    (run_dir / "eval").mkdir(parents=True)
    for split, value in (("test", test), ("hard-test", hard)):
        (run_dir / "eval" / f"{split}-final.json").write_text(json.dumps({"pass@1": value}))
    if arm == "initial":
        return
    rows = []
    for step in (1, 2, 3):
        row = {"step": step, "reward/mean": 0.2 * step + 0.01 * seed, "completion/mean_length": 10.0 + step}
        if diag and step >= 2:
            for subset, fields in diag.items():
                row.update({f"diag/grad/{subset}/{name}": float(value) for name, value in fields.items()})
            row.update({"diag/attention_entropy/anchors": 0.2, "diag/attention_entropy/all": 0.5,
                        "diag/attention_entropy/explorers": 0.8})
            row.update({f"diag/prompt_mass/{g}": 0.5 for g in ("anchors", "all", "explorers", "correct", "incorrect")})
        rows.append(row)
    rows.insert(1, {"event": "eval", "step": 1, "reward/mean": 99.0})  # not a step record: ignored
    rows.append({"step": 3, "reward/mean": 0.6 + 0.01 * seed, "completion/mean_length": 13.0})  # resumed: wins
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rew')
    tokens = ["7", "+", "8", " =", " 15"]
    sample = {"prompt": "Compute 7+8.", "tokens": tokens, "token_ids": [10, 11, 12, 13, 14],
              "signals": {"attention_entropy": [0.1, 0.4, 0.2, 0.9, 0.5], "attention_mass": [0.7, 0.6, 0.5, 0.3, 0.2]}}
    (run_dir / "samples").mkdir()
    (run_dir / "samples" / "tokens.jsonl").write_text(json.dumps(sample) + "\n")
    if arm == "low2high":
        (run_dir / "policy_weights.jsonl").write_text("".join(
            json.dumps({"step": step, "progress": (step - 1) / 2, "edges": [0.0, 0.5, 1.0, 1.5],
                        "counts": [4 - step, 3, step]}) + "\n" for step in (1, 2, 3)))
    evidence = {"accuracy": test, "prompt_mass/all": 0.5, "prompt_mass/anchors": 0.6, "prompt_mass/explorers": 0.4,
                "evidence_mass/all": 0.2, "evidence_mass/anchors": 0.25, "evidence_mass/explorers": 0.15}
    (run_dir / "evidence.json").write_text(json.dumps(evidence))


# full 0.40 / 0.42 over initial 0.20 / 0.22 and random20 0.39 / 0.41: random20 matches -> reproduced.
# Anchors: cos 0.8 vs 0.3, volatility 0.2 vs 0.6 -> reproduced; equal norms per token -> explorers inconclusive.
# Hard split: low2high 0.20 / 0.22 below full 0.35 / 0.37 -> not reproduced.
ACCURACY = {"full": (0.40, 0.35), "random20": (0.40, 0.30), "anchors20": (0.30, 0.30), "explorers20": (0.30, 0.30),
            "low2high": (0.38, 0.21), "initial": (0.21, 0.10)}
EXPECTED = {"random20_matches_full": "reproduced", "anchors_stable_aligned": "reproduced",
            "explorers_large_volatile": "inconclusive", "low2high_beats_full": "not reproduced"}


@pytest.fixture
def study_dir(tmp_path):
    root = tmp_path / "study"
    entries = []
    for arm in (*ARMS, "initial"):
        for seed in (0, 1):
            test, hard = ACCURACY[arm]
            name = f"{arm}-s{seed}"
            write_run(root / name, arm, seed, test=test + 0.02 * seed - (0.01 if arm == "random20" else 0.0),
                      hard=hard + 0.02 * seed, diag=geometry(norm=(1.0, 1.0)))
            entries.append({"arm": arm, "seed": seed, "dir": name, "status": "done"})
    (root / "study.json").write_text(json.dumps({"runs": entries}))
    return root


def test_load_runs_reads_the_last_record_of_each_step(study_dir):
    runs = load_runs(study_dir)
    assert [(r["arm"], r["seed"]) for r in runs] == [(a, s) for a in (*ARMS, "initial") for s in (0, 1)]
    full = runs[0]
    assert sorted(full["metrics"]) == [1, 2, 3]  # the torn last line (step 4) is not read
    assert full["metrics"][1]["reward/mean"] == pytest.approx(0.2)  # the event line does not replace step 1
    assert full["metrics"][3] == {"step": 3, "reward/mean": 0.6, "completion/mean_length": 13.0}  # the later one
    assert full["evals"]["hard-test"]["pass@1"] == pytest.approx(0.35)
    assert full["samples"][0]["tokens"][0] == "7" and full["evidence"]["prompt_mass/anchors"] == 0.6
    assert sorted(runs[8]["weights"]) == [1, 2, 3] and runs[8]["arm"] == "low2high"
    single = load_runs(study_dir / "full-s1")
    assert len(single) == 1 and single[0]["arm"] == "full-s1" and single[0]["seed"] == 0
    with pytest.raises(ValueError, match="holds no run with metrics.jsonl steps"):
        load_runs(study_dir / "initial-s0")


def test_summary_is_the_mean_and_std_over_seeds(study_dir):
    table = summary(load_runs(study_dir))
    assert table["full"]["seeds"] == 2
    assert table["full"]["test pass@1"] == pytest.approx((0.41, 0.01))
    assert table["full"]["final reward"] == pytest.approx((0.605, 0.005))  # the resumed step-3 records
    assert table["initial"]["hard-test pass@1"] == pytest.approx((0.11, 0.01))


def test_verdicts_of_constructed_run_files(study_dir):
    claims = verdicts(load_runs(study_dir))
    assert {key: verdict for key, (verdict, _) in claims.items()} == EXPECTED


def test_report_in_a_headless_browser(study_dir, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed for the report test: apt-get install -y chromium (make test does)"
    root = study_dir
    page = render_report(root)
    assert {p.name for p in (root / "plots").glob("*.png")} == {
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
    table = re.search(r'<table id="verdicts">(.*?)</table>', dom, re.S).group(1)
    assert re.findall(r"<td><b>(.*?)</b></td>", table) == [EXPECTED[key] for key, _ in CLAIMS]
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not a blank page


# --- failed and missing runs of a study -------------------------------------------------------------------


def write_study(root: Path, entries: list[dict], arms=("full", "random20", "low2high"), seeds=(0, 1)) -> None:
    """study.json with ``entries``; a run directory with one metrics step for every entry that is not failed."""
    for entry in entries:
        if entry["status"] != "failed":
            (root / entry["dir"]).mkdir(parents=True)
            (root / entry["dir"] / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.5}) + "\n")
    (root / "study.json").write_text(json.dumps({"arms": {a: a for a in arms}, "seeds": list(seeds), "runs": entries}))


def test_failed_and_missing_runs_are_listed_and_left_out(tmp_path):
    """full s0 done, random20 s0 failed, low2high s0 stopped part way; nothing at seed 1: the report lists the
    failure with its error, and low2high s0 plus every seed-1 run as missing; load_runs skips the failed run."""
    from tokenfocus.report.study_report import incomplete_runs

    write_study(tmp_path, [
        {"arm": "full", "seed": 0, "dir": "full-s0", "status": "done"},
        {"arm": "random20", "seed": 0, "dir": "random20-s0", "status": "failed", "error": "ValueError: boom <b>"},
        {"arm": "low2high", "seed": 0, "dir": "low2high-s0", "status": "partial"},
    ])
    runs = load_runs(tmp_path)
    assert [(r["arm"], r["seed"]) for r in runs] == [("full", 0), ("low2high", 0)]
    found = incomplete_runs(tmp_path)
    assert found["failed"] == [{"arm": "random20", "seed": 0, "error": "ValueError: boom <b>"}]
    assert [(m["arm"], m["seed"]) for m in found["missing"]] == [
        ("low2high", 0), ("full", 1), ("random20", 1), ("low2high", 1)]
    page = render_report(tmp_path).read_text()
    section = page[page.index('<table id="incomplete">'):]
    section = section[:section.index("</table>")]
    assert "random20" in section and "ValueError: boom &lt;b&gt;" in section  # escaped
    assert section.count("<td>missing</td>") == 4 and "never ran" in section and "part way" in section
    assert "1 failed, 4 missing" in page


def test_a_study_whose_runs_all_failed_still_renders(tmp_path):
    write_study(tmp_path, [{"arm": "full", "seed": 0, "dir": "full-s0", "status": "failed", "error": "OSError: x"}],
                arms=("full",), seeds=(0,))
    assert load_runs(tmp_path, allow_empty=True) == []
    page = render_report(tmp_path).read_text()
    assert "OSError: x" in page and "1 failed, 0 missing" in page


def test_a_complete_study_has_no_incomplete_section(tmp_path):
    write_study(tmp_path, [{"arm": "full", "seed": 0, "dir": "full-s0", "status": "done"}], arms=("full",), seeds=(0,))
    assert 'id="incomplete"' not in render_report(tmp_path).read_text()
