"""`tokenfocus report DIR`: one self-contained HTML file (plots embedded) plus PNGs, from run files alone.

DIR is a study directory (``study.json`` + one run directory per arm and seed) or a single run directory.
Read: metrics.jsonl (last record per step), eval/*-final.json, samples/tokens.jsonl, policy_weights.jsonl,
evidence.json. Nothing is recomputed: the report imports no training code.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from ..io import POLICY_WEIGHTS_FILE, atomic_write_text, latest_metrics, read_jsonl
from .token_page import STYLE, token_section

CLAIMS = (
    ("random20_matches_full", "Uniformly random 20 % of tokens preserve most of full-token held-out accuracy"),
    ("anchors_stable_aligned", "Anchors (low attention entropy) give gradients better aligned with the full "
                               "gradient and less volatile than explorers"),
    ("explorers_large_volatile", "Explorers (high attention entropy) give larger per-token and more volatile gradients"),
    ("low2high_beats_full", "Low2High soft reweighting improves held-out (hard-tier) accuracy over full-token training"),
)


def _index(root: Path) -> dict | None:
    index = root / "study.json"
    return json.loads(index.read_text()) if index.is_file() else None


def load_runs(root: Path, allow_empty: bool = False) -> list[dict]:
    """[{arm, seed, dir, metrics: {step: row}, evals: {split: result}, samples: rows}] for a study or one run.

    A study's failed runs and runs without a directory are left out (``incomplete_runs`` lists them)."""
    index = _index(root)
    if index is not None:
        entries = [e for e in index.get("runs", []) if e.get("status") != "failed" and e.get("dir") and (root / e["dir"]).is_dir()]
        dirs = [(e["arm"], e["seed"], root / e["dir"]) for e in entries]
    else:
        dirs = [(root.name, 0, root)]
    runs = []
    for arm, seed, run_dir in dirs:
        evals = {p.name.removesuffix("-final.json"): json.loads(p.read_text())
                 for p in sorted((run_dir / "eval").glob("*-final.json"))}
        samples = run_dir / "samples" / "tokens.jsonl"
        evidence = run_dir / "evidence.json"
        weights = run_dir / POLICY_WEIGHTS_FILE  # the last record per step (a resumed run logs its steps again)
        runs.append({"arm": arm, "seed": seed, "dir": run_dir, "metrics": latest_metrics(run_dir / "metrics.jsonl"),
                     "evals": evals, "samples": read_jsonl(samples) if samples.is_file() else [],
                     "weights": {r["step"]: r for r in read_jsonl(weights)} if weights.is_file() else {},
                     "evidence": json.loads(evidence.read_text()) if evidence.is_file() else None})
    if not allow_empty and (not runs or not any(r["metrics"] for r in runs)):
        raise ValueError(f"{root} holds no run with metrics.jsonl steps; point report at a run or study directory")
    return runs


def incomplete_runs(root: Path) -> dict[str, list[dict]]:
    """A study's runs that did not finish: ``failed`` [{arm, seed, error}] (from study.json) and ``missing``
    [{arm, seed, reason}]: an arm x seed of study.json's arms and seeds with no finished run (never ran, or
    stopped part way)."""
    index = _index(root)
    if index is None:
        return {"failed": [], "missing": []}
    entries = index.get("runs", [])
    failed = [{"arm": e["arm"], "seed": e["seed"], "error": e.get("error", "unknown error")}
              for e in entries if e.get("status") == "failed"]
    status = {(e["arm"], e["seed"]): e.get("status") for e in entries}
    missing = []
    for seed in index.get("seeds", []):
        for arm in index.get("arms", {}):
            state = status.get((arm, seed))
            if state == "partial":
                missing.append({"arm": arm, "seed": seed, "reason": "stopped part way (resume the study to finish it)"})
            elif state is None:
                missing.append({"arm": arm, "seed": seed, "reason": "never ran"})
            elif state == "done" and not (root / f"{arm}-s{seed}").is_dir():
                missing.append({"arm": arm, "seed": seed, "reason": "its run directory is gone"})
    return {"failed": failed, "missing": missing}


def _incomplete_html(root: Path) -> str:
    found = incomplete_runs(root)
    if not found["failed"] and not found["missing"]:
        return ""
    rows = "".join(f"<tr><td>{html.escape(str(r['arm']))}</td><td>{r['seed']}</td><td>failed</td>"
                   f"<td style='text-align:left'>{html.escape(r['error'])}</td></tr>" for r in found["failed"])
    rows += "".join(f"<tr><td>{html.escape(str(r['arm']))}</td><td>{r['seed']}</td><td>missing</td>"
                    f"<td style='text-align:left'>{html.escape(r['reason'])}</td></tr>" for r in found["missing"])
    return (f"<h2>Failed and missing runs</h2><p>{len(found['failed'])} failed, {len(found['missing'])} missing: the "
            "summary, verdicts and curves below leave them out.</p><table id=\"incomplete\"><tr><th>arm</th>"
            f"<th>seed</th><th>status</th><th>error / reason</th></tr>{rows}</table>")


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def _by_arm(runs):
    arms: dict[str, list[dict]] = {}
    for run in runs:
        arms.setdefault(run["arm"], []).append(run)
    return arms


