"""The verdicts of a `tokenfocus prune` sweep from its result rows (the recipe writes them into summary.json; the
page renders them): per (method, layer, budget) means, paired differences to random with 95 % bootstrap intervals
over examples, and the five papers' claims (PRUNING_TOKENIZERS_MECHANISMS.md A1-A5). Pure functions of the rows and
the sweep's settings (a ``PruneConfig``, read by attribute).

Claims are judged on Δ log p(gold), paired by example, pooled over the sweep's layers (and budgets where the claim is
about all of them); the bars are measured effects, not constants ("≈" = closer than half of the compared method's own
advantage over random).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

BASELINE = "random"
LENS = "lens"  # the budget of EmbedLens rows: what its categories leave, per example


# --- summary: means, paired differences to random, verdicts -------------------------------------------------


METRICS = ("delta_logp", "kl_first", "exact", "evidence", "flops", "kept_share", "alive_share")


def _cells(rows: list[dict]) -> dict[tuple, dict[int, dict]]:
    """(method, layer, budget) -> example -> metrics (random's draws averaged per example)."""
    grouped: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[(row["method"], row["layer"], row["budget"])][row["example"]].append(row)
    cells = {}
    for key, by_example in grouped.items():
        cells[key] = {ex: {m: (statistics.fmean(float(r[m]) for r in rs) if rs[0].get(m) is not None else None)
                           for m in METRICS} for ex, rs in by_example.items()}
    return cells


def _paired(a: dict[int, dict], b: dict[int, dict], metric: str = "delta_logp"):
    from ..report.stats import paired_difference

    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    return paired_difference([[a[e][metric] for e in shared]], [[b[e][metric] for e in shared]])


def _interval(found) -> dict | None:
    return None if found is None else {"estimate": found.estimate, "low": found.low, "high": found.high,
                                       "n": found.n}


def summarize(rows: list[dict], information: dict | None, config) -> dict:
    cells = _cells(rows)
    table = []
    def order(item):
        (method, layer, budget), _ = item
        return (str(layer), isinstance(budget, str), 0.0 if isinstance(budget, str) else budget, method)

    for (method, layer, budget), by_example in sorted(cells.items(), key=order):
        means = {m: (statistics.fmean(v[m] for v in by_example.values()) if all(
            v[m] is not None for v in by_example.values()) else None) for m in METRICS}
        base = cells.get((BASELINE, layer, budget))
        versus = _paired(by_example, base) if base is not None and method != BASELINE else None
        table.append({"method": method, "layer": layer, "budget": budget, "examples": len(by_example), **means,
                      "vs_random": _interval(versus)})
    unpruned = {row["example"]: row["full_exact"] for row in rows}  # the same for every row of an example
    return {"table": table, "horizon": (information or {}).get("horizon"), "claims": judge(cells, information, config),
            "unpruned_exact": statistics.fmean(map(float, unpruned.values())) if unpruned else None,
            "examples": len(unpruned)}


REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def _pooled(cells, method: str, keys: list[tuple]) -> dict[int, dict]:
    """Per example: the method's metrics averaged over the (layer, budget) cells ``keys``."""
    per: dict[int, list[dict]] = defaultdict(list)
    for layer, budget in keys:
        for ex, values in cells.get((method, layer, budget), {}).items():
            per[ex].append(values)
    return {ex: {"delta_logp": statistics.fmean(v["delta_logp"] for v in vs)} for ex, vs in per.items()
            if len(vs) == len(keys)}


def judge(cells, information: dict | None, config) -> list[dict]:
    """The papers' claims on this sweep (Δ log p(gold), paired by example, 95 % intervals). Bars come from the
    measured effects, not constants: "≈" / "matches" means closer than half the compared methods' own advantage
    over random."""
    keys = [(layer, budget) for layer in config.layers for budget in config.budgets]
    claims = []

    def pooled(method, subset=keys):
        return _pooled(cells, method, subset)

    # A1: TTV alone is comparable to attention-based scores.
    ttv_keys = [k for k in keys if k[0] > 0]
    ttv, attention, random = pooled("ttv", ttv_keys), pooled("attention", ttv_keys), pooled(BASELINE, ttv_keys)
    claims.append(_close("TransPrune: TTV alone is comparable to attention-based scores (IGA)", "2507.20630",
                         ttv, attention, random, "ttv", "attention"))
    # A3: beyond the information horizon, random pruning matches the methods.
    claims.append(_horizon_claim(cells, information, config))
    # A2: SADS beats DivPrune and top-k at high pruning ratios (the smallest budget), two verdicts.
    smallest = min(config.budgets)
    high = [(layer, smallest) for layer in config.layers]
    for other, label in (("divprune", "DivPrune"), ("attention", "attention top-k")):
        claims.append(_beats(f"ZOO-Prune: SADS beats {label} at the highest pruning ratio (keep {smallest:g})",
                             "2509.24837", pooled("sads", high), pooled(other, high), "sads", other))
    claims.append(_predictor_claim(cells, config))
    claims.append(_alive_claim(cells, config))
    return claims


def _predictor_claim(cells, config) -> dict:
    """The predictor keeps most of what true relevance gains over random at the budget nearest 50 %: predicted -
    relevance lies above -½ (relevance - random) [our reading of "keeps most fidelity"]."""
    row = {"claim": "Explainability-guided compression: the relevance predictor keeps most fidelity at 50 %",
           "paper": "2506.01097"}
    budget = min(config.budgets, key=lambda b: abs(b - 0.5))
    keys = [(layer, budget) for layer in config.layers]
    predicted, true, random = (_pooled(cells, m, keys) for m in ("predicted", "relevance", BASELINE))
    if min(len(predicted), len(true), len(random)) < 2:
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested: predicted, relevance or random has no runs"}
    edge, gap = _paired(true, random), _paired(predicted, true)
    bar = -abs(edge.estimate) / 2
    evidence = (f"Δ log p(gold) at budget {budget:g}, {gap.n} examples pooled over layers: relevance - random "
                f"{_text(edge)}; predicted - relevance {_text(gap)} against -½|relevance - random| = {bar:+.3f}")
    if not edge.above(0):
        return {**row, "verdict": INCONCLUSIVE, "evidence": f"true relevance does not beat random. {evidence}"}
    if gap.low > bar:
        return {**row, "verdict": REPRODUCED, "evidence": f"the predictor keeps more than half. {evidence}"}
    if gap.high < bar:
        return {**row, "verdict": NOT_REPRODUCED, "evidence": f"the predictor loses more than half. {evidence}"}
    return {**row, "verdict": INCONCLUSIVE, "evidence": f"the interval straddles the bar. {evidence}"}


ALIVE_BAND = (0.5, 0.7)  # "about 60 %": within ten points [our reading]


def _alive_claim(cells, config) -> dict:
    from ..report.stats import mean_interval

    row = {"claim": "EmbedLens: about 60 % of projected (visual) tokens are alive", "paper": "2603.00510"}
    if config.testbed.get("name") != "digits":
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested here: the claim is about projected visual "
                "tokens (testbed digits); on text the lens reads hidden states (see the embedlens rows)"}
    # the share of image tokens the lens reads as alive (not kept_share: random's budget, at least one token)
    shares = [v["alive_share"] for v in cells.get(("embedlens", 0, LENS), {}).values()
              if v.get("alive_share") is not None]
    if len(shares) < 2:
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested: no embedlens rows at layer 0 (the projected "
                                                            "tokens as the LM reads them); add layer 0 to layers"}
    found = mean_interval(shares)
    low, high = ALIVE_BAND
    none = sum(1 for share in shares if share == 0)
    evidence = (f"alive share of the 16 image tokens at the LM input, {found.n} images: {_text(found)} "
                f"(band {low:.0%}-{high:.0%}); images with no alive token: {none}")
    if low <= found.low and found.high <= high:
        return {**row, "verdict": REPRODUCED, "evidence": evidence}
    if found.high < low or found.low > high:
        return {**row, "verdict": NOT_REPRODUCED, "evidence": evidence}
    return {**row, "verdict": INCONCLUSIVE, "evidence": f"the interval straddles the band. {evidence}"}


