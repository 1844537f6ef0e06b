"""The study report (report/study_report.py, runs.py, tables.py) on study files written by the test in the study
recipe's format (a light copy: no model directories): load_runs, the tables, summary.md, an older-format study,
failed and missing runs, and the page in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tokenfocus.report.study_report import (
    CLAIMS,
    incomplete_runs,
    load_runs,
    render_report,
    results_tables,
    summary,
    verdicts,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIGURE_NAMES = {"reward.png", "accuracy.png", "grad_cos.png", "grad_norm.png", "entropy.png", "weights.png",
                "evidence.png"}


# --- one study in the current format ----------------------------------------------------------------------


def diagnosis(i: int) -> dict:
    """Batch i of the full arm's diagnostics: anchors aligned (cos 0.8 vs random 0.6 vs explorers 0.3) and the
    least volatile (0.2 vs 0.4 vs explorers 0.3: explorers are NOT more volatile than random); per-token size
    alternates around a ratio of 1 (inconclusive)."""
    wobble = 0.02 * (i % 3)
    return {"diag/grad/full/norm": 1.0, "diag/grad/full/cos_full": 1.0,
            "diag/grad/anchors/cos_full": 0.8 + wobble, "diag/grad/random/cos_full": 0.6 - wobble,
            "diag/grad/explorers/cos_full": 0.3 + wobble, "diag/grad/middle/cos_full": 0.5,
            "diag/grad/anchors/split_half_volatility": 0.2 + wobble,
            "diag/grad/random/split_half_volatility": 0.4 + wobble,
            "diag/grad/explorers/split_half_volatility": 0.3 + wobble,
            "diag/grad/anchors/token_grad_proxy": 1.0, "diag/grad/explorers/token_grad_proxy": 1.2 if i % 2 else 0.8,
            "diag/grad/anchors/norm_per_token": 1.0, "diag/grad/explorers/norm_per_token": 0.5,
            "diag/attention_entropy/anchors": 0.2, "diag/attention_entropy/all": 0.5,
            "diag/attention_entropy/explorers": 0.8,
            **{f"diag/prompt_mass/{g}": 0.5 for g in ("anchors", "all", "explorers", "correct", "incorrect")}}


# in-dist: initial 60/200; full 0.60 (gain 0.30); random20 0.55 keeps most of it -> reproduced.
# hard: full 62/300 vs low2high 63/300 -> inconclusive. Gradients: see ``diagnosis``.
EXPECTED = {"random20_recovers_full": "reproduced", "anchors_aligned_vs_explorers": "reproduced",
            "anchors_aligned_vs_random": "reproduced", "anchors_stable_vs_explorers": "reproduced",
            "anchors_stable_vs_random": "reproduced", "explorers_larger": "inconclusive",
            "explorers_volatile": "not reproduced", "low2high_beats_full": "inconclusive",
            "random20_recovers_full_sampled": "reproduced", "low2high_beats_full_sampled": "inconclusive"}
IN_DIST = {"full": (118, 120, 122), "random20": (108, 110, 112), "anchors20": (80, 84, 88), "explorers20": (100,),
           "low2high": (116, 118, 120)}
HARD = {"full": (20, 20, 22), "low2high": (20, 21, 22)}


@pytest.fixture
def study_dir(study):
    study.initial(in_dist=60, hard=20, sampled=True)
    for arm, solved in IN_DIST.items():
        for seed, n in enumerate(solved):
            diag = [diagnosis(i + 3 * seed) for i in range(3)] if arm == "full" else None
            study.run(arm, seed, n, HARD.get(arm, (18, 19, 20))[seed], diag=diag, sampled=True,
                      drift={"l2": 1.0 + 0.1 * seed, "relative": 0.01 + 0.001 * seed, "kl_to_start": 0.05 * (seed + 1)})
    root = study.root
    full = root / "full-s0" / "metrics.jsonl"  # an event line, a resumed step and a torn tail: as a run logs them
    lines = full.read_text().splitlines(keepends=True)
    lines.insert(1, json.dumps({"event": "eval", "step": 1, "reward/mean": 99.0}) + "\n")
    lines.append(json.dumps({"step": 3, "reward/mean": 0.6, "completion/mean_length": 13.0}) + "\n")
    full.write_text("".join(lines) + '{"step": 4, "rew')
    sample = {"prompt": "Compute 7+8.", "tokens": ["7", "+", "8", " =", " 15"], "token_ids": [10, 11, 12, 13, 14],
              "signals": {"attention_entropy": [0.1, 0.4, 0.2, 0.9, 0.5], "attention_mass": [0.7, 0.6, 0.5, 0.3, 0.2]}}
    (root / "full-s0" / "samples").mkdir()
    (root / "full-s0" / "samples" / "tokens.jsonl").write_text(json.dumps(sample) + "\n")
    (root / "low2high-s0" / "policy_weights.jsonl").write_text("".join(
        json.dumps({"step": step, "progress": (step - 1) / 2, "edges": [0.0, 0.5, 1.0, 1.5],
                    "counts": [4 - step, 3, step]}) + "\n" for step in (1, 2, 3)))
    for seed in (0, 1):
        (root / f"full-s{seed}" / "evidence.json").write_text(json.dumps(
            {"accuracy": 0.6, "prompt_mass/anchors": 0.6 + 0.1 * seed, "prompt_mass/explorers": 0.4}))
    (root / "explorers20-s0" / "evidence.json").write_text(json.dumps({"accuracy": 0.5, "prompt_mass/anchors": 0.5}))
    return study.index(arms=tuple(IN_DIST), seeds=(0, 1, 2))


def table_rows(page: str, table_id: str) -> dict[str, list[str]]:
    """first cell -> the other cells of each row of ``<table id=table_id>``."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.DOTALL).group(1)
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)[1:]:
        cells = [re.sub(r"<.*?>", "", c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.DOTALL)]
        rows[cells[0]] = cells[1:]
    return rows


