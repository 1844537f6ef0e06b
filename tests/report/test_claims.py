"""report/claims.py: every claim reaches each verdict (reproduced / not reproduced / inconclusive) on study files
built so that the verdict is known, and the reasons for inconclusive verdicts are stated.

Accuracy arms solve the first k of 200 in-distribution (100 hard) problems (conftest.outcomes), so a paired
difference of d problems is exactly d/200 with a tight interval. The starting model solves 60 (0.30); full
solves 118/120/122 over three seeds (0.60): a gain of 0.30, so "most of the gain" means random20 - full above
-0.15.
"""

from __future__ import annotations

import json
import math

import pytest

from tokenfocus.report.claims import CLAIMS, GRADIENT_CLAIMS, verdicts
from tokenfocus.report.runs import eval_set_names, load_runs

FULL_LEARNED = (118, 120, 122)
FULL_FLAT = (58, 60, 62)  # the starting model's 60 on average: full did not learn


def judged(study) -> dict[str, tuple[str, str]]:
    root = study.index()
    runs = load_runs(root)
    return verdicts(runs, eval_set_names(root, runs))


def accuracy_study(study, full=FULL_LEARNED, random20=None, low2high=None, full_hard=(20, 20, 22)):
    study.initial(in_dist=60, hard=20)
    for seed, solved in enumerate(full):
        study.run("full", seed, solved, full_hard[seed])
    for seed, solved in enumerate(random20 or ()):
        study.run("random20", seed, solved, 20)
    for seed, solved in enumerate(low2high or ()):
        study.run("low2high", seed, 100, solved)
    return judged(study)


# --- claim 1: random 20 % recovers most of full-token training ------------------------------------------


@pytest.mark.parametrize("random20, full, expected, says", [
    ((108, 110, 112), FULL_LEARNED, "reproduced", "keeps more than half the gain"),  # -0.05 vs bar -0.15
    ((62, 64, 66), FULL_LEARNED, "not reproduced", "wholly below"),  # -0.28: the interval lies below -0.15
    ((88, 90, 92), FULL_LEARNED, "inconclusive", "straddle"),  # -0.15: the interval spans the bar
    ((108, 110, 112), FULL_FLAT, "inconclusive", "full-token training did not beat the starting model"),
])
def test_random20_recovers_full(study, random20, full, expected, says):
    verdict, evidence = accuracy_study(study, full=full, random20=random20)["random20_recovers_full"]
    assert verdict == expected and says in evidence
    assert "initial 0.300 (1 seed)" in evidence  # the starting model, evaluated once: no spread shown
    if expected != "inconclusive" or says == "straddle":
        assert "full - initial +0.300 [" in evidence and "-½·gain = -0.150" in evidence
        assert f"random20 {sum(random20) / 600:.3f} ± " in evidence and "(3 seeds)" in evidence


# --- claim 4: Low2High beats full on the hard set -----------------------------------------------------


@pytest.mark.parametrize("full_hard, low2high, full, expected, says", [
    ((20, 20, 22), (40, 42, 44), FULL_LEARNED, "reproduced", "low2high - full +0.213 ["),
    ((40, 42, 44), (20, 20, 22), FULL_LEARNED, "not reproduced", "low2high - full -0.213 ["),
    ((30, 30, 32), (30, 31, 32), FULL_LEARNED, "inconclusive", "low2high - full +0.003 ["),
    ((2, 3, 4), (3, 4, 5), FULL_LEARNED, "inconclusive", "at the floor"),
    ((20, 20, 22), (40, 42, 44), FULL_FLAT, "inconclusive", "did not beat the starting model on in-dist"),
])
def test_low2high_beats_full_on_the_hard_set(study, full_hard, low2high, full, expected, says):
    verdict, evidence = accuracy_study(study, full=full, low2high=low2high, full_hard=full_hard)[
        "low2high_beats_full"]
    assert verdict == expected and says in evidence


