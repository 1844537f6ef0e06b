"""`tokenfocus report DIR`: one self-contained HTML file (plots embedded), PNGs and a Markdown summary, from run
files alone.

DIR is a study directory (``study.json`` + one run directory per arm and seed, or its committed light copy
without models) or a single run directory. Read: metrics.jsonl (last record per step), eval/*-final.json,
drift.json, samples/tokens.jsonl, policy_weights.jsonl, evidence.json. Nothing is recomputed from a model: the
report imports no training code. Reading is in ``runs``, the statistics in ``stats``, the claims' verdicts in
``claims``, the tables (HTML and Markdown) in ``tables``; this module draws the figures and assembles the page.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from ..io import atomic_write_text
from .claims import CLAIMS, verdicts
from .runs import eval_set_names, incomplete_runs, load_diagnoses, load_runs, read_index
from .stats import mean_sd
from .tables import (
    DIAGNOSIS_NOTE,
    INTERVAL_NOTE,
    arm_order,
    cell,
    diagnosis_table,
    drift_table,
    html_table,
    incomplete_table,
    results_markdown,
    results_tables,
    seed_table,
    set_note,
    set_table,
    summary,
    tool_table,
    training_table,
    verdict_table,
)
from .token_page import STYLE, token_section

__all__ = ["CLAIMS", "evidence_table", "incomplete_runs", "load_runs", "render_report", "results_tables", "summary",
           "verdicts"]


def _by_arm(runs):
    return {arm: [r for r in runs if r["arm"] == arm] for arm in arm_order(runs)}


def _mean(values) -> float:
    return mean_sd(values)[0]


def _figure(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _curve(runs, key, ylabel):
    def draw(ax):
        for arm, members in _by_arm(runs).items():
            steps = sorted({s for m in members for s in m["metrics"] if key in m["metrics"][s]})
            if not steps:
                continue
            means = [_mean([m["metrics"].get(s, {}).get(key) for m in members]) for s in steps]
            ax.plot(steps, means, label=arm, marker="." if len(steps) < 30 else None)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, ncol=2)
    return draw


def _accuracy_bars(runs, sets: list[str]):
    """Greedy pass@1 per arm and eval set; error bars: the sd over seeds (none for a single seed)."""
    def draw(ax):
        table = summary(runs)
        arms = list(table)
        keys = [f"{s} pass@1" for s in sets if any(f"{s} pass@1" in row for row in table.values())]
        width = 0.8 / max(1, len(keys))
        for i, key in enumerate(keys):
            means = [table[a].get(key, (float("nan"), None))[0] for a in arms]
            sds = [table[a].get(key, (0.0, None))[1] for a in arms]
            sds = [float("nan") if sd is None else sd for sd in sds]  # one seed: no error bar
            ax.bar([j + i * width for j in range(len(arms))], means, width, yerr=sds, label=key, capsize=3)
        ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(arms))], arms, rotation=30, fontsize=7)
        ax.set_ylabel("held-out pass@1 (mean ± sd over seeds)")
        if keys:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no held-out evaluation", ha="center", transform=ax.transAxes)
    return draw


def _weight_histogram(runs):
    """The logged policy-weight histograms (``policy_weights.jsonl``) of one Low2High run near p = 0, 0.5, 1."""
    def draw(ax):
        # Low2High's arm, else any run with soft weights (a 0/1 subset's histogram ends at weight 1).
        soft = [m for m in runs if m["weights"] and m["arm"] == "low2high"] or [
            m for m in runs if any(r["edges"][-1] != 1.0 for r in m["weights"].values())]
        if not soft:
            ax.text(0.5, 0.5, "no soft-weight run logged policy_weights.jsonl", ha="center", transform=ax.transAxes)
            return
        run = soft[0]
        rows = sorted(run["weights"].values(), key=lambda r: r["step"])
        nearest = [min(rows, key=lambda r: abs(r["progress"] - target)) for target in (0.0, 0.5, 1.0)]
        for row in {r["step"]: r for r in nearest}.values():  # a short run has fewer than three distinct steps
            ax.stairs(row["counts"], row["edges"], fill=True, alpha=0.45,
                      label=f"step {row['step']} (p = {row['progress']:.2f})")
        ax.set_xlabel(f"token weight ({run['arm']}, seed {run['seed']}; all valid tokens of the generation batch)")
        ax.set_ylabel("tokens")
        ax.legend(fontsize=7)
    return draw


# name, title (shown above the figure), draw(runs, sets)
FIGURES = (
    ("reward", "Training reward per arm", lambda runs, _: _curve(runs, "reward/mean", "reward (mean over seeds)")),
    ("accuracy", "Held-out accuracy per arm and eval set (greedy pass@1)", _accuracy_bars),
    ("grad_cos", "Cosine of subset gradients to the full gradient",
     lambda runs, _: _subset_curve(runs, ("cos_full",), "cos(g_S, g_full)")),
    ("grad_norm", "Per-token gradient size of each subset",
     lambda runs, _: _subset_curve(runs, ("token_grad_proxy", "norm_per_token"), "per-token gradient size")),
    ("entropy", "Attention entropy of anchors and explorers over training", lambda runs, _: _entropy_curve(runs)),
    ("weights", "Low2High weight histograms", lambda runs, _: _weight_histogram(runs)),
    ("evidence", "Attention mass on the prompt (evidence gathering): anchors, explorers, correct vs incorrect",
     lambda runs, _: _pooled_curves(runs, {g: f"diag/prompt_mass/{g}" for g in EVIDENCE_GROUPS},
                                    "attention mass on prompt keys")),
)
EVIDENCE_GROUPS = ("anchors", "all", "explorers", "correct", "incorrect")


def _pooled_curves(runs, keys: dict[str, str], ylabel: str):
    """One line per label: the mean over all runs of ``key`` at each step where it was logged (diagnostics)."""
    def draw(ax):
        for label, key in keys.items():
            steps = sorted({s for m in runs for s, row in m["metrics"].items() if isinstance(row.get(key), float)})
            means = [_mean([m["metrics"].get(s, {}).get(key) for m in runs]) for s in steps]
            if steps:
                ax.plot(steps, means, label=label, marker="o")
        ax.set_xlabel("optimizer step (all diagnosed runs pooled)")
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no diagnosed batch logged this", ha="center", transform=ax.transAxes)
    return draw


def _subset_curve(runs, fields: tuple[str, ...], ylabel):
    """One line per diagnosed subset other than full (controls included), of the first of ``fields`` logged."""
    keys = {key for run in runs for row in run["metrics"].values() for key in row if key.startswith("diag/grad/")}
    field = next((f for f in fields if any(k.endswith(f"/{f}") for k in keys)), fields[-1])
    known = ("random", "anchors", "middle", "explorers")
    found = {k.split("/")[2] for k in keys if k.endswith(f"/{field}")} - {"full"}
    subsets = [s for s in known if s in found] + sorted(found - set(known)) or list(known)
    label = f"{ylabel} ({field})" if len(fields) > 1 else ylabel
    return _pooled_curves(runs, {s: f"diag/grad/{s}/{field}" for s in subsets}, label)


def _entropy_curve(runs):
    groups = ("anchors", "all", "explorers")
    return _pooled_curves(runs, {g: f"diag/attention_entropy/{g}" for g in groups}, "normalized attention entropy")


EVIDENCE_COLUMNS = (
    ("prompt mass: anchors", "prompt_mass/anchors"), ("prompt mass: explorers", "prompt_mass/explorers"),
    ("prompt mass w/o sink: anchors", "prompt_mass_nosink/anchors"),
    ("prompt mass w/o sink: explorers", "prompt_mass_nosink/explorers"),
    ("prompt mass: correct", "prompt_mass/correct"), ("prompt mass: incorrect", "prompt_mass/incorrect"),
    ("number-token mass: anchors", "evidence_mass/anchors"), ("number-token mass: explorers", "evidence_mass/explorers"),
    ("ρ(Ĥ, prompt mass)", "corr/attention_vs_prompt_mass"), ("ρ(Ĥ, number-token mass)", "corr/attention_vs_evidence_mass"),
)


def evidence_table(runs: list[dict]) -> dict[str, dict[str, tuple[float, float | None, int]]]:
    """arm -> column -> (mean, sd over seeds or None for one, runs) of the evidence-gathering numbers
    (``tokenfocus evidence``)."""
    out = {}
    for arm, members in _by_arm(runs).items():
        found = [m["evidence"] for m in members if m.get("evidence")]
        if found:
            row = {label: (*mean_sd([e.get(key) for e in found]), len(found)) for label, key in EVIDENCE_COLUMNS}
            row["greedy accuracy"] = (*mean_sd([e.get("accuracy") for e in found]), len(found))
            out[arm] = row
    return out


def _evidence_html(runs: list[dict]) -> str:
    table = evidence_table(runs)
    if not table:
        return ("<p>No evidence.json yet: run <code>tokenfocus evidence DIR</code> for attention mass on the "
                "prompt and its number tokens per arm.</p>")
    columns = ["greedy accuracy", *(label for label, _ in EVIDENCE_COLUMNS)]
    rows = [[arm, str(row["greedy accuracy"][2]), *(cell(*row[c]) for c in columns)] for arm, row in table.items()]
    return ("<p>Greedy answers to held-out problems; anchors / explorers are the lowest / highest 20 % of "
            "attention entropy. Mean ± sd over seeds (sd with two or more runs only).</p>"
            + html_table((["arm", "runs", *columns], rows), "evidence"))


def _incomplete_html(root: Path) -> str:
    table = incomplete_table(root)
    if not table[1]:
        return ""
    failed = sum(row[2] == "failed" for row in table[1])
    return (f"<h2>Failed and missing runs</h2><p>{failed} failed, {len(table[1]) - failed} missing: the "
            "summary, verdicts and curves below leave them out.</p>"
            + html_table(table, "incomplete", left=(3,), row_header=False))


def _note_html(root: Path) -> str:
    """The study's description, its note and its see-also link (a path relative to the report)."""
    index = read_index(root) or {}
    parts = [f"<p>{html.escape(index['description'])}</p>" if index.get("description") else "",
             f"<p class=\"note\"><b>{html.escape(index['note'])}</b></p>" if index.get("note") else ""]
    if index.get("see_also"):
        href = os.path.relpath(index["see_also"], root.resolve())
        parts.append(f'<p class="note">See also: <a id="see-also" href="{html.escape(href)}">{html.escape(href)}</a></p>')
    return "".join(parts)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def render_report(root: Path) -> Path:
    """Write ``root/report.html``, ``root/plots/*.png`` and ``root/summary.md`` (``results_tables``); return
    the HTML path."""
    root = Path(root)
    incomplete = _incomplete_html(root)
    runs = load_runs(root, allow_empty=bool(incomplete))  # a study whose runs all failed still gets its page
    sets = eval_set_names(root, runs)
    plots = root / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, title, make in FIGURES:
        png = _figure(make(runs, sets))
        (plots / f"{name}.png").write_bytes(png)
        figures.append((name, title, base64.b64encode(png).decode()))
    accuracy = "".join(
        f"<h3>{html.escape(s)} <span class=\"meta\">({html.escape(set_note(runs, s))})</span></h3>"
        + html_table(table, f"summary-{_slug(s)}")
        for s in sets for table in [set_table(runs, s)] if table[1]) or "<p>No held-out evaluation.</p>"
    seeds = seed_table(runs, sets)
    seeds_html = (f"<h2>Full-token training against the starting model, seed by seed</h2>"
                  f"{html_table(seeds, 'seeds', row_header=False)}" if seeds[1] else "")
    drift = drift_table(runs)
    drift_html = (f"<h2>Drift from the starting model</h2>{html_table(drift, 'drift')}" if drift[1] else "")
    tools = tool_table(runs, sets)
    if tools[1]:  # a tool task: calls and CAS before drift
        drift_html = f"<h2>Tool use (greedy)</h2>{html_table(tools, 'tools')}" + drift_html
    diagnoses = load_diagnoses(root)
    index = read_index(root) or {}
    claims = verdict_table(runs, sets, index.get("claims"), diagnoses, len(index.get("seeds", [])))
    diagnosis = diagnosis_table(runs, diagnoses)
    diagnosis_html = (f"<h2>Gradient diagnosis</h2><p>{html.escape(DIAGNOSIS_NOTE)}</p>"
                      f"{html_table(diagnosis, 'diagnosis', row_header=False)}" if diagnosis[1] else "")
    # The title sits above its figure, inside it: a caption below reads as the title of the next figure.
    figure_html = "".join(f'<figure id="fig-{n}"><figcaption>{html.escape(t)}</figcaption>'
                          f'<img alt="{html.escape(t)}" src="data:image/png;base64,{b}"></figure>'
                          for n, t, b in figures)
    sample_sets = {f"{m['arm']} (seed {m['seed']})": m["samples"] for m in runs if m["samples"]}
    shown = list(dict.fromkeys(name for rows in sample_sets.values() for r in rows for name in r["signals"]))
    heatmaps = (token_section(sample_sets, shown, "attention_entropy") if sample_sets
                else "<p>No sample responses saved.</p>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tokenfocus report — {html.escape(root.name)}</title>
<style>{STYLE} table[id^="summary"] td{{white-space:nowrap}} figure{{display:block;margin:1.2rem 0}} figcaption{{font-weight:600;margin-bottom:.3rem}}
img{{max-width:100%}}</style></head><body>
<h1>tokenfocus report — {html.escape(root.name)}</h1>
<p class="meta">{len(runs)} runs · rendered from the run files alone</p>
{_note_html(root)}
{incomplete}
<h2>Held-out accuracy per eval set</h2><p>{html.escape(INTERVAL_NOTE)}</p>{accuracy}
{seeds_html}
{drift_html}
<h2>Training</h2>{html_table(training_table(runs), "training")}
<h2>The paper's claims at this scale</h2>
<p>One row per claim; a difference counts only when its 95 % interval excludes the bar. The accuracy claims are
judged only when full-token training beat the starting model.</p>
{html_table(claims, "verdicts", bold=1, left=(0, 2), row_header=False)}
{diagnosis_html}
<h2>Evidence gathering</h2>{_evidence_html(runs)}
<h2>Curves</h2>{figure_html}
<h2>Sample responses</h2>{heatmaps}
</body></html>
"""
    target = root / "report.html"
    atomic_write_text(target, page)
    atomic_write_text(root / "summary.md", results_markdown(runs, sets, incomplete_table(root), claims, diagnoses))
    return target
