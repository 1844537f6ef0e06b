"""One self-contained HTML page for a `tokenfocus prune` sweep, rendered from its files (summary.json,
information.json, views.json, prune.yaml): the claims with their verdicts; per layer a table of every method next to
random at the same budget; fidelity-vs-budget curves; the ablation-information map (layer x context window) with
its horizon; and a token view of what each method kept. No script, no network: tables and inline SVG, each
figure's title above it."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

import yaml

from ..io import atomic_write_text
from .probe_page import EXTRA_STYLE, _e, _interval, _num, _read, svg_heatmap
from .token_page import STYLE

COLORS = ["#7f7f7f", "#1f8fff", "#d62f1f", "#2a9d4b", "#8e44ad", "#e67e22", "#16a085", "#c0392b"]
PAGE_STYLE = """
.keep{background:#cfe8ff} .drop{color:#bbb;text-decoration:line-through} .ev{border-bottom:2px solid #d62f1f}
.toks{font-family:monospace;font-size:.8rem;line-height:1.5;white-space:pre-wrap;margin:.2rem 0 .6rem}
.verdict{font-weight:700}
"""


def svg_curves(series: dict[str, list[tuple[float, float]]], width: int = 560, height: int = 220,
               x_label: str = "budget (kept fraction of the context)", y_label: str = "Δ log p(gold)") -> str:
    """Lines of (x, y) points per series, random first in grey, with a wrapped legend."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    plot_h = height - 70
    fx = lambda v: 50 + (width - 70) * (v - x0) / (x1 - x0)
    fy = lambda v: 10 + plot_h * (1 - (v - y0) / (y1 - y0))
    out = [(f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
            f"aria-label='{_e(y_label)} vs {_e(x_label)}'>"),
           f"<text x='2' y='14' font-size='10'>{_num(y1, 2)}</text>",
           f"<text x='2' y='{10 + plot_h}' font-size='10'>{_num(y0, 2)}</text>",
           f"<text x='50' y='{plot_h + 24}' font-size='10'>{_num(x0, 2)}</text>",
           f"<text x='{width - 40}' y='{plot_h + 24}' font-size='10'>{_num(x1, 2)}</text>",
           f"<text x='{width // 2 - 90}' y='{plot_h + 24}' font-size='10'>{_e(x_label)}</text>"]
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in sorted(pts))
        out.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{path}'/>")
        for x, y in pts:
            out.append(f"<circle cx='{fx(x):.1f}' cy='{fy(y):.1f}' r='2.5' fill='{color}'><title>{_e(name)} "
                       f"{_num(x, 2)}: {_num(y, 3)}</title></circle>")
        out.append(f"<text x='{50 + 120 * (k % 4)}' y='{plot_h + 40 + 13 * (k // 4)}' font-size='10' "
                   f"fill='{color}'>{_e(name)}</text>")
    return "".join(out) + "</svg>"


def _number(value) -> float:
    return 0.0 if isinstance(value, str) else float(value)


def _budget(row: dict) -> str:
    """A budget, or for EmbedLens' rows ("lens") the mean share its categories kept."""
    if isinstance(row["budget"], str):
        return f"{_e(row['budget'])} ({_num(row.get('kept_share'), 2)})"
    return _num(row["budget"], 3)


def _grid(context: list[int], chosen: set, side: int) -> str:
    """The image tokens as a side x side grid of patches, kept (blue) or dropped (grey)."""
    cells = "".join(f"<td style='width:14px;height:14px;background:{'#1f8fff' if p in chosen else '#ddd'}'></td>"
                    + ("</tr><tr>" if (i + 1) % side == 0 and i + 1 < len(context) else "")
                    for i, p in enumerate(context))
    return f"<table class='grid' style='border-collapse:collapse;margin:.2rem 0 .6rem'><tr>{cells}</tr></table>"