def test_the_sampled_metric_is_judged_on_its_own_outcomes_and_gate(study):
    """Greedy: full did not learn (its gate fails); sampled mean@k: full learned and random20 kept the gain. Each
    metric gets its own verdict from its own outcomes -- neither borrows the other's gate."""
    root = study.root
    n = 200
    flat = [1] * 60 + [0] * 140  # greedy: the same 60 solved by every model
    study.eval_file(root / "initial", "in-dist", flat, [0.2] * n)
    study.entries.append({"arm": "initial", "seed": None, "dir": "initial", "status": "done"})
    for arm, sampled in (("full", 0.5), ("random20", 0.45)):
        for seed in (0, 1, 2):
            run_dir = root / f"{arm}-s{seed}"
            study.eval_file(run_dir, "in-dist", flat, [sampled + 0.01 * (i % 3) for i in range(n)])
            (run_dir / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.1}\n')
            study.entries.append({"arm": arm, "seed": seed, "dir": run_dir.name, "status": "done"})
    claims = judged(study)
    verdict, evidence = claims["random20_recovers_full"]
    assert verdict == "inconclusive" and "did not beat the starting model on in-dist (greedy pass@1)" in evidence
    verdict, evidence = claims["random20_recovers_full_sampled"]
    assert verdict == "reproduced" and "in-dist mean@k over 200 paired problems" in evidence
    assert "full - initial +0.310 [" in evidence


def test_accuracy_claims_without_their_arms_or_outcomes_are_inconclusive(study):
    claims = accuracy_study(study)  # no random20, no low2high
    assert claims["random20_recovers_full"] == ("inconclusive", "not tested: the study has no random20 run")
    assert claims["low2high_beats_full"] == ("inconclusive", "not tested: the study has no low2high run")


def test_an_untested_claim_says_whether_its_baseline_learned(study):
    """An arm not run yet, beside a baseline that did not beat the start: running the arm could not give a verdict
    either, and the evidence says so with the baseline's measured gain."""
    claims = accuracy_study(study, full=FULL_FLAT)
    verdict, evidence = claims["random20_recovers_full"]
    assert verdict == "inconclusive"
    assert evidence.startswith("not tested: the study has no random20 run; nor could it be judged: full-token "
                               "training did not beat the starting model on in-dist (greedy pass@1): full - initial ")
    verdict, evidence = claims["low2high_beats_full"]
    assert verdict == "inconclusive" and "no low2high run; nor could it be judged" in evidence


def test_too_few_shared_problems_is_inconclusive(study):
    """Ten problems: a bootstrap of a handful of problems is degenerate (one problem: width 0) and would
    'prove' anything."""
    root = study.root
    for arm, seed in (("initial", None), ("full", 0), ("random20", 0)):
        run_dir = root / (arm if seed is None else f"{arm}-s{seed}")
        study.eval_file(run_dir, "in-dist", [int(arm != "initial")] * 10)
        if seed is not None:
            (run_dir / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.1}\n')
        study.entries.append({"arm": arm, "seed": seed, "dir": run_dir.name, "status": "done"})
    verdict, evidence = judged(study)["random20_recovers_full"]
    assert verdict == "inconclusive" and "share only 10 scored in-dist problems (greedy); need 20" in evidence


# --- claims 2 and 3: gradient geometry per diagnosed batch ------------------------------------------------


DELTAS = {"reproduced": (0.20, 0.25, 0.30, 0.22, 0.18), "not reproduced": (-0.20, -0.25, -0.30, -0.22, -0.18),
          "inconclusive": (0.20, -0.20, 0.15, -0.15, 0.05)}


def diag_rows(claim: str, deltas, full_norm=1.0, stat=None) -> list[dict]:
    """One diagnosed batch per delta: the subset the claim expects higher is ``delta`` above the other
    (a difference, or a log ratio for per-token size)."""
    name, high, low, kind = GRADIENT_CLAIMS[claim]
    stat = stat or ("token_grad_proxy" if name == "token size" else name)
    rows = []
    for i, delta in enumerate(deltas):
        base = 0.4 + 0.05 * i
        value = base * math.exp(delta) if kind == "log ratio" else base + delta
        rows.append({f"diag/grad/{high}/{stat}": value, f"diag/grad/{low}/{stat}": base,
                     "diag/grad/full/norm": full_norm, "diag/grad/full/cos_full": 1.0})
    return rows