def _diag_mean(runs: list[dict], key: str) -> float:
    values = [row[key] for run in runs for row in run["metrics"].values() if isinstance(row.get(key), (int, float))]
    return _mean_std(values)[0]


def summary(runs: list[dict]) -> dict[str, dict]:
    out = {}
    for arm, members in _by_arm(runs).items():
        last = [m["metrics"][max(m["metrics"])] for m in members if m["metrics"]]
        row = {"seeds": len(members)}
        for split in sorted({s for m in members for s in m["evals"]}):
            row[f"{split} pass@1"] = _mean_std([m["evals"].get(split, {}).get("pass@1") for m in members])
        row["final reward"] = _mean_std([r.get("reward/mean") for r in last])
        row["final length"] = _mean_std([r.get("completion/mean_length") for r in last])
        out[arm] = row
    return out


def verdicts(runs: list[dict]) -> dict[str, tuple[str, str]]:
    """claim -> (verdict, evidence). Verdicts: reproduced / not reproduced / inconclusive at this scale."""
    arms = _by_arm(runs)
    out = {}

    def acc(arm, split):
        return _mean_std([m["evals"].get(split, {}).get("pass@1") for m in arms.get(arm, [])])

    split = "test"
    if "full" in arms and "random20" in arms:
        (f, fs), (r, rs) = acc("full", split), acc("random20", split)
        tolerance = max(0.03, 2 * max(fs, rs))
        if math.isnan(f) or math.isnan(r):
            out["random20_matches_full"] = ("inconclusive", "no held-out evaluation")
        elif f < 0.05:
            out["random20_matches_full"] = ("inconclusive", f"full-token accuracy is at the floor ({f:.3f})")
        elif min(len(arms["full"]), len(arms["random20"])) < 2:
            out["random20_matches_full"] = ("inconclusive", f"one seed only: full {f:.3f}, random20 {r:.3f}")
        elif "initial" in arms and f <= acc("initial", split)[0] + max(0.03, 2 * fs):
            # "preserves most of full-token training" needs full-token training to have gained something
            start = acc("initial", split)[0]
            out["random20_matches_full"] = (
                "inconclusive", f"full-token training did not improve on the starting model ({split} pass@1 initial "
                                f"{start:.3f}, full {f:.3f}±{fs:.3f}, random20 {r:.3f}±{rs:.3f})")
        else:
            verdict = "reproduced" if r >= f - tolerance else "not reproduced"
            out["random20_matches_full"] = (verdict, f"{split} pass@1 full {f:.3f}±{fs:.3f}, random20 {r:.3f}±{rs:.3f}")
    cos_a, cos_e = _diag_mean(runs, "diag/grad/anchors/cos_full"), _diag_mean(runs, "diag/grad/explorers/cos_full")
    vol_a = _diag_mean(runs, "diag/grad/anchors/split_half_volatility")
    vol_e = _diag_mean(runs, "diag/grad/explorers/split_half_volatility")
    norm_a = _diag_mean(runs, "diag/grad/anchors/norm_per_token")
    norm_e = _diag_mean(runs, "diag/grad/explorers/norm_per_token")
    full_norm = _diag_mean(runs, "diag/grad/full/norm")
    diagnosed = sum(isinstance(row.get("diag/grad/full/norm"), float) for run in runs for row in run["metrics"].values())
    evidence = (f"cos to full: anchors {cos_a:.3f}, explorers {cos_e:.3f}; volatility: anchors {vol_a:.3f}, "
                f"explorers {vol_e:.3f}; norm per token: anchors {norm_a:.3g}, explorers {norm_e:.3g}")
    if any(math.isnan(x) for x in (cos_a, cos_e, vol_a, vol_e)):
        out["anchors_stable_aligned"] = ("inconclusive", "no gradient diagnostics logged")
        out["explorers_large_volatile"] = ("inconclusive", "no gradient diagnostics logged")
    elif diagnosed < 3:
        reason = f"only {diagnosed} diagnosed batch(es); the gradient claims need at least 3"
        out["anchors_stable_aligned"] = ("inconclusive", f"{reason}. {evidence}")
        out["explorers_large_volatile"] = ("inconclusive", f"{reason}. {evidence}")
    elif not full_norm > 1e-12:
        reason = "the full gradient is zero on the diagnosed batches (every group's rewards were equal)"
        out["anchors_stable_aligned"] = ("inconclusive", reason)
        out["explorers_large_volatile"] = ("inconclusive", reason)
    else:
        # A difference counts only beyond the noise: the bootstrap spread of the cosines (over prompt groups),
        # and 0.05 for the split-half volatility and the relative norm.
        noise = max(_diag_mean(runs, "diag/grad/anchors/bootstrap_cos_std"),
                    _diag_mean(runs, "diag/grad/explorers/bootstrap_cos_std"), 0.02)
        evidence += f"; bootstrap spread of the cosines {noise:.3f}"

        def direction(difference: float, threshold: float) -> int:
            return 1 if difference > threshold else -1 if difference < -threshold else 0

        aligned = direction(cos_a - cos_e, noise) + direction(vol_e - vol_a, 0.05)
        larger = direction((norm_e - norm_a) / max(norm_a, 1e-30), 0.05) + direction(vol_e - vol_a, 0.05)
        label = {2: "reproduced", -2: "not reproduced"}
        out["anchors_stable_aligned"] = (label.get(aligned, "inconclusive"), evidence)
        out["explorers_large_volatile"] = (label.get(larger, "inconclusive"), evidence)
    hard = "hard-test" if any("hard-test" in m["evals"] for m in runs) else split
    if "full" in arms and "low2high" in arms:
        (f, fs), (l2h, ls) = acc("full", hard), acc("low2high", hard)
        if math.isnan(f) or math.isnan(l2h):
            out["low2high_beats_full"] = ("inconclusive", "no held-out evaluation")
        elif max(f, l2h) < 0.05:
            out["low2high_beats_full"] = ("inconclusive", f"{hard} accuracy is at the floor (full {f:.3f}, low2high {l2h:.3f})")
        else:
            margin = max(fs, ls, 0.01)
            verdict = ("reproduced" if l2h - f > margin else "not reproduced" if f - l2h > margin else "inconclusive")
            out["low2high_beats_full"] = (verdict, f"{hard} pass@1 full {f:.3f}±{fs:.3f}, low2high {l2h:.3f}±{ls:.3f}")
    return out


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
            means = [_mean_std([m["metrics"].get(s, {}).get(key) for m in members])[0] for s in steps]
            ax.plot(steps, means, label=arm, marker="." if len(steps) < 30 else None)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, ncol=2)
    return draw