def test_load_runs_reads_the_index_and_the_last_record_of_each_step(study_dir):
    runs = load_runs(study_dir)
    assert [(r["arm"], r["seed"]) for r in runs][:3] == [("initial", None), ("full", 0), ("full", 1)]
    full = runs[1]
    assert sorted(full["metrics"]) == [1, 2, 3]  # the torn last line (step 4) is not read
    assert full["metrics"][1]["reward/mean"] == pytest.approx(0.2)  # the event line does not replace step 1
    assert full["metrics"][3] == {"step": 3, "reward/mean": 0.6, "completion/mean_length": 13.0}  # the later one
    assert full["evals"]["hard"]["pass@1"] == pytest.approx(0.20) and len(full["evals"]["in-dist"]["problems"]) == 200
    assert full["drift"]["kl_to_start"] == pytest.approx(0.05) and full["samples"][0]["tokens"][0] == "7"
    assert next(r for r in runs if r["arm"] == "low2high")["weights"].keys() == {1, 2, 3}
    single = load_runs(study_dir / "full-s1")
    assert len(single) == 1 and single[0]["arm"] == "full-s1" and single[0]["seed"] == 0
    with pytest.raises(ValueError, match="holds no run with metrics.jsonl steps"):
        load_runs(study_dir / "initial")
    assert not any((study_dir / r["dir"] / "final").exists() for r in runs)  # a light copy: no models


def test_summary_is_the_mean_and_sample_sd_over_seeds(study_dir):
    table = summary(load_runs(study_dir))
    assert list(table)[:2] == ["initial", "full"] and table["full"]["seeds"] == 3
    assert table["full"]["in-dist pass@1"] == pytest.approx((0.60, 0.01))  # 0.59, 0.60, 0.61: sd with ddof=1
    assert table["initial"]["in-dist pass@1"] == (0.30, None)  # one evaluation: no spread
    assert table["explorers20"]["in-dist pass@1"] == (0.50, None)
    assert table["initial"]["in-dist mean@4"][0] == pytest.approx(0.40)  # sampled: 0.75 solved, 0.25 not
    assert table["full"]["final reward"][0] == pytest.approx((0.6 + 0.61 + 0.62) / 3)  # s0's resumed step 3


def test_verdicts_of_the_study_files(study_dir):
    claims = verdicts(load_runs(study_dir), ["in-dist", "hard"])
    assert {key: verdict for key, (verdict, _) in claims.items()} == EXPECTED