def gradient_study(study, rows_s0, rows_s1=()):
    """Diagnosed batches on two runs of the full arm (diagnostics pooled over runs)."""
    study.run("full", 0, diag=list(rows_s0))
    study.run("full", 1, diag=list(rows_s1))
    return judged(study)


@pytest.mark.parametrize("claim", list(GRADIENT_CLAIMS))
@pytest.mark.parametrize("expected", list(DELTAS))
def test_gradient_claims_follow_the_interval_over_batches(study, claim, expected):
    rows = diag_rows(claim, DELTAS[expected])
    verdict, evidence = gradient_study(study, rows[:3], rows[3:])[claim]
    assert verdict == expected, evidence
    assert "over 5 diagnosed batch(es) of full" in evidence and "95 % CI" in evidence


def test_the_gradient_claims_are_split_and_independent(study):
    """Anchors aligned with full but not less volatile; explorers not larger but more volatile than random."""
    rows = [{**a, **b, **c} for a, b, c in zip(diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"]),
                                                diag_rows("anchors_stable_vs_explorers", DELTAS["not reproduced"]),
                                                diag_rows("explorers_larger", DELTAS["not reproduced"]))]
    claims = gradient_study(study, rows)
    assert claims["anchors_aligned_vs_explorers"][0] == "reproduced"
    assert claims["anchors_stable_vs_explorers"][0] == "not reproduced"
    assert claims["explorers_larger"][0] == "not reproduced"
    assert claims["anchors_aligned_vs_random"][0] == "inconclusive"  # the random subset's cosine is not logged
    assert "no diagnosed batch logged diag/grad/random/cos_full" in claims["anchors_aligned_vs_random"][1]


def test_per_token_size_prefers_token_grad_proxy(study):
    """The proxy says explorers are larger; norm_per_token (a diluted measure) says the reverse: the proxy wins.
    Without the proxy, norm_per_token is read."""
    rows = [{**a, **b} for a, b in zip(diag_rows("explorers_larger", DELTAS["reproduced"]),
                                       diag_rows("explorers_larger", DELTAS["not reproduced"], stat="norm_per_token"))]
    verdict, evidence = gradient_study(study, rows)["explorers_larger"]
    assert verdict == "reproduced" and evidence.startswith("token_grad_proxy:")
    assert "explorers/anchors ratio ×" in evidence


def test_per_token_size_falls_back_to_norm_per_token(study):
    rows = diag_rows("explorers_larger", DELTAS["not reproduced"], stat="norm_per_token")
    verdict, evidence = gradient_study(study, rows)["explorers_larger"]
    assert verdict == "not reproduced" and evidence.startswith("norm_per_token:")


@pytest.mark.parametrize("rows, reason", [
    (diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"][:2]),
     "only 2 diagnosed batch(es) of full; the gradient claims need at least 3"),
    (diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"], full_norm=0.0),
     "the full gradient is zero on all 5 diagnosed batch(es)"),
    ([], "no gradient diagnostics logged"),
])
def test_too_little_gradient_evidence_is_inconclusive(study, rows, reason):
    verdict, evidence = gradient_study(study, rows)["anchors_aligned_vs_explorers"]
    assert verdict == "inconclusive" and reason in evidence


def test_batches_with_a_zero_full_gradient_are_left_out(study):
    rows = diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"])
    rows += diag_rows("anchors_aligned_vs_explorers", DELTAS["not reproduced"][:2], full_norm=0.0)
    verdict, evidence = gradient_study(study, rows)["anchors_aligned_vs_explorers"]
    assert verdict == "reproduced" and "2 batch(es) with a zero full gradient left out" in evidence


def test_every_claim_has_a_verdict_in_order(study):
    claims = gradient_study(study, [])
    assert list(claims) == [key for key, _ in CLAIMS]
    assert all(verdict in ("reproduced", "not reproduced", "inconclusive") and evidence
               for verdict, evidence in claims.values())


# --- claims a study declares (other papers, judged against the arm named full) --------------------------