def _accuracy_bars(runs):
    def draw(ax):
        table = summary(runs)
        arms = list(table)
        splits = sorted({k for row in table.values() for k in row if k.endswith("pass@1")})
        width = 0.8 / max(1, len(splits))
        for i, split in enumerate(splits):
            means = [table[a].get(split, (float("nan"), 0))[0] for a in arms]
            stds = [table[a].get(split, (0, 0))[1] for a in arms]
            ax.bar([j + i * width for j in range(len(arms))], means, width, yerr=stds, label=split, capsize=3)
        ax.set_xticks([j + width * (len(splits) - 1) / 2 for j in range(len(arms))], arms, rotation=30, fontsize=7)
        ax.set_ylabel("held-out pass@1 (mean ± std over seeds)")
        ax.legend(fontsize=7)
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


FIGURES = (
    ("reward", "Training reward per arm", lambda runs: _curve(runs, "reward/mean", "reward (mean over seeds)")),
    ("accuracy", "Held-out accuracy per arm", _accuracy_bars),
    ("grad_cos", "Cosine of subset gradients to the full gradient",
     lambda runs: _subset_curve(runs, "cos_full", "cos(g_S, g_full)")),
    ("grad_norm", "Gradient norm per selected token", lambda runs: _subset_curve(runs, "norm_per_token", "‖g_S‖ / N_S")),
    ("entropy", "Attention entropy of anchors and explorers over training", lambda runs: _entropy_curve(runs)),
    ("weights", "Low2High weight histograms", _weight_histogram),
    ("evidence", "Attention mass on the prompt (evidence gathering): anchors, explorers, correct vs incorrect",
     lambda runs: _pooled_curves(runs, {g: f"diag/prompt_mass/{g}" for g in EVIDENCE_GROUPS},
                                 "attention mass on prompt keys")),
)
EVIDENCE_GROUPS = ("anchors", "all", "explorers", "correct", "incorrect")


def _pooled_curves(runs, keys: dict[str, str], ylabel: str):
    """One line per label: the mean over all runs of ``key`` at each step where it was logged (diagnostics)."""
    def draw(ax):
        for label, key in keys.items():
            steps = sorted({s for m in runs for s, row in m["metrics"].items() if isinstance(row.get(key), float)})
            means = [_mean_std([m["metrics"].get(s, {}).get(key) for m in runs])[0] for s in steps]
            if steps:
                ax.plot(steps, means, label=label, marker="o")
        ax.set_xlabel("optimizer step (all diagnosed runs pooled)")
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no diagnosed batch logged this", ha="center", transform=ax.transAxes)
    return draw


