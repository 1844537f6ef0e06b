"""The report's tables as plain cells, rendered to HTML (report.html) and Markdown (summary.md, the results page).

One table per eval set: pass@1 and mean@k (mean ± sd over seeds; no sd for one seed) per arm, with the paired
95 % interval of the difference to the starting model and to full-token training. Then drift from the starting
model, the training summary, the gradient diagnosis per subset, and one row per claim with its verdict and evidence.
"""

from __future__ import annotations

import html
import math
import statistics
from pathlib import Path

from .claims import CLAIMS, FIELDS, FULL, LOW2HIGH, MIN_GROUPS, RANDOM, declared_verdicts, paired, verdicts
from .runs import (INITIAL, TEACHER, default_set_order, eval_set_names, incomplete_runs, load_diagnoses, load_runs,
                   read_index)
from .stats import mean_sd, spread_text

Table = tuple[list[str], list[list[str]]]  # header, rows of cells


def arm_order(runs: list[dict]) -> list[str]:
    """The starting model first, full-token training second, then the arms in the index's order."""
    arms = list(dict.fromkeys(r["arm"] for r in runs))
    return sorted(arms, key=lambda a: (a != INITIAL, a != FULL, arms.index(a)))


cell = spread_text  # one table cell: mean ± sd over seeds


def sampled_metric(runs: list[dict], set_name: str) -> str | None:
    """The set's mean@k key (``mean@4``) when the eval files logged a sampled accuracy."""
    for run in runs:
        result = run["evals"].get(set_name, {})
        for key, value in result.items():
            if key.startswith("mean@") and not key.endswith("_by_tier") and isinstance(value, (int, float)):
                return key
    return None


def _members(runs: list[dict], arm: str) -> list[dict]:
    return [r for r in runs if r["arm"] == arm]


def _spread_cell(values: list) -> str:
    mean, sd = mean_sd(values)
    return cell(mean, sd, sum(v is not None for v in values))


def _significant_cell(values: list) -> str:
    """Like ``_spread_cell`` in 3 significant digits: drift spans orders of magnitude (a relative distance of 8e-5)."""
    mean, sd = mean_sd(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.3g} ± {sd:.2g}" if sd is not None and sum(v is not None for v in values) >= 2 else f"{mean:.3g}"


def _mean_cell(values: list) -> str:
    """The mean of the finite values in 3 significant digits ("–" when none)."""
    mean, _ = mean_sd(values)
    return "–" if math.isnan(mean) else f"{mean:.3g}"


def set_table(runs: list[dict], set_name: str) -> Table:
    """arm, seeds, pass@1, its paired difference to initial and to full [95 % CI], the same for mean@k."""
    metrics = [("pass@1", "greedy")]
    sampled = sampled_metric(runs, set_name)
    if sampled:
        metrics.append((sampled, "sampled"))
    header = ["arm", "seeds"]
    for name, _ in metrics:
        header += [name, f"Δ {name} vs initial [95 % CI]", f"Δ {name} vs full [95 % CI]"]
    rows = []
    for arm in arm_order(runs):
        scored = [r["evals"][set_name] for r in _members(runs, arm) if set_name in r["evals"]]
        if not scored:
            continue
        row = [arm, str(len(scored))]
        for name, field in metrics:
            row.append(_spread_cell([e.get(name) for e in scored]))
            for other in (INITIAL, FULL):
                found = paired(runs, arm, other, set_name, field) if other != arm else "itself"
                row.append("–" if isinstance(found, str) else found.diff.text())
        rows.append(row)
    return header, rows


def set_note(runs: list[dict], set_name: str) -> str:
    """What the set is: its split, problem count and tiers, from the eval files."""
    result = next((r["evals"][set_name] for r in runs if set_name in r["evals"]), {})
    n = result.get("n") or len(result.get("problems") or [])
    tiers = ", ".join(result.get("pass@1_by_tier") or {})
    return (f"{n} problems" + (f" of split {result['split']}" if result.get("split") else "")
            + (f", tiers {tiers}" if tiers else ""))