def test_results_tables_are_markdown_for_the_results_page(study_dir):
    text = results_tables(study_dir)
    assert text.index("### Held-out accuracy: in-dist (200 problems of split test, tiers D2, D3)") < text.index(
        "### Held-out accuracy: hard (100 problems")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| arm | seeds | pass@1"))
    assert header == ("| arm | seeds | pass@1 | Δ pass@1 vs initial [95 % CI] | Δ pass@1 vs full [95 % CI] | mean@4 | "
                      "Δ mean@4 vs initial [95 % CI] | Δ mean@4 vs full [95 % CI] |")
    initial = next(line for line in lines if line.startswith("| initial |")).strip("| ").split(" | ")
    assert initial[:4] == ["initial", "1", "0.300", "–"] and initial[4].startswith("-0.300 [")  # one seed: no ±
    full = next(line for line in lines if line.startswith("| full |")).strip("| ").split(" | ")
    assert full[:3] == ["full", "3", "0.600 ± 0.010"] and full[3].startswith("+0.300 [") and full[4] == "–"
    assert "| explorers20 | 1 | 0.500 |" in text  # one seed: no ± 0.000
    assert "### Drift from the starting model" in text and "| full | 3 | 1.1 ± 0.1 |" in text
    verdict_rows = [line for line in lines if line.startswith("| ") and "**" in line]
    assert [re.search(r"\*\*(.*?)\*\*", line).group(1) for line in verdict_rows] == [EXPECTED[k] for k, _ in CLAIMS]
    # explorers20 ran one of the study's three seeds: the other two are listed as missing
    assert text.endswith("| explorers20 | 1 | missing | never ran |\n| explorers20 | 2 | missing | never ran |\n")


def test_report_in_a_headless_browser(study_dir, tmp_path):
    assert CHROMIUM, "Debian's chromium is needed for the report test: apt-get install -y chromium (make test does)"
    root = study_dir
    page = render_report(root)
    assert {p.name for p in (root / "plots").glob("*.png")} == FIGURE_NAMES
    assert (root / "summary.md").read_text() == results_tables(root)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text  # self-contained
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = run.stdout
    figures = re.findall(r'<figure id="fig-(\w+)">(.*?)</figure>', dom, re.DOTALL)
    assert {f"{name}.png" for name, _ in figures} == FIGURE_NAMES
    for _, inner in figures:  # each title sits above its own figure, inside it
        assert inner.index("<figcaption>") < inner.index("<img")
    assert dom.count('src="data:image/png;base64,') == 7
    assert "attention_mass" in dom and dom.count('class="tok') >= 5  # the heatmap script built the token spans
    in_dist = table_rows(dom, "summary-in-dist")
    assert in_dist["initial"][:2] == ["1", "0.300"] and in_dist["explorers20"][:2] == ["1", "0.500"]
    assert in_dist["full"][1] == "0.600 ± 0.010" and in_dist["full"][2].startswith("+0.300 [")
    assert "0.207 ± 0.012" == table_rows(dom, "summary-hard")["full"][1]
    assert table_rows(dom, "drift")["full"][:2] == ["3", "1.1 ± 0.1"]
    assert table_rows(dom, "evidence")["explorers20"][:2] == ["1", "0.500"]  # one run: no spread
    verdict_table = re.search(r'<table id="verdicts">(.*?)</table>', dom, re.DOTALL).group(1)
    assert re.findall(r"<td><b>(.*?)</b></td>", verdict_table) == [EXPECTED[key] for key, _ in CLAIMS]
    diagnosis = re.search(r'<table id="diagnosis">(.*?)</table>', dom, re.DOTALL).group(1)
    assert "<th>cos to full</th>" in diagnosis and "<td>anchors</td>" in diagnosis
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05  # not a blank page


# --- an older study: per-seed initial runs, eval files named after splits, no per-problem outcomes ---------


