"""A self-contained HTML page of per-token signals, rendered from a run directory's ``tokens.jsonl``.

Each response token is coloured by the chosen signal (switchable on the page), shows every signal's value
on hover, and the low / high quantile tokens of the chosen signal over the whole page are marked: anchors
(bottom ratio, underlined) and explorers (top ratio, boxed). No network: data, script and styles are inline.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..io import atomic_write_text, read_jsonl

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:70rem;color:#1d1d1f}
h1{font-size:1.4rem} .meta{color:#555;font-size:.9rem} table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #ddd;padding:.25rem .6rem;font-size:.85rem;text-align:right} th{background:#f4f4f6}
.controls{position:sticky;top:0;background:#fff;padding:.6rem 0;border-bottom:1px solid #ddd;z-index:2}
.seq{margin:1rem 0;padding:.6rem .8rem;border:1px solid #e3e3e8;border-radius:6px}
.prompt{color:#777;font-size:.85rem;white-space:pre-wrap;margin-bottom:.4rem}
.resp{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.95rem;line-height:2.1;white-space:pre-wrap}
.tok{padding:1px 0;border-radius:2px;cursor:default}
.tok.anchor{box-shadow:0 4px 0 0 #1f8fff}
.tok.explorer{outline:2px solid #d62f1f;outline-offset:-1px}
.legend>span{display:inline-block;margin-right:1rem;font-size:.85rem}
#bar{height:12px;width:16rem;display:inline-block;vertical-align:middle;border:1px solid #ccc}
"""

_SCRIPT = """
const DATA = JSON.parse(document.getElementById('tf-data').textContent);
const VIRIDIS = [[68,1,84],[72,40,120],[62,74,137],[49,104,142],[38,130,142],[31,158,137],
                 [53,183,121],[109,205,89],[180,222,44],[253,231,37]];
function colour(x){ x=Math.min(1,Math.max(0,x)); const f=x*(VIRIDIS.length-1), i=Math.floor(f),
  j=Math.min(i+1,VIRIDIS.length-1), w=f-i; return VIRIDIS[i].map((v,k)=>Math.round(v+(VIRIDIS[j][k]-v)*w)); }
function quantile(sorted,q){ if(!sorted.length) return 0; const p=(sorted.length-1)*q, lo=Math.floor(p),
  hi=Math.ceil(p); return sorted[lo]+(sorted[hi]-sorted[lo])*(p-lo); }
function rows(){ return DATA.sets[document.getElementById('dataset').value]; }
function render(){
  const sig=document.getElementById('signal').value;
  const ratio=parseFloat(document.getElementById('ratio').value)||0;
  const all=[]; rows().forEach((r,ri)=>(r.signals[sig]||[]).forEach((v,ti)=>all.push([v,ri,ti])));
  // exact-count quantile sets, ties broken by page order (deterministic)
  const order=all.map((x,i)=>i).sort((a,b)=>all[a][0]-all[b][0]||a-b);
  const k=Math.round(ratio*all.length), low=new Set(), high=new Set();
  for(let i=0;i<k;i++){ low.add(all[order[i]][1]+':'+all[order[i]][2]);
                       high.add(all[order[order.length-1-i]][1]+':'+all[order[order.length-1-i]][2]); }
  const sorted=all.map(x=>x[0]).sort((a,b)=>a-b); const lo=quantile(sorted,.01), hi=quantile(sorted,.99);
  document.getElementById('range').textContent=lo.toFixed(3)+' … '+hi.toFixed(3);
  document.querySelectorAll('#seqs .tok').forEach(el=>{
    const ri=+el.dataset.r, ti=+el.dataset.t, v=(rows()[ri].signals[sig]||[])[ti];
    if(v===undefined){ el.style.background=''; return; }
    const c=colour(hi>lo?(v-lo)/(hi-lo):.5); const light=(c[0]*.3+c[1]*.59+c[2]*.11)>140;
    el.style.background='rgb('+c.join(',')+')'; el.style.color=light?'#000':'#fff';
    el.classList.toggle('anchor',low.has(ri+':'+ti)); el.classList.toggle('explorer',high.has(ri+':'+ti));
  });
  document.getElementById('counts').textContent=k+' anchors / '+k+' explorers of '+all.length+' tokens';
}
function build(){
  const host=document.getElementById('seqs'); host.innerHTML='';
  rows().forEach((r,ri)=>{
    const box=document.createElement('div'); box.className='seq';
    const p=document.createElement('div'); p.className='prompt'; p.textContent='#'+ri+'  '+r.prompt; box.appendChild(p);
    const resp=document.createElement('div'); resp.className='resp';
    r.tokens.forEach((t,ti)=>{ const s=document.createElement('span'); s.className='tok'; s.dataset.r=ri; s.dataset.t=ti;
      s.textContent=t===''?'\\u200b':t;
      s.title=JSON.stringify(t)+' (id '+r.token_ids[ti]+', #'+ti+')\\n'+
        Object.keys(r.signals).map(n=>n+' = '+r.signals[n][ti].toFixed(4)).join('\\n');
      resp.appendChild(s); });
    box.appendChild(resp); host.appendChild(box); });
  render();
}
function init(){
  const bar=document.getElementById('bar'); bar.style.background='linear-gradient(90deg,'+
    VIRIDIS.map(c=>'rgb('+c.join(',')+')').join(',')+')';
  const ds=document.getElementById('dataset');
  Object.keys(DATA.sets).forEach(n=>{ const o=document.createElement('option'); o.value=n; o.textContent=n; ds.appendChild(o); });
  if(Object.keys(DATA.sets).length<2) ds.parentElement.style.display='none';
  ds.onchange=build; document.getElementById('signal').onchange=render; document.getElementById('ratio').oninput=render;
  build();
}
init();
"""