def _claims(claims: list[dict]) -> str:
    rows = "".join(f"<tr><td class='l'>{_e(c['claim'])} <span class='meta'>(arXiv {_e(c.get('paper', ''))})</span>"
                   f"</td><td class='verdict'>{_e(c['verdict'])}</td><td class='l'>{_e(c['evidence'])}</td></tr>"
                   for c in claims)
    return ("<h2>The papers' claims at this scale</h2><table id='claims'><tr><th class='l'>claim</th><th>verdict</th>"
            f"<th class='l'>evidence</th></tr>{rows}</table>")


def _layer_tables(table: list[dict]) -> str:
    by_layer: dict[str, list[dict]] = defaultdict(list)
    for row in table:
        by_layer[str(row["layer"])].append(row)
    parts = [("<h2>Fidelity per layer: every method beside random at the same budget</h2><p class='meta'>Δ log "
              "p(gold) = log p(gold answer | pruned) − log p(gold answer | unpruned), teacher-forced; vs random: the "
              "paired difference of Δ log p to random's mean over its draws, with its 95 % bootstrap interval over "
              "examples. KL at the first answer position; exact: greedy exact match; evidence: gold evidence tokens "
              "kept; FLOPs relative to the unpruned run.</p>")]
    for layer, rows in sorted(by_layer.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0)):
        label = "the progressive schedule" if layer == "progressive" else f"a drop before layer {layer}"
        body = "".join(
            f"<tr><td class='l'>{_e(r['method'])}</td><td>{_budget(r)}</td><td>{r['examples']}</td>"
            f"<td>{_num(r['delta_logp'])}</td><td>{_interval(r.get('vs_random'))}</td><td>{_num(r['kl_first'])}</td>"
            f"<td>{_num(r['exact'], 2)}</td><td>{_num(r['evidence'], 2)}</td><td>{_num(r['flops'], 2)}</td></tr>"
            for r in sorted(rows, key=lambda r: (isinstance(r["budget"], str), _number(r["budget"]),
                                                 r["method"] != "random", r["method"])))
        parts.append(f"<h3>{_e(label)}</h3><table id='layer-{_e(layer)}'><tr><th class='l'>method</th><th>budget</th>"
                     "<th>examples</th><th>Δ log p</th><th>vs random [95 % CI]</th><th>KL first</th><th>exact</th>"
                     f"<th>evidence</th><th>FLOPs</th></tr>{body}</table>")
    return "".join(parts)


def _curves(table: list[dict]) -> str:
    figures = []
    layers = sorted({r["layer"] for r in table if r["layer"] != "progressive"})
    for layer in layers:
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for row in table:
            if row["layer"] == layer and not isinstance(row["budget"], str) and row["delta_logp"] is not None:
                series[row["method"]].append((row["budget"], row["delta_logp"]))
        ordered = dict(sorted(series.items(), key=lambda kv: kv[0] != "random"))
        figures.append(f"<figure id='curve-{layer}'><figcaption>Δ log p(gold) vs budget, drop before layer {layer}"
                       f"</figcaption>{svg_curves(ordered)}</figure>")
    return "<h2>Fidelity vs budget</h2>" + "".join(figures)


def _information(info: dict) -> str:
    if not info or not info.get("mean"):
        return ""
    mean = info["mean"]
    columns = [f"w{j}" for j in range(len(mean[0]))]
    horizon = info.get("horizon")
    return ("<h2>Ablation-information map</h2><p class='meta'>I[K, w] = p(gold | only context window w kept from "
            f"layer K on) − p(gold | no context from layer K on), mean of {info['examples']} examples, windows of "
            f"{info['window']} tokens. Horizon (the map flat from then on): "
            f"{'layer ' + str(horizon) if horizon is not None else 'not reached'}.</p>"
            f"<figure id='information'><figcaption>information map (rows: layer K, columns: context windows)"
            f"</figcaption>{svg_heatmap(mean, [f'layer {k}' for k in info['layers']], columns, cell=14, diverging=True, title='information map')}"
            "</figure>")