def _subset_curve(runs, field, ylabel):
    subsets = ("random", "anchors", "middle", "explorers")
    return _pooled_curves(runs, {s: f"diag/grad/{s}/{field}" for s in subsets}, ylabel)


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


def evidence_table(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """arm -> column -> (mean, std over seeds) of the evidence-gathering numbers (``tokenfocus evidence``)."""
    out = {}
    for arm, members in _by_arm(runs).items():
        found = [m["evidence"] for m in members if m.get("evidence")]
        if found:
            row = {label: _mean_std([e.get(key) for e in found]) for label, key in EVIDENCE_COLUMNS}
            row["greedy accuracy"] = _mean_std([e.get("accuracy") for e in found])
            out[arm] = row
    return out


def _evidence_html(runs: list[dict]) -> str:
    table = evidence_table(runs)
    if not table:
        return ("<p>No evidence.json yet: run <code>tokenfocus evidence DIR</code> for attention mass on the "
                "prompt and its number tokens per arm.</p>")
    columns = ["greedy accuracy", *(label for label, _ in EVIDENCE_COLUMNS)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["arm", *columns])
    body = "".join(
        f"<tr><th>{html.escape(arm)}</th>" + "".join(
            f"<td>{row[c][0]:.3f} ± {row[c][1]:.3f}</td>" if not math.isnan(row[c][0]) else "<td>–</td>"
            for c in columns) + "</tr>"
        for arm, row in table.items())
    return (f"<p>Greedy answers to held-out problems; anchors / explorers are the lowest / highest 20 % of "
            f"attention entropy. Mean ± std over seeds.</p><table id=\"evidence\"><tr>{head}</tr>{body}</table>")


def render_report(root: Path) -> Path:
    """Write ``root/report.html`` and ``root/plots/*.png``; return the HTML path."""
    root = Path(root)
    incomplete = _incomplete_html(root)
    runs = load_runs(root, allow_empty=bool(incomplete))  # a study whose runs all failed still gets its page
    plots = root / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, caption, make in FIGURES:
        png = _figure(make(runs))
        (plots / f"{name}.png").write_bytes(png)
        figures.append((name, caption, base64.b64encode(png).decode()))
    table = summary(runs)
    columns = sorted({k for row in table.values() for k in row if k != "seeds"})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["arm", "seeds", *columns])
    body = ""
    for arm, row in table.items():
        cells = "".join(f"<td>{row[c][0]:.3f} ± {row[c][1]:.3f}</td>" if c in row and not math.isnan(row[c][0])
                        else "<td>–</td>" for c in columns)
        body += f"<tr><th>{html.escape(arm)}</th><td>{row['seeds']}</td>{cells}</tr>"
    claims = verdicts(runs)
    claim_rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(text)}</td><td><b>{html.escape(claims[key][0])}</b></td>"
        f"<td style='text-align:left'>{html.escape(claims[key][1])}</td></tr>"
        for key, text in CLAIMS if key in claims)
    figure_html = "".join(f'<figure id="fig-{n}"><img alt="{html.escape(c)}" src="data:image/png;base64,{b}">'
                          f"<figcaption>{html.escape(c)}</figcaption></figure>" for n, c, b in figures)
    sets = {f"{m['arm']} (seed {m['seed']})": m["samples"] for m in runs if m["samples"]}
    shown = list(dict.fromkeys(name for rows in sets.values() for r in rows for name in r["signals"]))
    heatmaps = (token_section(sets, shown, "attention_entropy") if sets else "<p>No sample responses saved.</p>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tokenfocus report — {html.escape(root.name)}</title>
<style>{STYLE} figure{{display:inline-block;margin:.5rem}} img{{max-width:100%}}</style></head><body>
<h1>tokenfocus report — {html.escape(root.name)}</h1>
<p class="meta">{len(runs)} runs · rendered from the run files alone</p>
{incomplete}
<h2>Summary per arm</h2><table id="summary"><tr>{head}</tr>{body}</table>
<h2>The paper's claims at this scale</h2>
<table id="verdicts"><tr><th>claim (arXiv 2605.07660)</th><th>verdict</th><th>evidence</th></tr>{claim_rows}</table>
<h2>Evidence gathering</h2>{_evidence_html(runs)}
<h2>Curves</h2>{figure_html}
<h2>Sample responses</h2>{heatmaps}
</body></html>
"""
    target = root / "report.html"
    atomic_write_text(target, page)
    return target
