"""One self-contained HTML page for the mechanism probes, rendered from the JSON files of an output directory:
``sinks.json`` (layer x key sink heatmap, activation magnitudes per layer), ``function_tokens.json`` (partition,
loss-decomposition bars, steering), ``block_attention.json`` (per-token block sensitivity), ``ngram_heads.json``
(layer x head score grids) and ``concepts.json`` (the probe x mean-difference product matrix). Sections appear for
the files present. No script and no network: tables and inline SVG; each figure's title sits above it."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from ..io import atomic_write_text
from .token_page import STYLE

FILES = ("sinks.json", "function_tokens.json", "block_attention.json", "ngram_heads.json", "concepts.json")
EXTRA_STYLE = """
.bar{display:inline-block;height:.8rem;background:#1f8fff;vertical-align:middle}
td.l,th.l{text-align:left} code{background:#f4f4f6;padding:0 .2rem} figure{margin:1rem 0;overflow-x:auto}
figcaption{font-size:.9rem;color:#333;margin-bottom:.4rem;font-weight:600}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else _e(value)


def _interval(iv: dict | None, digits: int = 3) -> str:
    if not iv:
        return "–"
    return f"{iv['estimate']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}] (n={iv['n']})"


def _color(value: float, low: float, high: float, diverging: bool = False) -> str:
    """White -> blue (sequential) or red <- white -> blue (diverging around 0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "#eee"
    if diverging:
        span = max(abs(low), abs(high), 1e-12)
        t = max(-1.0, min(1.0, value / span))
        r, g, b = (255, round(255 * (1 + t)), round(255 * (1 + t))) if t < 0 else (round(255 * (1 - t)), round(255 * (1 - 0.45 * t)), 255)
        return f"rgb({r},{g},{b})"
    t = 0.0 if high <= low else max(0.0, min(1.0, (value - low) / (high - low)))
    return f"rgb({round(255 - 224 * t)},{round(255 - 112 * t)},255)"


def svg_heatmap(values: list[list[float]], row_labels: list[str], col_labels: list[str] | None = None, *,
                cell: int = 12, diverging: bool = False, low: float | None = None, high: float | None = None,
                title: str = "") -> str:
    """Rows x columns of colored cells with a <title> tooltip per cell; column labels rotated when given."""
    flat = [v for row in values for v in row if v is not None]
    low = min(flat) if low is None else low
    high = max(flat) if high is None else high
    left = 8 + 7 * max((len(r) for r in row_labels), default=1)
    top = 8 + (6 * max((len(c) for c in col_labels), default=1) if col_labels else 0)
    width = left + cell * max((len(r) for r in values), default=1) + 10
    height = top + cell * len(values) + 10
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
           f"aria-label='{_e(title)}'>"]
    for i, (label, row) in enumerate(zip(row_labels, values)):
        y = top + i * cell
        out.append(f"<text x='{left - 4}' y='{y + cell - 2}' font-size='{min(cell, 11)}' text-anchor='end'>"
                   f"{_e(label)}</text>")
        for j, v in enumerate(row):
            col = col_labels[j] if col_labels else str(j)
            out.append(f"<rect x='{left + j * cell}' y='{y}' width='{cell}' height='{cell}' "
                       f"fill='{_color(v, low, high, diverging)}'><title>{_e(label)} · {_e(col)}: "
                       f"{_num(v, 4)}</title></rect>")
    if col_labels:
        for j, label in enumerate(col_labels):
            x = left + j * cell + cell - 3
            out.append(f"<text x='{x}' y='{top - 4}' font-size='{min(cell, 10)}' transform='rotate(-90 {x} {top - 4})'>"
                       f"{_e(label)}</text>")
    out.append(f"<text x='{left}' y='{height - 1}' font-size='9' fill='#555'>scale {_num(low, 3)} … {_num(high, 3)}"
               "</text></svg>")
    return "".join(out)


def svg_lines(series: dict[str, list[float]], *, log: bool = False, width: int = 560, height: int = 180,
              x_label: str = "layer") -> str:
    """One polyline per series over x = 0..n-1 (log10 y when ``log``), with a legend and min / max labels."""
    colors = ["#1f8fff", "#d62f1f", "#2a9d4b", "#8e44ad"]
    transform = (lambda v: math.log10(max(v, 1e-12))) if log else (lambda v: v)
    points = [transform(v) for vs in series.values() for v in vs if v is not None]
    lo, hi = min(points), max(points)
    hi = hi if hi > lo else lo + 1
    n = max(len(vs) for vs in series.values())
    x = lambda i: 40 + (width - 60) * i / max(n - 1, 1)  # noqa: E731
    y = lambda v: 10 + (height - 40) * (1 - (transform(v) - lo) / (hi - lo))  # noqa: E731
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>",
           f"<text x='2' y='14' font-size='10'>{_num(10 ** hi if log else hi, 1)}</text>",
           f"<text x='2' y='{height - 30}' font-size='10'>{_num(10 ** lo if log else lo, 2)}</text>",
           f"<text x='{width // 2}' y='{height - 4}' font-size='10'>{_e(x_label)} (0…{n - 1})</text>"]
    for k, (name, vs) in enumerate(series.items()):
        color = colors[k % len(colors)]
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs) if v is not None)
        out.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{path}'/>")
        out.append(f"<text x='{50 + 170 * k}' y='{height - 16}' font-size='10' fill='{color}'>{_e(name)}</text>")
    return "".join(out) + "</svg>"


def _bars(rows: list[tuple[str, float, str]], scale: float) -> str:
    body = "".join(f"<tr><td class='l'>{_e(name)}</td><td>{_num(value)}</td><td class='l'>"
                   f"<span class='bar' style='width:{max(1, round(240 * value / scale)) if scale else 1}px'></span>"
                   f" {_e(note)}</td></tr>" for name, value, note in rows)
    return f"<table>{body}</table>"


def _sinks_section(data: dict) -> str:
    ex = data["example"]
    layers = [f"L{layer}" for layer in ex["layers"]]
    tokens = ex["heatmap"]["tokens"] or [str(i) for i in range(len(ex["heatmap"]["sink_score"][0]))]
    inter = data["intermediate"]
    massive = data["massive"]
    dims = ", ".join("{} ({})".format(d["dim"], d["layers"]) for d in massive["dims"]) or "none"
    rows = "".join(f"<tr><td class='l'><code>{_e(r['token'])}</code></td><td>{r['count']}</td>"
                   f"<td class='l'>{_e(', '.join(map(str, r['layers'][:12])))}</td><td>{_num(r['score'])}</td>"
                   f"<td>{_num(r['cos_first'])}</td><td>{_num(r['max_abs'], 1)}</td></tr>" for r in inter["by_token"])
    return (
        f"<h2 id='sinks'>Attention sinks and massive activations (C2)</h2><p class='meta'>model {_e(data['model'])} · "
        f"{data['n_texts']} texts of ≤ {data['max_tokens']} tokens · sink score = mean attention a key receives per "
        f"row that can see it (threshold {data['sink_threshold']}, ≥ {data['min_queries']} rows)</p>"
        f"<figure><figcaption>Sink score, layer × key, first text (darker = more attention received)</figcaption>"
        f"{svg_heatmap(ex['heatmap']['sink_score'], layers, tokens, cell=11, low=0.0, high=1.0, title='sink heatmap')}"
        f"</figure><figure><figcaption>Per layer: the first token's sink score and the mean of the other tokens' "
        f"(linear)</figcaption>"
        f"{svg_lines({'first token': data['first_token_score'], 'other tokens': data['nonfirst_score']})}</figure>"
        f"<figure><figcaption>Activation magnitudes per layer output: max |h| and median |h| (log scale); "
        f"massive = > 100 and > 1000 × median</figcaption>"
        f"{svg_lines({'max |h|': massive['max'], 'median |h|': massive['median']}, log=True)}</figure>"
        f"<p>Largest max/median ratio per layer: {_e(', '.join(_num(v, 0) for v in massive['ratio_max']))}. "
        f"Massive dimensions (layers where massive): "
        f"{_e(dims)}.</p>"
        f"<h3>Intermediate sinks</h3><p>{inter['count']} (layer, position) hits in {inter['texts']} texts. "
        f"Their max |h| over the median of the same layer's other tokens: "
        f"{_interval(inter['sink_over_other_max_abs'], 1)}; cos to the first token {_num(inter['sink_cos_first'])} "
        f"vs {_num(inter['other_cos_first'])} for the other tokens.</p>"
        f"<table><tr><th class='l'>token</th><th>hits</th><th class='l'>layers</th><th>score</th><th>cos first</th>"
        f"<th>max |h|</th></tr>{rows}</table>"
    )


def _function_section(data: dict) -> str:
    part = data["partition"]
    tokens = part.get("tokens") or [str(i) for i in part["ids"]]
    table = "".join(f"<tr><td class='l'><code>{_e(t)}</code></td><td>{s:.4f}</td><td>{d:.3f}</td></tr>"
                    for t, s, d in list(zip(tokens, part["share"], part["documents"]))[:30])
    dec = data["decomposition"]
    scale = max(dec["mean"].values()) or 1.0
    bars = _bars([(k, v, f"share {dec['share'][k]:.3f}, n={dec['count'][k]}") for k, v in dec["mean"].items()], scale)
    steer = data["steering"]
    comps = data["steering_function_minus_content"]
    rows = "".join(f"<tr><td>{_e(a)}</td><td>{_num(steer['mean_shift']['function'][a])}</td>"
                   f"<td>{_num(steer['mean_shift']['content'][a])}</td><td>{_interval(comps[a])}</td></tr>"
                   for a in comps)
    return (
        f"<h2 id='function-tokens'>Function tokens (C1)</h2><p class='meta'>model {_e(data['model'])} · "
        f"{len(part['ids'])} function tokens cover {part['coverage']:.3f} of {part['total']} token occurrences in "
        f"{data['n_fit']} texts</p>"
        f"<figure><figcaption>Mean next-token loss (nats) by (previous token type → next token type), "
        f"{data['n_eval']} held-out texts</figcaption>{bars}</figure>"
        + "".join(f"<p>{_e(k)} (paired over texts): {_interval(v)}</p>"
                  for k, v in data.get("decomposition_paired", {}).items()) +
        f"<h3>Steering at layer {steer['layer']}</h3><p>Shift of the next-token log-odds of concept-A words vs "
        f"concept-B words when α × the mean-difference direction is added at the prompt's last function token or "
        f"its last content token ({len(steer['positions']['function'])} neutral prompts).</p>"
        f"<table><tr><th>α</th><th>function</th><th>content</th><th>function − content (paired 95% CI)</th></tr>"
        f"{rows}</table><h3>The function tokens (top 30)</h3>"
        f"<table><tr><th class='l'>token</th><th>share</th><th>documents</th></tr>{table}</table>"
    )


def _concepts_section(data: dict) -> str:
    names = data["names"]
    s, h = data["summary"], data["heldout_summary"]
    skipped = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in data["skipped"].items())

    def summary(x: dict) -> str:
        return ", ".join(f"{_e(k)} {_num(v)}" for k, v in x.items())

    return (
        f"<h2 id='concepts'>Linear concept probes (C3)</h2><p class='meta'>model {_e(data['model'])} · "
        f"{_e(data['vectors'])} vectors · {_e(data['space'])} space · C = {data['C']:g} · {len(names)} concepts</p>"
        f"<figure><figcaption>Unit probe weights (rows) · unit mean differences (columns), all pairs</figcaption>"
        f"{svg_heatmap(data['matrix'], names, names, cell=16, diverging=True, low=-1.0, high=1.0, title='concepts')}"
        f"</figure><p>{summary(s)}</p>"
        f"<figure><figcaption>Held out: probe from one half of each concept's pairs, mean difference from the other"
        f"</figcaption>{svg_heatmap(data['heldout_matrix'], names, names, cell=16, diverging=True, low=-1.0, high=1.0)}"
        f"</figure><p>{summary(h)}</p>" + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else "")
    )


def _ngram_section(data: dict) -> str:
    parts = [f"<h2 id='ngram-heads'>In-context n-gram heads (C5)</h2><p class='meta'>model {_e(data['model'])}</p>"]
    for name, grid in data.get("grids", {}).items():
        layers = [f"L{i}" for i in range(len(grid["mass"]))]
        heads = [f"H{j}" for j in range(len(grid["mass"][0]))]
        parts.append(f"<figure><figcaption>{_e(name)}: attention mass on the n-gram targets, layer × head"
                     f"</figcaption>{svg_heatmap(grid['mass'], layers, heads, cell=14, low=0.0, high=1.0)}</figure>")
        top = "".join(f"<tr><td class='l'>{_e(r['head'])}</td><td>{_num(r['mass'])}</td><td>{_num(r['baseline'])}"
                      f"</td></tr>" for r in grid.get("top", []))
        parts.append(f"<table><tr><th class='l'>head</th><th>mass</th><th>chance</th></tr>{top}</table>")
    for key, value in data.get("summary", {}).items():
        parts.append(f"<p>{_e(key)}: {_e(value)}</p>")
    return "".join(parts)


def _block_section(data: dict) -> str:
    parts = [f"<h2 id='block-attention'>Block attention sensitivity (C9)</h2><p class='meta'>model "
             f"{_e(data['model'])}</p>"]
    means = data.get("block_means", {})
    if means:
        scale = max(means.values()) or 1.0
        parts.append(f"<figure><figcaption>Mean KL(full ‖ block) per token, by block kind</figcaption>"
                     f"{_bars([(k, v, '') for k, v in means.items()], scale)}</figure>")
    top = "".join(f"<tr><td class='l'><code>{_e(r['token'])}</code></td><td>{_num(r['kl'])}</td>"
                  f"<td class='l'>{_e(r.get('context', ''))}</td></tr>" for r in data.get("top_tokens", []))
    if top:
        parts.append(f"<h3>Tokens that lose most</h3><table><tr><th class='l'>token</th><th>KL</th>"
                     f"<th class='l'>context</th></tr>{top}</table>")
    for key, value in data.get("summary", {}).items():
        parts.append(f"<p>{_e(key)}: {_e(value)}</p>")
    return "".join(parts)


SECTIONS = {"sinks.json": _sinks_section, "function_tokens.json": _function_section,
            "block_attention.json": _block_section, "ngram_heads.json": _ngram_section,
            "concepts.json": _concepts_section}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a complete JSON file ({error}); re-run its command with --overwrite, "
                         "or move the file away") from None


def render_probe_page(out: Path) -> Path:
    """Write ``out/probes.html`` from the probe files in ``out``."""
    out = Path(out)
    present = [name for name in FILES if (out / name).is_file()]
    if not present:
        raise ValueError(f"{out} holds none of {', '.join(FILES)}: run a `tokenfocus probe` command first")
    body = "".join(SECTIONS[name](_read(out / name)) for name in present)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>tokenfocus — mechanism probes</title>"
            f"<style>{STYLE}{EXTRA_STYLE}</style></head><body><h1>tokenfocus — mechanism probes</h1>{body}</body></html>")
    target = out / "probes.html"
    atomic_write_text(target, page)
    return target