def _text(found) -> str:
    return f"{found.estimate:+.3f} [{found.low:+.3f}, {found.high:+.3f}]"


def _close(claim, paper, a, b, random, name_a, name_b) -> dict:
    row = {"claim": claim, "paper": paper}
    if min(len(a), len(b), len(random)) < 2:
        return {**row, "verdict": INCONCLUSIVE, "evidence": f"not tested: {name_a}, {name_b} or random has no runs"}
    gap, edge = _paired(a, b), _paired(b, random)
    bar = abs(edge.estimate) / 2
    evidence = (f"Δ log p(gold), {gap.n} examples pooled over layers and budgets: {name_a} - {name_b} "
                f"{_text(gap)}; {name_b} - random {_text(edge)}; bar ±½|{name_b} - random| = ±{bar:.3f}")
    if not (edge.above(0) or edge.below(0)):
        return {**row, "verdict": INCONCLUSIVE, "evidence": f"{name_b} does not differ from random: nothing to be "
                                                            f"close to. {evidence}"}
    if gap.low > -bar and gap.high < bar:
        return {**row, "verdict": REPRODUCED, "evidence": f"the interval lies within the bar. {evidence}"}
    if gap.high < -bar or gap.low > bar:
        return {**row, "verdict": NOT_REPRODUCED, "evidence": f"the interval lies outside the bar. {evidence}"}
    return {**row, "verdict": INCONCLUSIVE, "evidence": f"the interval straddles the bar. {evidence}"}