DECLARED = [{"arm": "ktr", "test": "keeps_gain", "text": "Video-KTR's attributed tokens match all tokens",
             "paper": "2601.19686"},
            {"arm": "pgpo", "test": "beats", "set": "hard", "text": "PGPO beats DAPO on grounded answers",
             "paper": "2604.01840"}]


def declared_study(study, ktr, pgpo_hard, full=FULL_LEARNED):
    from tokenfocus.report.tables import verdict_table

    study.initial(in_dist=60, hard=20)
    for seed in range(3):
        study.run("full", seed, full[seed], 20 + (seed == 2) * 2)
        study.run("ktr", seed, ktr[seed], 20)
        study.run("pgpo", seed, 100, pgpo_hard[seed])
    root = study.index(arms=("full", "ktr", "pgpo"), claims=DECLARED)
    runs = load_runs(root)
    return verdict_table(runs, eval_set_names(root, runs), DECLARED)


@pytest.mark.parametrize("ktr, pgpo_hard, full, expected", [
    ((108, 110, 112), (40, 42, 44), FULL_LEARNED, ["reproduced", "reproduced"]),
    ((62, 64, 66), (20, 20, 20), FULL_LEARNED, ["not reproduced", "inconclusive"]),
    ((88, 90, 92), (1, 1, 1), FULL_LEARNED, ["inconclusive", "not reproduced"]),
    ((108, 110, 112), (40, 42, 44), FULL_FLAT, ["inconclusive", "inconclusive"]),
])
def test_declared_claims_reach_each_verdict(study, ktr, pgpo_hard, full, expected):
    header, rows = declared_study(study, ktr, pgpo_hard, full)
    assert header[0] == "claim (arXiv 2601.19686, 2604.01840)"
    # Two rows per claim (greedy pass@1, then mean@k), in the declared order.
    assert [row[0] for row in rows] == [
        "Video-KTR's attributed tokens match all tokens (greedy pass@1, in-dist)",
        "Video-KTR's attributed tokens match all tokens (mean@k, in-dist)",
        "PGPO beats DAPO on grounded answers (greedy pass@1, hard)",
        "PGPO beats DAPO on grounded answers (mean@k, hard)"]
    assert [rows[0][1], rows[2][1]] == expected
    assert "ktr - full" in rows[0][2] or "did not beat" in rows[0][2]
    assert rows[1][1] == "inconclusive" and "per-problem" not in rows[1][2]  # no sampled outcomes in these files


def test_a_verdict_on_fewer_seeds_than_the_study_plans_says_it_is_provisional(study):
    from tokenfocus.report.study_report import render_report
    from tokenfocus.report.tables import verdict_table

    study.initial(in_dist=60, hard=20)
    for seed in range(3):
        study.run("full", seed, FULL_LEARNED[seed], 20)
    study.run("ktr", 0, 110, 20)  # one of the three planned seeds has finished
    study.run("pgpo", 0, 100, 42)
    study.run("pgpo", 1, 100, 42)
    root = study.index(arms=("full", "ktr", "pgpo"), claims=DECLARED)
    runs = load_runs(root)
    rows = verdict_table(runs, eval_set_names(root, runs), DECLARED, planned_seeds=3)[1]
    assert rows[0][1] == "reproduced (provisional: 1 of 3 seeds)"
    assert rows[2][1] == "reproduced (provisional: 2 of 3 seeds)"
    assert verdict_table(runs, eval_set_names(root, runs), DECLARED)[1][0][1] == "reproduced"  # nothing planned
    render_report(root)  # the summary reads the planned seeds from study.json
    summary = (root / "summary.md").read_text()
    assert ("| Video-KTR's attributed tokens match all tokens (greedy pass@1, in-dist) | "
            "**reproduced (provisional: 1 of 3 seeds)** |") in summary
    for seed in (1, 2):
        study.run("ktr", seed, 110, 20)
    root = study.index(arms=("full", "ktr", "pgpo"), claims=DECLARED)
    runs = load_runs(root)
    assert verdict_table(runs, eval_set_names(root, runs), DECLARED, planned_seeds=3)[1][0][1] == "reproduced"