def _summary_rows(rows: list[dict], names: list[str]) -> str:
    import numpy as np

    out = []
    for name in names:
        values = np.array([v for r in rows for v in r["signals"][name]], dtype=float)
        if values.size == 0:
            out.append(f"<tr><th>{html.escape(name)}</th>" + "<td>–</td>" * 6 + "</tr>")
            continue
        q = np.quantile(values, [0.0, 0.2, 0.5, 0.8, 1.0])
        cells = "".join(f"<td>{x:.4f}</td>" for x in (values.mean(), *q))
        out.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return "\n".join(out)


def token_section(sets: dict[str, list[dict]], names: list[str], color_by: str, ratio: float = 0.2) -> str:
    """The interactive heatmap block: ``sets`` maps a label (e.g. an arm) to token rows (tokens.jsonl format)."""
    options = "".join(
        f'<option value="{html.escape(n)}"{" selected" if n == color_by else ""}>{html.escape(n)}</option>' for n in names
    )
    data = json.dumps({"sets": sets}).replace("</", "<\\/")
    return f"""<div class="controls"><span>responses of <select id="dataset"></select> · </span>colour by
 <select id="signal">{options}</select>
 · mark bottom/top ratio <input id="ratio" type="number" min="0" max="0.5" step="0.05" value="{ratio}" style="width:4rem">
 <span id="counts"></span>
 <div class="legend"><span>low <span id="bar"></span> high (1st–99th pct: <span id="range"></span>)</span>
 <span><span style="box-shadow:0 4px 0 0 #1f8fff">anchor</span> = bottom ratio</span>
 <span style="outline:2px solid #d62f1f">explorer</span> = top ratio · hover a token for its values</div></div>
<div id="seqs"></div>
<script type="application/json" id="tf-data">{data}</script>
<script>{_SCRIPT}</script>"""


def render_token_page(run_dir: Path, color_by: str | None = None, ratio: float = 0.2, title: str | None = None) -> Path:
    """Write ``run_dir/tokens.html`` from ``run_dir/tokens.jsonl`` (and ``analysis.json`` if present)."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "tokens.jsonl")
    if not rows:
        raise ValueError(f"{run_dir / 'tokens.jsonl'} holds no sequences to render")
    names = list(rows[0]["signals"])
    color_by = color_by or names[0]
    if color_by not in names:
        raise ValueError(f"Cannot colour by {color_by!r}: the run has signals {names}")
    if not 0 <= ratio <= 0.5:
        raise ValueError(f"ratio must be in [0, 0.5], got {ratio}")
    meta_path = run_dir / "analysis.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or "tokenfocus — token signals")}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title or "tokenfocus — per-token signals")}</h1>
<p class="meta">model: <b>{html.escape(str(meta.get("model", "?")))}</b> · {len(rows)} responses ·
{sum(len(r["tokens"]) for r in rows)} response tokens · signals are stored at each token's own index
(attention rows are those that <i>predict</i> the token unless configured otherwise)</p>
<table><tr><th>signal</th><th>mean</th><th>min</th><th>q20</th><th>median</th><th>q80</th><th>max</th></tr>
{_summary_rows(rows, names)}</table>
{token_section({"responses": rows}, names, color_by, ratio)}
</body></html>
"""
    target = run_dir / "tokens.html"
    atomic_write_text(target, page)
    return target