def test_an_older_study_still_renders(tmp_path):
    root = tmp_path / "old"
    entries = []
    for arm in ("initial", "full", "random20"):
        for seed in (0, 1):
            run_dir = root / f"{arm}-s{seed}"
            (run_dir / "eval").mkdir(parents=True)
            for split, value in (("test", 0.4 + 0.1 * (arm != "initial") + 0.02 * seed), ("hard-test", 0.1)):
                (run_dir / "eval" / f"{split}-final.json").write_text(json.dumps({"pass@1": value, "n": 64}))
            if arm != "initial":
                (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.5}) + "\n")
            entries.append({"arm": arm, "seed": seed, "dir": run_dir.name, "status": "done"})
    (root / "study.json").write_text(json.dumps({"arms": {"full": "dapo", "random20": "random20"}, "seeds": [0, 1],
                                                 "eval": {"splits": ["test", "hard-test"], "n": 64, "k": 0},
                                                 "runs": entries}))
    assert incomplete_runs(root) == {"failed": [], "missing": []}
    claims = verdicts(load_runs(root))
    verdict, evidence = claims["random20_recovers_full"]
    assert verdict == "inconclusive" and "no per-problem outcomes" in evidence
    page = render_report(root).read_text()
    assert table_rows(page, "summary-test")["initial"][:2] == ["2", "0.410 ± 0.014"]
    assert table_rows(page, "summary-test")["full"][2] == "–"  # no paired interval without outcomes
    assert 'id="summary-hard-test"' in page


# --- failed and missing runs of a study -------------------------------------------------------------------


def write_study(root: Path, entries: list[dict], arms=("full", "random20", "low2high"), seeds=(0, 1)) -> None:
    """study.json with ``entries``; a run directory with one metrics step for every entry that is not failed."""
    for entry in entries:
        if entry["status"] != "failed":
            (root / entry["dir"]).mkdir(parents=True)
            (root / entry["dir"] / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.5}) + "\n")
    (root / "study.json").write_text(json.dumps({"arms": {a: a for a in arms}, "seeds": list(seeds), "runs": entries}))


INITIAL_DONE = {"arm": "initial", "seed": None, "dir": "initial", "status": "done"}


def test_failed_and_missing_runs_are_listed_and_left_out(tmp_path):
    """full s0 done, random20 s0 failed, low2high s0 stopped part way; nothing at seed 1: the report lists the
    failure with its error, and low2high s0 plus every seed-1 run as missing; load_runs skips the failed run."""
    write_study(tmp_path, [
        INITIAL_DONE,
        {"arm": "full", "seed": 0, "dir": "full-s0", "status": "done"},
        {"arm": "random20", "seed": 0, "dir": "random20-s0", "status": "failed", "error": "ValueError: boom <b>"},
        {"arm": "low2high", "seed": 0, "dir": "low2high-s0", "status": "partial"},
    ])
    runs = load_runs(tmp_path)
    assert [(r["arm"], r["seed"]) for r in runs] == [("initial", None), ("full", 0), ("low2high", 0)]
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
    assert "### Failed and missing runs" in (tmp_path / "summary.md").read_text()


def test_the_starting_model_failed_or_never_evaluated_is_listed(tmp_path):
    write_study(tmp_path / "a", [{**INITIAL_DONE, "status": "failed", "error": "OSError: no model"},
                                 {"arm": "full", "seed": 0, "dir": "full-s0", "status": "done"}],
                arms=("full",), seeds=(0,))
    assert incomplete_runs(tmp_path / "a")["failed"] == [{"arm": "initial", "seed": None, "error": "OSError: no model"}]
    rows = table_rows(render_report(tmp_path / "a").read_text(), "incomplete")
    assert rows["initial"] == ["–", "failed", "OSError: no model"]
    write_study(tmp_path / "b", [{"arm": "full", "seed": 0, "dir": "full-s0", "status": "done"}],
                arms=("full",), seeds=(0,))
    assert incomplete_runs(tmp_path / "b")["missing"] == [
        {"arm": "initial", "seed": None, "reason": "the starting model was never evaluated"}]


def test_a_study_whose_runs_all_failed_still_renders(tmp_path):
    write_study(tmp_path, [INITIAL_DONE, {"arm": "full", "seed": 0, "dir": "full-s0", "status": "failed",
                                          "error": "OSError: x"}], arms=("full",), seeds=(0,))
    assert load_runs(tmp_path, allow_empty=True)[0]["arm"] == "initial"
    page = render_report(tmp_path).read_text()
    assert "OSError: x" in page and "1 failed, 0 missing" in page


def test_a_complete_study_has_no_incomplete_section(tmp_path):
    write_study(tmp_path, [INITIAL_DONE, {"arm": "full", "seed": 0, "dir": "full-s0", "status": "done"}],
                arms=("full",), seeds=(0,))
    assert 'id="incomplete"' not in render_report(tmp_path).read_text()