def seed_table(runs: list[dict], sets: list[str], arm: str = FULL) -> Table:
    """Each seed of ``arm`` against the starting model on every set and metric, alone (the go criterion of a
    testbed: full-token training beats the start beyond its paired interval in most seeds)."""
    header = ["set", "metric", "seed", arm, "initial", f"Δ {arm} − initial [95 % CI]", "beyond the CI"]
    rows = []
    for set_name in sets:
        for label, field in (("pass@1", "greedy"), (sampled_metric(runs, set_name), "sampled")):
            if label is None:
                continue
            for run in sorted(_members(runs, arm), key=lambda r: r["seed"]):
                found = paired([run] + _members(runs, INITIAL), arm, INITIAL, set_name, field)
                if isinstance(found, str):
                    continue
                verdict = "above" if found.diff.above(0) else "below" if found.diff.below(0) else "no"
                rows.append([set_name, label, str(run["seed"]), f"{found.a_seeds[0]:.3f}", f"{found.b_seeds[0]:.3f}",
                             found.diff.text(), verdict])
    return header, rows


def drift_table(runs: list[dict]) -> Table:
    """Per arm with drift.json: ||θ - θ0||, its relative size and the per-token KL to the starting model."""
    header = ["arm", "runs", "‖θ − θ0‖", "relative ‖θ − θ0‖ / ‖θ0‖", "KL to start (per token)"]
    rows = []
    for arm in arm_order(runs):
        found = [r["drift"] for r in _members(runs, arm) if r.get("drift")]
        if found:
            rows.append([arm, str(len(found))] + [_significant_cell([d.get(k) for d in found])
                                                  for k in ("l2", "relative", "kl_to_start")])
    return header, rows


TOOL_FIELDS = (("tool_calls_mean", "calls per problem"), ("tool_calls_per_solved", "calls per solved problem"),
               ("cas", "CAS"))  # what evaluation logs on a tool task (greedy decoding; recipes.evaluate)


def tool_table(runs: list[dict], sets: list[str]) -> Table:
    """On a tool task (T6): per set and arm, tool calls per problem, per solved problem and HyperEyes' efficiency
    score CAS (greedy; mean ± sd over seeds). Empty when no eval file logged tool calls."""
    header = ["set", "arm", "seeds", *(label for _, label in TOOL_FIELDS)]
    rows = []
    for set_name in sets:
        for arm in arm_order(runs):
            scored = [r["evals"][set_name] for r in _members(runs, arm)
                      if "tool_calls_mean" in r["evals"].get(set_name, {})]
            if scored:
                rows.append([set_name, arm, str(len(scored))]
                            + [_significant_cell([e.get(key) for e in scored]) for key, _ in TOOL_FIELDS])
    return header, rows


def summary(runs: list[dict]) -> dict[str, dict]:
    """arm -> {"seeds", "<set> pass@1", "<set> mean@k", "final reward", "final length"}: (mean, sd) over seeds,
    sd None for one seed."""
    out = {}
    for arm in arm_order(runs):
        members = _members(runs, arm)
        last = [m["metrics"][max(m["metrics"])] for m in members if m["metrics"]]
        row: dict = {"seeds": len(members)}
        for set_name in sorted({s for m in members for s in m["evals"]}):
            row[f"{set_name} pass@1"] = mean_sd([m["evals"].get(set_name, {}).get("pass@1") for m in members])
            sampled = sampled_metric(members, set_name)
            if sampled:
                row[f"{set_name} {sampled}"] = mean_sd([m["evals"].get(set_name, {}).get(sampled) for m in members])
        row["final reward"] = mean_sd([r.get("reward/mean") for r in last])
        row["final length"] = mean_sd([r.get("completion/mean_length") for r in last])
        out[arm] = row
    return out


def training_table(runs: list[dict]) -> Table:
    """Per arm: the last logged reward and length, and the median seconds per optimizer step of each run (mean ± sd
    over runs): what an arm costs (D3S's claim is a saving), measured where the runs ran."""
    header = ["arm", "runs", "final reward", "final length", "s/step (median)"]
    rows = []
    for arm in arm_order(runs):
        trained = [m for m in _members(runs, arm) if m["metrics"]]
        if trained:
            last = [m["metrics"][max(m["metrics"])] for m in trained]
            step_times = [statistics.median(times) if times else None for times in
                          ([row["time/step_s"] for row in m["metrics"].values() if "time/step_s" in row]
                           for m in trained)]
            label = f"{arm} (its SFT)" if arm == TEACHER else arm  # a study's teacher: what making it cost
            rows.append([label, str(len(trained)), _spread_cell([r.get("reward/mean") for r in last]),
                         _spread_cell([r.get("completion/mean_length") for r in last]), _spread_cell(step_times)])
    return header, rows