def _views(views: dict, config: dict) -> str:
    examples = views.get("examples") or []
    if not examples:
        return ""
    budgets = config.get("budgets") or []
    middle = sorted(budgets)[len(budgets) // 2] if budgets else None
    parts = [(f"<h2>What each method kept</h2><p class='meta'>Context tokens kept (blue) or dropped (struck through) "
              f"at budget {_num(middle, 2)}; gold evidence underlined in red. Outside the context nothing is dropped."
              "</p>")]
    for index, view in enumerate(examples):
        context = [p for p, role in enumerate(view["roles"]) if role == "context"]
        evidence = set(view.get("evidence") or [])
        parts.append(f"<h3>Example {index + 1} (answer {_e(view['answer'])})</h3>")
        for key, kept in view["kept"].items():
            method, layer, budget = key.split("|")
            numeric = budget.replace(".", "", 1).isdigit()
            if method in ("embedlens", "progressive"):
                pass
            elif not numeric or middle is None or float(budget) != float(middle):
                continue
            chosen = set(kept)
            if view.get("grid"):
                shown = _grid(context, chosen, view["grid"])
            else:
                shown = "<div class='toks'>" + "".join(
                    f"<span class='{'keep' if p in chosen else 'drop'}{' ev' if p in evidence else ''}'>"
                    f"{html.escape(view['tokens'][p])}</span>" for p in context) + "</div>"
            parts.append(f"<div class='meta'>{_e(method)} · layer {_e(layer)} · budget {_e(budget)}</div>{shown}")
    return "".join(parts)


def _attractor_line(summary: dict) -> str:
    """EmbedLens' attractors per layer (found by the automatic rule), with the share of states they are nearest to."""
    record = (summary.get("testbed_info") or {}).get("attractors")
    if not record:
        return ""
    parts = [f"layer {_e(layer)}: " + (", ".join(f"{_e(repr(a['token']))} (id {a['id']}, {a['nearest_share']:.0%})"
                                                 for a in found) or "none") for layer, found in record.items()]
    return f"<p class='meta'>EmbedLens attractors (nearest id of more than the lens share of the context states): " \
           f"{'; '.join(parts)}</p>"


def render_prune_page(out: Path) -> Path:
    """Write ``out/prune.html`` from the sweep's files."""
    out = Path(out)
    if not (out / "summary.json").is_file():
        raise ValueError(f"{out} holds no summary.json: run `tokenfocus prune CONFIG` first")
    summary = _read(out / "summary.json")
    info = _read(out / "information.json") if (out / "information.json").is_file() else {}
    views = _read(out / "views.json") if (out / "views.json").is_file() else {}
    config = yaml.safe_load((out / "prune.yaml").read_text()) if (out / "prune.yaml").is_file() else {}
    testbed = config.get("testbed", {})
    projector = (summary.get("testbed_info") or {}).get("projector")
    head = (f"<p class='meta'>model {_e(config.get('model', '?'))} · testbed {_e(json.dumps(testbed))} · "
            f"methods {_e(', '.join(config.get('methods', [])))} · budgets {_e(config.get('budgets'))} · layers "
            f"{_e(config.get('layers'))} · random draws {_e(config.get('random_draws'))}"
            + (f" · digits projector held-out accuracy {_num(projector.get('test_accuracy'), 3)}" if projector else "")
            + (f" · unpruned exact match {_num(summary.get('unpruned_exact'), 3)} on {summary.get('examples')} examples"
               if summary.get("unpruned_exact") is not None else "") + "</p>")
    body = (head + _claims(summary.get("claims", [])) + _attractor_line(summary) + _layer_tables(summary.get("table", []))
            + _curves(summary.get("table", [])) + _information(info) + _views(views, config))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>tokenfocus — pruning sweep</title>"
            f"<style>{STYLE}{EXTRA_STYLE}{PAGE_STYLE}</style></head><body><h1>tokenfocus — pruning sweep</h1>{body}"
            "</body></html>")
    target = out / "prune.html"
    atomic_write_text(target, page)
    return target