def test_the_report_judges_the_declared_claims_instead_of_the_flagship(study):
    from tokenfocus.report.study_report import render_report

    study.initial(in_dist=60, hard=20)
    for seed in range(3):
        study.run("full", seed, FULL_LEARNED[seed], 20)
        study.run("ktr", seed, 110, 20)
        study.run("pgpo", seed, 100, 42)
    root = study.index(arms=("full", "ktr", "pgpo"), claims=DECLARED)
    render_report(root)
    summary = (root / "summary.md").read_text()
    assert "| claim (arXiv 2601.19686, 2604.01840) | verdict | evidence |" in summary
    assert "| Video-KTR's attributed tokens match all tokens (greedy pass@1, in-dist) | **reproduced** |" in summary
    assert "| PGPO beats DAPO on grounded answers (greedy pass@1, hard) | **reproduced** |" in summary
    assert "Uniformly random 20 %" not in summary
    html = (root / "report.html").read_text()
    assert "PGPO beats DAPO on grounded answers" in html and "Low2High soft reweighting beats" not in html


def test_declared_claims_follow_the_flagship_claims_when_the_study_has_flagship_arms(study):
    from tokenfocus.report.tables import verdict_table

    accuracy_study(study, random20=(108, 110, 112))
    for seed in range(3):
        study.run("d3s", seed, 110, 20)
    declared = [{"arm": "d3s", "test": "keeps_gain", "text": "D3S keeps the accuracy", "paper": "2509.22115"}]
    root = study.index(arms=("full", "random20", "d3s"), claims=declared)
    runs = load_runs(root)
    header, rows = verdict_table(runs, eval_set_names(root, runs), declared)
    assert header[0] == "claim (arXiv 2605.07660, 2509.22115)"
    assert [row[0] for row in rows[:len(CLAIMS)]] == [text for _, text in CLAIMS]
    assert rows[len(CLAIMS)][:2] == ["D3S keeps the accuracy (greedy pass@1, in-dist)", "reproduced"]
    assert len(rows) == len(CLAIMS) + 2


# --- a declared claim's baseline (against) and the "preserves" test -------------------------------------


def baseline_study(study, opd, scope, full=FULL_FLAT, claims=None):
    from tokenfocus.report.tables import verdict_table

    study.initial(in_dist=60, hard=20)
    for seed in range(3):
        study.run("full", seed, full[seed], 20)
        study.run("opd", seed, opd[seed], 20)
        study.run("scope", seed, scope[seed], 20)
    root = study.index(arms=("full", "opd", "scope"), claims=claims)
    runs = load_runs(root)
    return verdict_table(runs, eval_set_names(root, runs), claims)[1]


AGAINST_OPD = [{"arm": "scope", "test": "beats", "against": "opd", "text": "SCOPE beats uniform OPD"}]


@pytest.mark.parametrize("opd, scope, expected, says", [
    (FULL_LEARNED, (140, 142, 144), "reproduced", "scope - opd +0.110 ["),  # full did not learn: opd is the gate
    (FULL_LEARNED, (98, 100, 102), "not reproduced", "scope - opd -0.100 ["),
    (FULL_FLAT, (140, 142, 144), "inconclusive", "opd did not beat the starting model on in-dist"),
])
def test_a_declared_claim_is_judged_against_its_own_baseline(study, opd, scope, expected, says):
    rows = baseline_study(study, opd, scope, claims=AGAINST_OPD)
    assert rows[0][1] == expected and says in rows[0][2], rows[0]


PRESERVES = [{"arm": "scope", "test": "preserves", "set": "in-dist", "against": "opd",
              "text": "SCOPE keeps the start's skill"}]