DIAGNOSIS_STATS = ("cos_full", "split_half_volatility", "token_grad_proxy", "shared_prefix_fraction")


def diagnosis_table(runs: list[dict], diagnoses: list[dict] = ()) -> Table:
    """Per source of diagnosed batches (a training arm, its runs pooled, or a ``tokenfocus diagnose`` result) and
    per diagnosed subset: batches, informative groups per batch, and the mean over batches of the subset's cosine
    to the full gradient, split-half volatility, per-token size proxy and share of tokens in group-shared prefixes.
    Batches with a zero full gradient are left out, as in the claims."""
    sources: dict[str, list[dict]] = {}
    for run in [*runs, *diagnoses]:
        rows = [row for row in run["metrics"].values()
                if any(k.startswith("diag/grad/") for k in row) and (row.get("diag/grad/full/norm") or 0.0) > 0]
        sources.setdefault(run["arm"], []).extend(rows)
    header = ["source", "subset", "batches", "groups / batch", "cos to full", "split-half volatility",
              "per-token size", "in shared prefix"]
    out = []
    for source, rows in sources.items():
        subsets = list(dict.fromkeys(k.split("/")[2] for row in rows for k in row if k.startswith("diag/grad/")))
        groups = [row.get("diag/informative_groups") for row in rows]
        for subset in subsets:
            cells = [_mean_cell([row.get(f"diag/grad/{subset}/{stat}") for row in rows]) for stat in DIAGNOSIS_STATS]
            out.append([source, subset, str(len(rows)), _mean_cell(groups), *cells])
    return header, out


FLAGSHIP_ARMS = ("random20", "low2high", "anchors20", "explorers20")


FLAGSHIP_COMPARED = {"random20_recovers_full": (RANDOM, FULL), "random20_recovers_full_sampled": (RANDOM, FULL),
                     "low2high_beats_full": (LOW2HIGH, FULL), "low2high_beats_full_sampled": (LOW2HIGH, FULL)}


def verdict_table(runs: list[dict], sets: list[str] | None = None, declared: list[dict] | None = None,
                  diagnoses: list[dict] = (), planned_seeds: int | None = None) -> Table:
    """One row per claim: the flagship's (arXiv 2605.07660) when the study has a flagship arm or declares no claims,
    then the ``declared`` claims of the study config (other papers' arms against full). ``diagnoses``: the
    study's ``tokenfocus diagnose`` results, pooled into the gradient claims. ``planned_seeds``: the study's seed
    count; a verdict on arms that have fewer finished seeds says it is provisional."""
    sets = sets if sets is not None else sorted({n for run in runs for n in run["evals"]}, key=default_set_order)
    rows = []
    papers = []
    if not declared or any(r["arm"] in FLAGSHIP_ARMS for r in runs):
        claims = verdicts(runs, sets, diagnoses)
        rows += [[text, _provisional(runs, FLAGSHIP_COMPARED.get(key, ()), planned_seeds, claims[key][0]),
                  claims[key][1]] for key, text in CLAIMS]
        papers.append("2605.07660")
    if declared:
        judged = declared_verdicts(runs, declared, sets)
        compared = [(c["arm"], c.get("against", FULL)) for c in declared for _ in FIELDS]  # a row per metric
        rows += [[text, _provisional(runs, arms, planned_seeds, verdict), evidence]
                 for (text, verdict, evidence), arms in zip(judged, compared, strict=True)]
        papers += sorted({c["paper"] for c in declared if c.get("paper")} - set(papers))
    return [f"claim{' (arXiv ' + ', '.join(papers) + ')' if papers else ''}", "verdict", "evidence"], rows


def _provisional(runs: list[dict], arms: tuple[str, ...], planned: int | None, verdict: str) -> str:
    """``verdict``, marked provisional while the compared arms have fewer finished seeds than the study plans (a
    study grows in slices; its summary is committed after each)."""
    seeds = min((sum(r["arm"] == arm for r in runs) for arm in arms), default=0)
    if not planned or seeds == 0 or seeds >= planned:
        return verdict
    return f"{verdict} (provisional: {seeds} of {planned} seeds)"