def test_the_hard_set_comes_last_even_when_study_json_sorted_the_sets(study):
    """write_json sorts keys, so study.json lists "hard" before "in-dist": the tables still open with the
    in-distribution set, and drift's tiny relative distances keep their significant digits."""
    from tokenfocus.report.runs import eval_set_names

    study.initial(in_dist=60, hard=20)
    study.run("full", 0, 120, 20, drift={"l2": 0.171, "relative": 8.08e-05, "kl_to_start": 0.00946})
    root = study.index(sets=("hard", "in-dist"))
    runs = load_runs(root)
    assert eval_set_names(root, runs) == ["in-dist", "hard"]
    text = results_tables(root)
    assert text.index("Held-out accuracy: in-dist") < text.index("Held-out accuracy: hard")
    assert "| full | 1 | 0.171 | 8.08e-05 | 0.00946 |" in text


def test_each_seed_of_full_is_judged_against_the_start_on_its_own(study):
    """The go criterion, seed by seed: a seed whose gain lies beyond its own paired interval reads "above", one
    inside it "no"; greedy and mean@k separately."""
    from tokenfocus.report.runs import eval_set_names
    from tokenfocus.report.tables import seed_table

    study.initial(in_dist=60, hard=20, sampled=True)
    study.run("full", 0, 120, 20, sampled=True)  # +60 of 200 problems: far beyond the noise
    study.run("full", 1, 62, 20, sampled=True)   # +2: inside it
    root = study.index()
    runs = load_runs(root)
    header, rows = seed_table(runs, eval_set_names(root, runs))
    assert header[-1] == "beyond the CI"
    by = {(r[0], r[1], r[2]): r for r in rows}
    assert by[("in-dist", "pass@1", "0")][3:5] == ["0.600", "0.300"] and by[("in-dist", "pass@1", "0")][-1] == "above"
    assert by[("in-dist", "pass@1", "1")][-1] == "no"
    assert by[("in-dist", "mean@4", "0")][-1] == "above" and by[("hard", "pass@1", "0")][-1] == "no"
    assert "seed by seed" in results_tables(root)


def test_the_training_table_gives_each_arms_median_step_time(study):
    from tokenfocus.report.tables import training_table

    study.initial(in_dist=60)
    for seed, slow in enumerate((1.0, 3.0)):
        run_dir = study.run("full", seed, 100, steps=3)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        for row, seconds in zip(rows, (slow, 2.0 * slow, 100.0)):  # the median ignores one slow step
            row["time/step_s"] = seconds
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = study.index(arms=("full",), seeds=(0, 1))
    header, rows = training_table(load_runs(root))
    assert header[-1] == "s/step (median)"
    assert rows == [["full", "2", rows[0][2], rows[0][3], "4.000 ± 2.828"]]  # medians 2 and 6


def test_a_tool_task_gets_calls_per_solved_problem_and_cas_per_arm(study):
    from tokenfocus.report.tables import results_markdown, tool_table

    study.initial(in_dist=60)
    for seed, calls in enumerate((2.0, 4.0)):
        run_dir = study.run("full", seed, 100)
        path = run_dir / "eval" / "in-dist-final.json"
        result = json.loads(path.read_text())
        result.update(tool_calls_mean=calls, tool_calls_per_solved=calls / 2, cas=0.1 * (seed + 1))
        path.write_text(json.dumps(result))
    root = study.index(arms=("full",), seeds=(0, 1))
    runs = load_runs(root)
    header, rows = tool_table(runs, ["in-dist", "hard"])
    assert header[3:] == ["calls per problem", "calls per solved problem", "CAS"]
    assert rows == [["in-dist", "full", "2", "3 ± 1.4", "1.5 ± 0.71", "0.15 ± 0.071"]]  # the start logged no calls
    assert "### Tool use (greedy)" in results_markdown(runs, ["in-dist"])


def test_the_training_table_names_a_study_teachers_row_as_its_sft():
    from tokenfocus.report.tables import training_table

    runs = [{"arm": "full", "seed": 0, "metrics": {1: {"reward/mean": 0.5, "completion/mean_length": 9.0,
                                                       "time/step_s": 4.0}}},
            {"arm": "teacher", "seed": None, "metrics": {1: {"loss/train": 0.2, "time/step_s": 39.0}}}]
    rows = training_table(runs)[1]
    assert [row[0] for row in rows] == ["full", "teacher (its SFT)"]
    assert rows[1][2] == rows[1][3] == "–" and rows[1][4] == "39.000"
