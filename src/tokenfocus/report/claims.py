"""The flagship paper's claims (arXiv 2605.07660; RL_TOKEN_CREDIT.md §1.1, §1.12) judged on a study's run files.

Each claim is one statement with one verdict: reproduced / not reproduced / inconclusive. Rules, so that they
cannot flatter:

- A difference counts only when its 95 % bootstrap interval (``stats``) excludes the bar: the thresholds are
  the measured noise, not constants. Accuracy differences are paired by problem, resampling problems and seeds.
- Accuracy claims are judged twice, on greedy pass@1 and on mean@k (k samples at temperature 1, the expected
  accuracy of one sample: what RL at that temperature optimizes), each only when full-token training learned on
  that metric: the interval of (full - initial) on the in-distribution set lies above 0. Otherwise "random 20 %
  recovers most of full" and "Low2High beats full" have nothing to be measured against.
- Gradient claims use paired differences per diagnosed batch (the same step of the same run, or one batch of
  ``tokenfocus diagnose``) with a Student t interval over batches (a percentile bootstrap undercovers at 4-8
  units); a batch counts only with at least ``MIN_GROUPS`` informative prompt groups (fewer make every subset's
  gradient a handful of groups), and the claims need at least ``MIN_BATCHES`` such batches with a non-zero full
  gradient.
- Two-part statements of the paper are split: anchors are compared with explorers and with random 20 %;
  "explorers larger" and "explorers more volatile" are separate rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .runs import HARD_SETS, INITIAL, default_set_order
from .stats import (
    Interval,
    finite,
    mean_sd,
    outcome_matrices,
    paired_difference,
    spread_text,
    t_interval,
)

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
FULL, RANDOM, LOW2HIGH = "full", "random20", "low2high"
MIN_PROBLEMS = 20  # fewer shared problems make a degenerate bootstrap (one problem: an interval of width 0)
MIN_BATCHES = 3
MIN_GROUPS = 8  # informative prompt groups a diagnosed batch needs to count (issue 11: >= 8)
FLOOR = 0.05  # hard-set accuracy at or below this for both arms: the comparison has no room to show anything
ZERO_GRADIENT = 1e-12

CLAIMS = (
    ("random20_recovers_full", ("Uniformly random 20 % of tokens recover most (more than half) of full-token "
                                "training's in-distribution gain (greedy pass@1)")),
    ("random20_recovers_full_sampled", ("Uniformly random 20 % of tokens recover most (more than half) of "
                                        "full-token training's in-distribution gain (mean@k at T = 1)")),
    ("anchors_aligned_vs_explorers", ("Anchors (low attention entropy) give gradients better aligned with the full "
                                      "gradient than explorers (high attention entropy)")),
    ("anchors_aligned_vs_random", "Anchors give gradients better aligned with the full gradient than a random 20 %"),
    ("anchors_stable_vs_explorers", "Anchors give less volatile gradients than explorers"),
    ("anchors_stable_vs_random", "Anchors give less volatile gradients than a random 20 %"),
    ("explorers_larger", "Explorers give larger per-token gradients than anchors"),
    ("explorers_volatile", "Explorers give more volatile gradients than a random 20 %"),
    ("low2high_beats_full", "Low2High soft reweighting beats full-token training on the hard set (greedy pass@1)"),
    ("low2high_beats_full_sampled", ("Low2High soft reweighting beats full-token training on the hard set "
                                     "(mean@k at T = 1)")),
)
FIELDS = {"greedy": "greedy pass@1", "sampled": "mean@k"}  # per-problem outcome -> what the evidence calls it


# --- accuracy: paired comparisons of two arms on one eval set --------------------------------------------


@dataclass(frozen=True)
class Paired:
    """arm a - arm b on one set's paired problems: the interval and each seed's mean over those problems."""

    a: str
    b: str
    diff: Interval
    a_seeds: list[float]
    b_seeds: list[float]

    def accuracy(self, which: str) -> str:
        """``full 0.410 ± 0.010 (3 seeds)``; one seed has no spread."""
        arm, seeds = (self.a, self.a_seeds) if which == "a" else (self.b, self.b_seeds)
        return f"{arm} {spread(*mean_sd(seeds), len(seeds))}"


def spread(mean: float, sd: float | None, seeds: int) -> str:
    """``0.410 ± 0.010 (3 seeds)`` with two or more seeds, ``0.410 (1 seed)`` with one."""
    return f"{spread_text(mean, sd, seeds)} ({seeds} seed{'' if seeds == 1 else 's'})"


def paired(runs: list[dict], a: str, b: str, set_name: str, field: str = "greedy") -> Paired | str:
    """a - b on ``set_name`` paired by problem, or the reason it cannot be computed."""
    problems = {}
    for arm in (a, b):
        members = [r for r in runs if r["arm"] == arm]
        if not members:
            return f"no {arm} runs"
        scored = [r["evals"][set_name] for r in members if set_name in r["evals"]]
        if not scored:
            return f"no {arm} evaluation on the {set_name} set"
        problems[arm] = [e["problems"] for e in scored if e.get("problems")]
        if not problems[arm]:
            return (f"{arm}'s {set_name} eval files have no per-problem outcomes (written before they were "
                    "logged); the paired interval needs them")
    matrices = outcome_matrices(problems[a], problems[b], field)
    if matrices is None:
        return f"{a} and {b} share no scored {set_name} problem ({field})"
    x, y = matrices
    if x.shape[1] < MIN_PROBLEMS:
        return f"{a} and {b} share only {x.shape[1]} scored {set_name} problems ({field}); need {MIN_PROBLEMS}"
    return Paired(a, b, paired_difference(x, y), [float(v) for v in x.mean(1)], [float(v) for v in y.mean(1)])


def _present(runs: list[dict], *arms: str) -> str | None:
    have = {r["arm"] for r in runs}
    absent = [arm for arm in arms if arm not in have]
    return f"not tested: the study has no {', '.join(absent)} run" if absent else None


def _untested(runs: list[dict], arm: str, base: str, in_dist: str, field: str) -> str | None:
    """Why a claim on ``arm`` against ``base`` is not tested (an arm is missing), or None. When only ``arm`` is
    missing, the reason also says whether the base beat the start: whether running ``arm`` could give a verdict."""
    absent = _present(runs, base, arm, INITIAL)
    if absent is None or _present(runs, base, INITIAL) is not None:
        return absent
    _, why = full_learned(runs, in_dist, field, base)
    return f"{absent}; nor could it be judged: {why}" if why else absent


def full_learned(runs: list[dict], in_dist: str, field: str = "greedy",
                 base: str = FULL) -> tuple[Paired | None, str | None]:
    """The gate of the accuracy claims: (base - initial on the in-distribution set, None) when its interval
    lies above 0, else (what was measured or None, why the claims cannot be judged). ``base``: the baseline arm
    (full-token training, or the arm a declared claim names with ``against``)."""
    gate = paired(runs, base, INITIAL, in_dist, field)
    if isinstance(gate, str):
        return None, f"the gate ({base} - initial) cannot be computed: {gate}"
    if not gate.diff.above(0):
        what = "full-token training" if base == FULL else base
        return gate, (f"{what} did not beat the starting model on {in_dist} ({FIELDS[field]}): "
                      f"{base} - initial "
                      f"{gate.diff.text()} (95 % CI over {gate.diff.n} problems) does not lie above 0; "
                      f"{gate.accuracy('b')}, {gate.accuracy('a')}")
    return gate, None


def _gated(runs: list[dict], arm: str, in_dist: str, field: str, base: str) -> tuple[Paired | None, str | None]:
    """(the base's gain over the start, None), or (None, why a claim on ``arm`` cannot be judged): an arm is
    missing, or the base did not learn in-distribution."""
    absent = _untested(runs, arm, base, in_dist, field)
    if absent:
        return None, absent
    gate, why = full_learned(runs, in_dist, field, base)
    return (None, why) if why else (gate, None)


def _keeps_gain(runs: list[dict], arm: str, in_dist: str, field: str = "greedy", base: str = FULL) -> tuple[str, str]:
    """``arm`` recovers most (more than half) of full's in-distribution gain: it beats the start, and arm - full
    lies above -½·gain (random 20 % in the flagship; Video-KTR's and D3S's subsets "match all tokens")."""
    gate, why = _gated(runs, arm, in_dist, field, base)
    if why:
        return INCONCLUSIVE, why
    vs_initial = paired(runs, arm, INITIAL, in_dist, field)
    vs_full = paired(runs, arm, base, in_dist, field)
    for found in (vs_initial, vs_full):
        if isinstance(found, str):
            return INCONCLUSIVE, found
    gain = gate.diff.estimate
    bar = -gain / 2  # "most" of the gain: the arm loses less than half of it
    evidence = (f"{in_dist} {FIELDS[field]} over {gate.diff.n} paired problems, differences with their 95 % CI: "
                f"{gate.accuracy('b')}, {gate.accuracy('a')}, {vs_full.accuracy('a')}; "
                f"{base} - initial {gate.diff.text()}; "
                f"{arm} - initial {vs_initial.diff.text()}; {arm} - {base} {vs_full.diff.text()} against "
                f"-½·gain = {bar:+.3f}")
    if vs_full.diff.below(bar):
        return NOT_REPRODUCED, f"{arm} - {base} lies wholly below -½·gain. {evidence}"
    if vs_initial.diff.above(0) and vs_full.diff.above(bar):
        return REPRODUCED, f"{arm} beats the start and keeps more than half the gain. {evidence}"
    return INCONCLUSIVE, f"the intervals straddle the bars (0 and -½·gain). {evidence}"


def _beats(runs: list[dict], arm: str, in_dist: str, set_name: str | None, field: str = "greedy",
           base: str = FULL) -> tuple[str, str]:
    """``arm`` beats ``base`` (full) on ``set_name``: the paired interval of arm - base lies above 0 (judged only
    when the base learned in-distribution, and not when both arms sit at the floor)."""
    absent = _untested(runs, arm, base, in_dist, field)
    if absent:
        return INCONCLUSIVE, absent
    if set_name is None:
        return INCONCLUSIVE, f"no hard set was evaluated (one named {' or '.join(HARD_SETS)})"
    _, why = full_learned(runs, in_dist, field, base)
    if why:
        return INCONCLUSIVE, why
    found = paired(runs, arm, base, set_name, field)
    if isinstance(found, str):
        return INCONCLUSIVE, found
    evidence = (f"{set_name} {FIELDS[field]} over {found.diff.n} paired problems, difference with its 95 % CI: "
                f"{found.accuracy('b')}, {found.accuracy('a')}; {arm} - {base} {found.diff.text()}")
    means = [mean_sd(found.a_seeds)[0], mean_sd(found.b_seeds)[0]]
    if max(means) <= FLOOR:
        return INCONCLUSIVE, f"{set_name} accuracy of both arms is at the floor (≤ {FLOOR}). {evidence}"
    verdict = (REPRODUCED if found.diff.above(0) else NOT_REPRODUCED if found.diff.below(0) else INCONCLUSIVE)
    return verdict, evidence


def _preserves(runs: list[dict], arm: str, in_dist: str, set_name: str, field: str = "greedy",
               base: str = FULL) -> tuple[str, str]:
    """``arm`` keeps a skill of the starting model measured on ``set_name`` (e.g. short-context arithmetic beside
    long-context training): arm - initial on that set lies above -½·gain, the gain being the base's (full's)
    in-distribution gain over the start, so "kept" means losing less of the old skill than half of what training
    gained; not reproduced when it lies wholly below that bar. Judged only when the base learned."""
    gate, why = _gated(runs, arm, in_dist, field, base)
    if why:
        return INCONCLUSIVE, why
    found = paired(runs, arm, INITIAL, set_name, field)
    if isinstance(found, str):
        return INCONCLUSIVE, found
    bar = -gate.diff.estimate / 2
    evidence = (f"{set_name} {FIELDS[field]} over {found.diff.n} paired problems: {found.accuracy('b')}, "
                f"{found.accuracy('a')}; {arm} - initial {found.diff.text()} against -½·gain = {bar:+.3f} "
                f"({base} - initial on {in_dist}: {gate.diff.text()})")
    if found.diff.below(bar):
        return NOT_REPRODUCED, f"{arm} lost more than half the gain's worth of the skill. {evidence}"
    if found.diff.above(bar):
        return REPRODUCED, f"{arm} - initial lies above -½·gain. {evidence}"
    return INCONCLUSIVE, f"the interval straddles -½·gain. {evidence}"


# --- claims a study declares (other papers' comparisons against full-token training) ---------------------

CLAIM_TESTS = {"beats": "beats the baseline", "keeps_gain": "keeps more than half of the baseline's gain",
               "preserves": "keeps the starting model's skill on a set (loses less than half the baseline's gain)"}


def declared_verdicts(runs: list[dict], claims: list[dict], sets: list[str]) -> list[tuple[str, str, str]]:
    """(statement, verdict, evidence) rows for the ``claims`` of a study config ({arm, test, set, text, paper,
    against}), each judged on greedy pass@1 and on mean@k, against the claim's baseline arm (``against``; default
    the arm named ``full``)."""
    in_dist, hard = set_roles(sets)
    rows = []
    for claim in claims:
        set_name = {"in-dist": in_dist, "hard": hard}.get(claim.get("set", "in-dist"), claim.get("set"))
        base = claim.get("against", FULL)
        for field in ("greedy", "sampled"):
            statement = f"{claim['text']} ({FIELDS[field]}{', ' + set_name if set_name else ''})"
            if in_dist is None:
                rows.append((statement, INCONCLUSIVE, "no held-out evaluation"))
            elif claim["test"] == "keeps_gain":
                rows.append((statement, *_keeps_gain(runs, claim["arm"], set_name or in_dist, field, base)))
            elif claim["test"] == "preserves":
                rows.append((statement, *_preserves(runs, claim["arm"], in_dist, set_name or in_dist, field, base)))
            else:
                rows.append((statement, *_beats(runs, claim["arm"], in_dist, set_name, field, base)))
    return rows


# --- gradient geometry: paired differences per diagnosed batch -------------------------------------------


# claim -> (stat, subset expected higher, subset expected lower, how a batch's pair becomes one number).
# "random" is the diagnosis's uniformly random 20 % subset. Explorers' volatility is judged against it: explorers
# vs anchors is already the anchors_stable_vs_explorers row, and one comparison must not count as two verdicts.
# Per-token size is a ratio (log, then back), since its scale changes by orders of magnitude across batches.
GRADIENT_CLAIMS = {
    "anchors_aligned_vs_explorers": ("cos_full", "anchors", "explorers", "difference"),
    "anchors_aligned_vs_random": ("cos_full", "anchors", "random", "difference"),
    "anchors_stable_vs_explorers": ("split_half_volatility", "explorers", "anchors", "difference"),
    "anchors_stable_vs_random": ("split_half_volatility", "random", "anchors", "difference"),
    "explorers_larger": ("token size", "explorers", "anchors", "log ratio"),
    "explorers_volatile": ("split_half_volatility", "explorers", "random", "difference"),
}
SIZE_STATS = ("token_grad_proxy", "norm_per_token")  # the first one logged measures per-token size


def _pair(row: dict, stat: str, high: str, low: str) -> list[float]:
    """[high's, low's] value of ``stat`` in one metrics row; shorter when either is not logged."""
    return finite([row.get(f"diag/grad/{high}/{stat}"), row.get(f"diag/grad/{low}/{stat}")])


def _size_stat(runs: list[dict], high: str, low: str) -> str:
    for stat in SIZE_STATS:
        if any(len(_pair(row, stat, high, low)) == 2 for run in runs for row in run["metrics"].values()):
            return stat
    return SIZE_STATS[-1]


def _gradient(runs: list[dict], claim: str) -> tuple[str, str]:
    """``runs``: training runs and ``tokenfocus diagnose`` results alike, {"arm", "metrics": {step: row}}."""
    stat, high, low, kind = GRADIENT_CLAIMS[claim]
    if stat == "token size":
        stat = _size_stat(runs, high, low)
    differences, highs, lows, zero, few, arms = [], [], [], 0, [], set()
    for run in runs:
        for step in sorted(run["metrics"]):
            row = run["metrics"][step]
            pair = _pair(row, stat, high, low)
            if len(pair) < 2:
                continue
            full = finite([row.get("diag/grad/full/norm")])
            if full and full[0] <= ZERO_GRADIENT:  # every group's rewards were equal: no gradient to compare
                zero += 1
                continue
            groups = finite([row.get("diag/informative_groups")])
            if groups and groups[0] < MIN_GROUPS:
                few.append(int(groups[0]))
                continue
            if kind == "log ratio":
                if min(pair) <= 0:
                    continue
                differences.append(math.log(pair[0] / pair[1]))
            else:
                differences.append(pair[0] - pair[1])
            highs.append(pair[0])
            lows.append(pair[1])
            arms.add(run["arm"])
    left_out = (f"{len(few)} batch(es) with fewer than {MIN_GROUPS} informative groups "
                f"({min(few)}–{max(few)}) left out" if few else "")
    if not differences:
        if zero:
            return INCONCLUSIVE, (f"the full gradient is zero on all {zero} diagnosed batch(es) (every prompt "
                                  "group's rewards were equal)" + (f"; {left_out}" if left_out else ""))
        if few:
            return INCONCLUSIVE, (f"no diagnosed batch has {MIN_GROUPS} or more informative groups: {left_out} "
                                  f"(`tokenfocus diagnose MODEL --groups {MIN_GROUPS}` gathers them)")
        if not any(key.startswith("diag/grad/") for run in runs for row in run["metrics"].values() for key in row):
            return INCONCLUSIVE, "no gradient diagnostics logged"
        keys = [f"diag/grad/{subset}/{stat}" for subset in (high, low)]
        absent = [k for k in keys if not any(k in row for run in runs for row in run["metrics"].values())]
        return INCONCLUSIVE, (f"no diagnosed batch logged {' or '.join(absent)} (that subset was not diagnosed)"
                              if absent else f"no diagnosed batch logged both {' and '.join(keys)}")
    where = f"{len(differences)} diagnosed batch(es) of {', '.join(sorted(arms))}"
    if zero:
        where += f"; {zero} batch(es) with a zero full gradient left out"
    if few:
        where += f"; {left_out}"
    means = f"{stat}: {high} {sum(highs) / len(highs):.3g}, {low} {sum(lows) / len(lows):.3g} (mean over batches)"
    if len(differences) < MIN_BATCHES:
        return INCONCLUSIVE, f"only {where}; the gradient claims need at least {MIN_BATCHES}. {means}"
    interval = t_interval(differences)
    if kind == "log ratio":
        shown = (f"{high}/{low} ratio ×{math.exp(interval.estimate):.3g} [95 % CI ×{math.exp(interval.low):.3g}, "
                 f"×{math.exp(interval.high):.3g}] (geometric mean; Student t over batches)")
    else:
        shown = f"{high} - {low} {interval.text()} (95 % CI, Student t over batches)"
    verdict = REPRODUCED if interval.above(0) else NOT_REPRODUCED if interval.below(0) else INCONCLUSIVE
    return verdict, f"{means}; paired per batch: {shown} over {where}"


# --- all claims ------------------------------------------------------------------------------------------


def set_roles(sets: list[str]) -> tuple[str | None, str | None]:
    """(in-distribution set, hard set): the first set, and the one named ``hard`` (older: ``hard-test``)."""
    in_dist = next((s for s in sets if s not in HARD_SETS), None)
    hard = next((s for s in HARD_SETS if s in sets), None)
    return in_dist, hard


def verdicts(runs: list[dict], sets: list[str] | None = None,
             diagnoses: list[dict] = ()) -> dict[str, tuple[str, str]]:
    """claim key (``CLAIMS``) -> (verdict, evidence) for every claim. ``sets``: the eval sets in order, the
    in-distribution one first (``runs.eval_set_names``); by default the sets the runs were scored on, ``in-dist``
    or ``test`` first. ``diagnoses``: ``tokenfocus diagnose`` results (``runs.load_diagnoses``), pooled with the
    training runs' diagnosed batches for the gradient claims."""
    if sets is None:
        sets = sorted({name for run in runs for name in run["evals"]}, key=default_set_order)
    in_dist, hard = set_roles(sets)
    out = {}
    for field, suffix in (("greedy", ""), ("sampled", "_sampled")):
        if in_dist is None:
            out[f"random20_recovers_full{suffix}"] = out[f"low2high_beats_full{suffix}"] = (
                INCONCLUSIVE, "no held-out evaluation")
        else:
            out[f"random20_recovers_full{suffix}"] = _keeps_gain(runs, RANDOM, in_dist, field)
            out[f"low2high_beats_full{suffix}"] = _beats(runs, LOW2HIGH, in_dist, hard, field)
    for claim in GRADIENT_CLAIMS:
        out[claim] = _gradient([*runs, *diagnoses], claim)
    return {key: out[key] for key, _ in CLAIMS}