def incomplete_table(root: Path) -> Table:
    found = incomplete_runs(root)
    rows = [[r["arm"], _seed(r["seed"]), "failed", r["error"]] for r in found["failed"]]
    rows += [[r["arm"], _seed(r["seed"]), "missing", r["reason"]] for r in found["missing"]]
    return ["arm", "seed", "status", "error / reason"], rows


def _seed(seed) -> str:
    return "–" if seed is None else str(seed)


# --- rendering ---------------------------------------------------------------------------------------------


def html_table(table: Table, table_id: str, bold: int | None = None, left: tuple[int, ...] = (),
               row_header: bool = True) -> str:
    """<table id=...>; the first column as row headers (``row_header``), column ``bold`` in <b>, columns
    ``left`` aligned left (long text)."""
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = ""
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            text = f"<b>{html.escape(value)}</b>" if i == bold else html.escape(value)
            style = " style='text-align:left'" if i in left else ""
            cells.append(f"<th>{text}</th>" if i == 0 and row_header else f"<td{style}>{text}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f'<table id="{html.escape(table_id)}"><tr>{head}</tr>{body}</table>'


def markdown_table(table: Table, bold: int | None = None) -> str:
    header, rows = table

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    shown = [[f"**{c}**" if i == bold else c for i, c in enumerate(row)] for row in rows]
    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in shown)])


INTERVAL_NOTE = ("Mean ± sd over seeds (sd with two or more seeds only). Δ: the paired difference in mean accuracy "
                 "with its 95 % bootstrap interval (2000 resamples of the problems, shared by both arms, and of the "
                 "seeds within each arm).")


DIAGNOSIS_NOTE = (f"Training runs diagnose one generation batch when it has enough informative groups; "
                  f"`tokenfocus diagnose` results sit in the study's `diagnose/` folder. The gradient claims count "
                  f"only batches with at least {MIN_GROUPS} informative groups.")


def results_tables(root: Path) -> str:
    """Markdown for the results page (docs/results/README.md): one accuracy table per eval set with paired
    intervals, drift, the training summary, a verdict per claim with its evidence, and the failed or missing
    runs. ``render_report`` writes the same text to ``summary.md`` beside report.html."""
    root = Path(root)
    incomplete = incomplete_table(root)
    runs = load_runs(root, allow_empty=bool(incomplete[1]))
    sets = eval_set_names(root, runs)
    index = read_index(root) or {}
    diagnoses = load_diagnoses(root)
    claims = verdict_table(runs, sets, index.get("claims"), diagnoses, len(index.get("seeds", [])))
    return results_markdown(runs, sets, incomplete, claims, diagnoses)


def results_markdown(runs: list[dict], sets: list[str], incomplete: Table | None = None,
                     claims: Table | None = None, diagnoses: list[dict] = ()) -> str:
    parts = []
    for set_name in sets:
        table = set_table(runs, set_name)
        if table[1]:
            parts.append(f"### Held-out accuracy: {set_name} ({set_note(runs, set_name)})\n\n"
                         f"{INTERVAL_NOTE}\n\n{markdown_table(table)}")
    seeds = seed_table(runs, sets)
    if seeds[1]:
        parts.append(f"### Full-token training against the starting model, seed by seed\n\n{markdown_table(seeds)}")
    tools = tool_table(runs, sets)
    if tools[1]:
        parts.append(f"### Tool use (greedy)\n\n{markdown_table(tools)}")
    drift = drift_table(runs)
    if drift[1]:
        parts.append(f"### Drift from the starting model\n\n{markdown_table(drift)}")
    training = training_table(runs)
    if training[1]:
        parts.append(f"### Training (last logged step)\n\n{markdown_table(training)}")
    diagnosis = diagnosis_table(runs, diagnoses)
    if diagnosis[1]:
        parts.append(f"### Gradient diagnosis (means over diagnosed batches)\n\n{DIAGNOSIS_NOTE}\n\n"
                     f"{markdown_table(diagnosis)}")
    claims = claims or verdict_table(runs, sets, diagnoses=diagnoses)
    parts.append(f"### The paper's claims at this scale\n\n{markdown_table(claims, bold=1)}")
    if incomplete and incomplete[1]:
        parts.append(f"### Failed and missing runs\n\n{markdown_table(incomplete)}")
    return "\n\n".join(parts) + "\n"
