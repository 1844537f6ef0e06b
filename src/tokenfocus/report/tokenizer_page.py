"""One self-contained HTML page for the tokenizer probes, rendered from the JSON files of an output directory:
``bytes.json`` (next-byte distributions, healing), ``ensemble.json`` (a byte-level ensemble), ``phantom.json`` (phantom edits with and without the mask),
``metrics.json`` (tokenizer metrics) and ``transfer.json`` (tokenizer transfer). Sections appear for the files
present. No script and no network: tables, CSS bars and one inline SVG bar chart."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..io import atomic_write_text
from .token_page import STYLE

FILES = ("bytes.json", "ensemble.json", "phantom.json", "metrics.json", "transfer.json")
EXTRA_STYLE = """
.bar{display:inline-block;height:.8rem;background:#1f8fff;vertical-align:middle}
td.l,th.l{text-align:left} code{background:#f4f4f6;padding:0 .2rem} figure{margin:1rem 0}
figcaption{font-size:.9rem;color:#333;margin-bottom:.4rem}
"""
PHANTOM_TYPE_NAMES = {
    "whitespace_boundary_shift": "1 whitespace-boundary shift", "whitespace_detach_reattach": "2 whitespace detach/reattach",
    "newline_substitution": "3 newline substitution", "intra_word_resegmentation": "4 intra-word resegmentation",
    "proper_noun_segmentation": "5 proper-noun segmentation", "morphological_boundary": "6 morphological boundary",
    "acronym_split": "7 acronym split", "plural_possessive_tail": "8 plural/possessive tail",
}


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else _e(value)


def _interval(iv: dict | None, digits: int = 3) -> str:
    if not iv:
        return "–"
    return f"{iv['estimate']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}] (n={iv['n']})"


def _bytes_section(data: dict) -> str:
    parts = [f"<h2 id='bytes'>Exact next-byte probabilities (B5)</h2><p class='meta'>model {_e(data['model'])} · "
             f"canonicality check <code>{_e(data['check'])}</code> (min mass {data['min_mass']:g})</p>"]
    for row in data["prompts"]:
        bars = "".join(f"<tr><td class='l'><code>{_e(b['byte']) if b['byte'] != ' ' else '␠'}</code></td><td>{b['p']:.4f}</td>"
                       f"<td class='l'><span class='bar' style='width:{max(1, round(240 * b['p']))}px'></span></td></tr>"
                       for b in row["next_bytes"])
        parts.append(f"<div class='seq'><div class='prompt'>{_e(row['prompt'])}▮</div>"
                     f"<p class='meta'>free tail <code>{_e(row['tail'])}</code> (P = {row['tail_prob']:.4f}) · "
                     f"healed word: <b>{_e(row['healed_word'])}</b> · plain greedy tokens: <b>{_e(row['token_word'])}</b>"
                     f" (first token <code>{_e(row['token_next'])}</code>) · {row['seconds']:.2f} s</p>"
                     f"<table class='next-bytes'><tr><th class='l'>next byte</th><th>P</th><th></th></tr>{bars}</table></div>")
    heal = data.get("healing")
    if heal:
        rows = "".join(f"<tr><td class='l'>{_e(c['prompt'][-40:])}▮</td><td class='l'>{_e(c['gold'])}</td>"
                       f"<td class='l'>{_e(c['token'])}</td><td class='l'>{_e(c['healed'])}</td></tr>"
                       for c in heal["cases"][:20])
        parts.append(
            f"<h3>Token healing on {heal['n']} prompts cut mid-word</h3><table id='healing'>"
            f"<tr><th class='l'>completion of the word</th><th>accuracy</th></tr>"
            f"<tr><td class='l'>plain greedy tokens</td><td>{heal['token_accuracy']:.3f}</td></tr>"
            f"<tr><td class='l'>exact byte-level healing</td><td>{heal['healed_accuracy']:.3f}</td></tr>"
            f"<tr><td class='l'>healed − plain (paired, 95 % CI)</td><td>{_interval(heal['difference'])}</td></tr>"
            f"<tr><td class='l'>next prediction changed by healing</td><td>{_interval(heal['next_changed_rate'])}</td></tr>"
            f"</table><table><tr><th class='l'>prompt (end)</th><th class='l'>gold rest</th><th class='l'>plain</th>"
            f"<th class='l'>healed</th></tr>{rows}</table>")
    return "".join(parts)


def _ensemble_section(data: dict) -> str:
    small = data["small"]
    rows = "".join(f"<tr><td class='l'>{_e(name)}</td><td>{bpb:.3f}</td></tr>" for name, bpb in data["bits_per_byte"].items())
    return (f"<h2 id='ensemble'>Byte-level ensemble across vocabularies (B5)</h2><p class='meta'>{_e(data['model'])} "
            f"(weight {data['weight']:g}) with a small model ({small['layers']} layers, d = {small['hidden']}, "
            f"BPE of {small['vocab_size']} tokens, {small['steps']} steps from scratch) · {data['n']} prompts cut "
            f"mid-word · bits per byte of the rest of the word (lower is better)</p>"
            f"<table id='ensemble-table'><tr><th class='l'>model</th><th>bits/byte</th></tr>{rows}</table>"
            f"<p>bits/byte saved by the ensemble (paired, 95 % CI): vs the model {_interval(data['ensemble_vs_model'])};"
            f" vs the small model {_interval(data['ensemble_vs_small'])}</p>")


def _svg_bars(counts: dict[str, dict[str, int]]) -> str:
    """Grouped horizontal bars: one row per phantom type, one bar per condition."""
    names = list(PHANTOM_TYPE_NAMES)
    conditions = list(counts)
    colours = ["#1f8fff", "#d62f1f", "#2ca02c"]
    top = max([1] + [counts[c].get(n, 0) for c in conditions for n in names])
    row_h, label_w, bar_w = 12 * len(conditions) + 8, 210, 300
    height = row_h * len(names) + 24
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 60}' height='{height}' role='img'>"]
    for i, name in enumerate(names):
        y = i * row_h
        out.append(f"<text x='0' y='{y + row_h / 2 + 4}' font-size='11'>{_e(PHANTOM_TYPE_NAMES[name])}</text>")
        for j, cond in enumerate(conditions):
            value = counts[cond].get(name, 0)
            out.append(f"<rect x='{label_w}' y='{y + 4 + 12 * j}' width='{bar_w * value / top:.1f}' height='10' "
                       f"fill='{colours[j % 3]}'><title>{_e(cond)}: {value}</title></rect>"
                       f"<text x='{label_w + bar_w * value / top + 4:.1f}' y='{y + 13 + 12 * j}' font-size='10'>{value}</text>")
    legend_y = row_h * len(names) + 16
    for j, cond in enumerate(conditions):
        out.append(f"<rect x='{label_w + 90 * j}' y='{legend_y - 9}' width='10' height='10' fill='{colours[j % 3]}'/>"
                   f"<text x='{label_w + 90 * j + 14}' y='{legend_y}' font-size='11'>{_e(cond)}</text>")
    return "".join(out) + "</svg>"


def _phantom_section(data: dict) -> str:
    conds = data["conditions"]
    labels = ("trials", "unchanged", "replaced", "phantom", "kept_brackets", "unaligned", "judged")
    rates = ("phantom_rate", "unchanged_rate", "replaced_rate")
    header = "".join(f"<th>{_e(c)}</th>" for c in conds)
    rows = "".join(f"<tr><td class='l'>{k}</td>" + "".join(f"<td>{_num(conds[c][k])}</td>" for c in conds) + "</tr>"
                   for k in labels + rates)
    effect = _interval(data.get("mask_effect_on_phantom_rate"))
    decoding = f"sampled at T = {data['temperature']:g}" if data.get("temperature") else "greedy decoding"
    examples = [t for c in conds for t in conds[c]["trials_detail"] if t["label"] == "phantom"][:12]
    ex_rows = "".join(f"<tr><td class='l'>{_e(t['word'])}</td><td class='l'><code>{_e(t['original_pieces'])}</code></td>"
                      f"<td class='l'><code>{_e(t['output_pieces'])}</code></td><td class='l'>{_e(t['phantom_type'])}</td></tr>"
                      for t in examples)
    return (f"<h2 id='phantom'>Phantom edits (B6)</h2><p class='meta'>model {_e(data['model'])} · {data['texts']} "
            f"generated texts · {data['rate']:.0%} of content words bracketed · "
            f"{decoding}</p>"
            f"<table id='phantom-counts'><tr><th class='l'></th>{header}</tr>{rows}</table>"
            f"<p>mask − plain, phantom rate over trials judged in both (paired, 95 % CI): {effect}</p>"
            f"<figure id='fig-phantom-types'><figcaption>Phantom edits by type</figcaption>"
            f"{_svg_bars({c: conds[c]['phantom_types'] for c in conds})}</figure>"
            + (f"<table><tr><th class='l'>word</th><th class='l'>faithful tokens</th><th class='l'>emitted tokens</th>"
               f"<th class='l'>type</th></tr>{ex_rows}</table>" if ex_rows else "<p>No phantom edit was observed.</p>"))


def _metrics_section(data: dict) -> str:
    rows = data["tokenizers"]
    keys = [k for k in rows[0] if k != "tokenizer"]
    header = "".join(f"<th>{_e(r['tokenizer'])}</th>" for r in rows)
    body = "".join(f"<tr><td class='l'>{_e(k)}</td>" + "".join(f"<td>{_num(r[k])}</td>" for r in rows) + "</tr>"
                   for k in keys)
    ranking = " < ".join(_e(name) for name in data["ranking_by_bits_per_char_lzma"])
    return (f"<h2 id='metrics'>Tokenizer metrics (B9)</h2><p class='meta'>{data['texts']} documents · entropies in "
            f"bits · ranking by bits per character after LZMA (lower is better): {ranking}</p>"
            f"<table id='metrics-table'><tr><th class='l'>metric</th>{header}</tr>{body}</table>")


def _transfer_section(data: dict) -> str:
    rows = "".join(f"<tr><td class='l'>{_e(m)}</td><td>{r['bpb_before']:.3f}</td><td>{r['bpb_after']:.3f}</td>"
                   f"<td>{r['seconds']:.0f}</td></tr>" for m, r in data["methods"].items())
    comps = "".join(f"<tr><td class='l'>{_e(k)}</td><td>{_interval(v)}</td></tr>" for k, v in data["comparisons"].items())
    return (f"<h2 id='transfer'>Tokenizer transfer (B7)</h2><p class='meta'>model {_e(data['model'])} moved onto a "
            f"byte-level BPE of {data['vocab_size']} tokens ({data['shared_tokens']} shared with the original) · "
            f"{data['steps']} steps of continued training · {data['eval_documents']} held-out documents · original "
            f"model: <b>{data['reference_bpb']:.3f}</b> bits/byte</p><table id='transfer-table'><tr><th class='l'>init"
            f"</th><th>bits/byte before</th><th>after training</th><th>seconds</th></tr>{rows}</table>"
            f"<table><tr><th class='l'>paired difference (bits/byte saved by the first init; 95 % CI)</th><th></th></tr>"
            f"{comps}</table>")


SECTIONS = {"bytes.json": _bytes_section, "ensemble.json": _ensemble_section, "phantom.json": _phantom_section,
            "metrics.json": _metrics_section,
            "transfer.json": _transfer_section}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a complete JSON file ({error}); re-run its command with --overwrite, "
                         "or move the file away") from None


def render_tokenizer_page(out: Path) -> Path:
    """Write ``out/tokenizer.html`` from the probe files in ``out``."""
    out = Path(out)
    present = [name for name in FILES if (out / name).is_file()]
    if not present:
        raise ValueError(f"{out} holds none of {', '.join(FILES)}: run a `tokenfocus tokenizer` command first")
    body = "".join(SECTIONS[name](_read(out / name)) for name in present)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>tokenfocus — tokenizer probes</title>"
            f"<style>{STYLE}{EXTRA_STYLE}</style></head><body><h1>tokenfocus — tokenizer probes</h1>{body}</body></html>")
    target = out / "tokenizer.html"
    atomic_write_text(target, page)
    return target