@pytest.mark.parametrize("scope, expected, says", [
    ((60, 60, 60), "reproduced", "scope - initial +0.000 ["),  # the start's 60 kept; bar -½·0.30 = -0.15
    ((10, 10, 10), "not reproduced", "lost more than half"),  # -0.25: wholly below -0.15
    ((30, 30, 30), "inconclusive", "straddles"),  # -0.15: on the bar
])
def test_preserves_compares_the_arm_with_the_start_against_half_the_baselines_gain(study, scope, expected, says):
    rows = baseline_study(study, FULL_LEARNED, scope, claims=PRESERVES)
    assert rows[0][1] == expected and says in rows[0][2] and "-½·gain = -0.150" in rows[0][2], rows[0]


def test_batches_with_fewer_than_eight_informative_groups_do_not_count(study):
    """Issue 11: a diagnosis needs >= 8 informative groups. Five batches of 4 groups that would read "reproduced"
    are left out (and said so); the same batches with 8 groups count."""
    rows = diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"])
    few = [{**row, "diag/informative_groups": 4.0} for row in rows]
    verdict, evidence = gradient_study(study, few)["anchors_aligned_vs_explorers"]
    assert verdict == "inconclusive", evidence
    assert "no diagnosed batch has 8 or more informative groups: 5 batch(es) with fewer than 8" in evidence


def test_the_eight_group_rule_leaves_out_only_the_small_batches(study):
    rows = diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"])
    mixed = [{**row, "diag/informative_groups": 8.0} for row in rows]
    mixed += [{**row, "diag/informative_groups": 3.0} for row in diag_rows("anchors_aligned_vs_explorers",
                                                                          DELTAS["not reproduced"][:2])]
    verdict, evidence = gradient_study(study, mixed)["anchors_aligned_vs_explorers"]
    assert verdict == "reproduced", evidence
    assert "over 5 diagnosed batch(es) of full; 2 batch(es) with fewer than 8 informative groups (3–3) left out" \
        in evidence


def write_diagnosis(root, name: str, rows: list[dict]) -> None:
    """``tokenfocus diagnose --out <study>/diagnose/<name>``'s lines file, one line per batch."""
    folder = root / "diagnose" / name
    folder.mkdir(parents=True)
    lines = [{"batch": i, "model": "m", "diag/informative_groups": 8.0, **row} for i, row in enumerate(rows)]
    (folder / "diagnosis.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_a_studys_diagnose_results_are_pooled_into_the_gradient_claims(study):
    """Training diagnosed too few groups (left out); `tokenfocus diagnose` batches in <study>/diagnose/ decide."""
    from tokenfocus.report.runs import load_diagnoses
    from tokenfocus.report.tables import results_tables

    small = [{**row, "diag/informative_groups": 4.0}
             for row in diag_rows("anchors_aligned_vs_explorers", DELTAS["not reproduced"][:3])]
    study.run("full", 0, diag=small)
    root = study.index()
    write_diagnosis(root, "initial", diag_rows("anchors_aligned_vs_explorers", DELTAS["reproduced"][:4]))
    runs, diagnoses = load_runs(root), load_diagnoses(root)
    assert [d["arm"] for d in diagnoses] == ["diagnose initial"] and sorted(diagnoses[0]["metrics"]) == [0, 1, 2, 3]
    assert verdicts(runs, eval_set_names(root, runs))["anchors_aligned_vs_explorers"][0] == "inconclusive"
    verdict, evidence = verdicts(runs, eval_set_names(root, runs), diagnoses)["anchors_aligned_vs_explorers"]
    assert verdict == "reproduced", evidence
    assert "over 4 diagnosed batch(es) of diagnose initial; 3 batch(es) with fewer than 8" in evidence
    page = results_tables(root)
    assert "### Gradient diagnosis" in page and "| diagnose initial | anchors | 4 | 8 |" in page
    assert "| full | anchors | 3 | 4 |" in page


def test_gradient_claims_use_student_t_over_few_batches(study):
    """Four batches all in the claim's direction but spread out: a percentile bootstrap would call it reproduced
    (every resampled mean is > 0); Student t's interval straddles 0."""
    rows = diag_rows("anchors_aligned_vs_explorers", (0.01, 0.30, 0.02, 0.05))
    verdict, evidence = gradient_study(study, rows)["anchors_aligned_vs_explorers"]
    assert verdict == "inconclusive", evidence
    assert "Student t over batches" in evidence