def _beats(claim, paper, a, b, name_a, name_b) -> dict:
    row = {"claim": claim, "paper": paper}
    if min(len(a), len(b)) < 2:
        return {**row, "verdict": INCONCLUSIVE, "evidence": f"not tested: {name_a} or {name_b} has no runs"}
    found = _paired(a, b)
    evidence = f"Δ log p(gold), {found.n} examples pooled over layers: {name_a} - {name_b} {_text(found)}"
    verdict = REPRODUCED if found.above(0) else NOT_REPRODUCED if found.below(0) else INCONCLUSIVE
    return {**row, "verdict": verdict, "evidence": evidence}


def _horizon_claim(cells, information, config) -> dict:
    row = {"claim": "Information horizon: beyond it, random pruning matches the methods", "paper": "2512.07580"}
    horizon = (information or {}).get("horizon")
    if not information:
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested: no information map (horizon: null)"}
    if horizon is None:
        return {**row, "verdict": INCONCLUSIVE, "evidence": "the map never goes flat over the layers probed"}
    methods = [m for m in config.methods if m not in (BASELINE, "embedlens", "progressive")]
    before = [(layer, b) for layer in config.layers if layer < horizon for b in config.budgets]
    after = [(layer, b) for layer in config.layers if layer >= horizon for b in config.budgets]
    if not before or not after:
        return {**row, "verdict": INCONCLUSIVE,
                "evidence": f"horizon at layer {horizon}; the sweep needs layers on both sides of it ({config.layers})"}
    def edges(keys):
        found = {m: _paired(_pooled(cells, m, keys), _pooled(cells, BASELINE, keys)) for m in methods}
        return {m: f for m, f in found.items() if f is not None}
    early, late = edges(before), edges(after)
    if not early or not late:
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested: no method with runs on both sides"}
    best = max(early.values(), key=lambda f: f.estimate)
    bar = abs(best.estimate) / 2
    evidence = (f"horizon at layer {horizon}; method - random (Δ log p) before it: "
                + ", ".join(f"{m} {_text(f)}" for m, f in early.items()) + "; after it: "
                + ", ".join(f"{m} {_text(f)}" for m, f in late.items()) + f"; bar ±½ of the best early edge = ±{bar:.3f}")
    if not best.above(0):
        return {**row, "verdict": INCONCLUSIVE, "evidence": f"no method beats random before the horizon. {evidence}"}
    if all(f.low > -bar and f.high < bar for f in late.values()):
        return {**row, "verdict": REPRODUCED, "evidence": f"every method is within the bar of random after it. {evidence}"}
    if any(f.low > bar for f in late.values()):
        return {**row, "verdict": NOT_REPRODUCED, "evidence": f"a method still beats random by more than the bar. "
                                                              f"{evidence}"}
    return {**row, "verdict": INCONCLUSIVE, "evidence": f"intervals straddle the bar. {evidence}"}
