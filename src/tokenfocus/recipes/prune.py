"""`tokenfocus prune CONFIG.yaml`: a sweep of pruning methods x budgets x layers on a text testbed, every method
next to random pruning at the same budget, and the papers' claims judged on it (PRUNING_TOKENIZERS_MECHANISMS.md
§0.3, §0.6, A1-A3, A5).

Methods, each a single drop before layer K keeping ``budget`` of the context (positions renumbered after the drop,
as TransPrune does; every method alike):
    random       uniformly random context tokens (``random_draws`` draws per example, averaged)
    attention    top-k by instruction-guided attention at layer K (IGA: TransPrune's attention-based score)
    ttv          top-k by token transition variation accumulated over layers [K - ttv_window, K) (attention-free)
    transprune   top-k by TTV + IGA
    divprune     max-min diversity of the hidden states entering layer K
    sads         ZOO-Prune: zeroth-order sensitivity of the input embeddings (layer 0's pre-norm -> MLP) x diversity
    embedlens    drop the context tokens whose hidden state at layer K reads (tied embedding, top-k) as an attractor
                 id; its budget is what that leaves, and random runs at the same budget beside it
    progressive  TransPrune's schedule (``progressive``), and a random schedule at the same layers and ratios
    relevance    top-k by gradient x attention relevance for the answer (one backward per example)
    predicted    top-k by the relevance predictor (a conv net on layer-0 attention features) trained on the
                 relevance of ``relevance.calibration`` other examples: no backward at inference

Files in ``dir``: prune.yaml (the resolved config), manifest.json, results.jsonl (one row per example x method x layer x budget [x draw]),
information.json (the ablation-information map and its horizon), views.json (what each method kept, for the
first ``show`` examples), summary.json (means, paired differences to random with 95 % intervals, verdicts) and
prune.html (report.prune_page).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from ..config.prune import PruneConfig
from ..io import RUN_MARKERS, atomic_write_text, manifest, write_json, write_jsonl

BASELINE = "random"
LENS = "lens"  # the budget of EmbedLens rows: what its categories leave, per example


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"prune dir {out} is a file; choose a directory")
    marker = next((m for m in RUN_MARKERS if (out / m).exists()), None)
    if marker is not None:
        raise ValueError(f"{out} holds a training run or study ({marker}); choose another dir")
    if (out / "results.jsonl").exists() and not overwrite:
        raise ValueError(f"{out} already holds a prune sweep (results.jsonl); pass --overwrite to replace it, or "
                         "choose another dir")
    out.mkdir(parents=True, exist_ok=True)


def testbed_examples(config: PruneConfig):
    """The testbed's examples: PruneExamples (text), or (patches, label) pairs of the digits test split."""
    from ..prune.testbeds import facts_examples, gsm8k_examples

    spec = config.testbed
    if spec["name"] == "facts":
        return facts_examples(spec.get("n", 16), spec.get("distractors", 20), spec.get("seed", 0),
                              spec.get("question", "sum"))
    if spec["name"] == "digits":
        from ..prune.digits import digits_split

        patches, labels = digits_split()["test"]
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(spec.get("seed", 0)))
        return [(patches[i], int(labels[i])) for i in order[: spec.get("n", 64)]]
    return gsm8k_examples(spec.get("n", 16), spec["path"], spec.get("seed", 0))


def calibration_examples(config: PruneConfig):
    """Other examples than the sweep's, for the relevance predictor: another seed (text), the train split (digits)."""
    spec = config.testbed
    n = config.relevance.get("calibration", 16)
    if spec["name"] == "digits":
        from ..prune.digits import digits_split

        patches, labels = digits_split()["train"]
        return [(patches[i], int(labels[i])) for i in range(n)]
    shifted = PruneConfig(**{**config.to_dict(), "testbed": {**spec, "n": n + spec.get("n", 16),
                                                              "seed": spec.get("seed", 0) + 1000}})
    taken = {e.prompt for e in testbed_examples(config)}
    return [e for e in testbed_examples(shifted) if e.prompt not in taken][:n]


def encode_examples(config: PruneConfig, model, tokenizer, examples) -> tuple[list, list, dict]:
    """(Encoded per example, what the page shows as each one's answer, what the testbed reports about itself: the
    digits projector's held-out accuracy)."""
    from ..prune.testbeds import encode

    if config.testbed["name"] != "digits":
        return [encode(tokenizer, e) for e in examples], [e.answer for e in examples], {}
    from ..prune.digits import FIXTURE, DigitsPrompt, encode_digit, load_projector

    projector, info = load_projector(model.config.hidden_size, config.testbed.get("projector", FIXTURE))
    prompt = DigitsPrompt.build(tokenizer)
    encoded = []
    for patches, label in examples:
        enc, embeds = encode_digit(model, projector, prompt, patches, label)
        enc.embeds, enc.zoo_map, enc.zoo_inputs = embeds.detach(), projector.net, patches
        encoded.append(enc)
    return encoded, [str(label) for _, label in examples], {"projector": info}


def run_prune(config: PruneConfig, log=print, overwrite: bool = False) -> Path:
    from ..capture import find_decoder_layers
    from ..models import load_model
    from ..prune import LayerRunner

    out = config.run_dir
    _prepare(out, overwrite)
    examples = testbed_examples(config)  # a testbed that cannot be drawn fails before the model loads
    model, tokenizer = load_model(config.model)
    model.eval()
    problems = config.layer_problems(len(find_decoder_layers(model)))
    if problems:
        raise ValueError("the prune config names layers the model does not have:\n  - " + "\n  - ".join(problems))
    # prune.yaml, not config.yaml: a config.yaml marks a training run directory
    atomic_write_text(out / "prune.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_json(out / "manifest.json", manifest(seeds={"seed": config.seed}))
    with torch.no_grad():
        encoded, answers, testbed_info = encode_examples(config, model, tokenizer, examples)
    runner = LayerRunner(model)
    started = time.time()
    with torch.no_grad():
        attractors = _attractors(runner, encoded, config) if "embedlens" in config.methods else {}
    predictor = None
    if "predicted" in config.methods:
        with torch.no_grad():
            calibration, _, _ = encode_examples(config, model, tokenizer, calibration_examples(config))
        predictor, fitted = _fit_predictor(model, calibration, config)
        testbed_info = {**testbed_info, "predictor": fitted}
        log(f"[prune] relevance predictor: loss {fitted['loss_before']:.3f} -> {fitted['loss_after']:.3f} on "
            f"{fitted['examples']} examples")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        rows, views, information = _sweep(runner, tokenizer, answers, encoded, config, generator, attractors, log,
                                          started, predictor)
    write_jsonl(out / "results.jsonl", rows)
    write_json(out / "views.json", {"examples": views})
    write_json(out / "information.json", information or {})
    from ..report.prune_page import render_prune_page

    write_json(out / "summary.json", {**summarize(rows, information, config), "testbed_info": testbed_info})
    page = render_prune_page(out)
    log(f"[prune] {len(rows)} runs in {time.time() - started:.0f} s -> {page}")
    return out


def _sweep(runner, tokenizer, answers, encoded, config, generator, attractors, log, started, predictor=None):
    rows, views = [], []
    for index, enc in enumerate(encoded):
        example_rows, kept = _sweep_example(runner, enc, config, generator, attractors, predictor)
        rows += [{"example": index, **row} for row in example_rows]
        if index < config.show:
            views.append(_view(tokenizer, enc, answers[index], kept))
        log(f"[prune] example {index + 1}/{len(encoded)}: {len(example_rows)} runs, {time.time() - started:.0f} s")
    information = _information(runner, encoded, config, log) if config.horizon else None
    return rows, views, information


@contextmanager
def eager(model):
    """Eager attention inside the block (attention probabilities in the graph), the model's own after."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def _relevance_of(model, enc) -> torch.Tensor:
    from ..prune.relevance import relevance

    first = enc.answer_positions[0]
    with eager(model):
        return relevance(model, enc.layout, first - 1, enc.answer_ids[0], **enc.inputs())


def _features_of(model, enc) -> torch.Tensor:
    from ..prune.relevance import attention_features

    with eager(model):
        return attention_features(model, enc.layout, **enc.inputs())


def _fit_predictor(model, calibration, config: PruneConfig):
    from ..prune.relevance import train_predictor

    pairs = [(_features_of(model, enc), _relevance_of(model, enc)[enc.layout.pruneable]) for enc in calibration]
    grid = 4 if config.testbed["name"] == "digits" else None
    return train_predictor(pairs, grid=grid, steps=config.relevance.get("steps", 300), seed=config.seed)


def _sweep_example(runner, enc, config: PruneConfig, generator, attractors, predictor=None) -> tuple[list[dict], dict]:
    from ..prune.fidelity import answer_scores, fidelity, predicting, scores_of
    from ..prune.policies import divprune, drop_categories, random_keep, sads, topk
    from ..prune.signals import text_map, zeroth_order_sensitivity
    from ..prune.transprune import TransPrune

    model, layout = runner.model, enc.layout
    layers = runner.num_layers
    full = answer_scores(runner, enc, positions="renumber")
    rows, kept = [], {}

    def record(method, layer, budget, result, draw=None, **extra):
        metrics = fidelity(full, result, enc, model.config, layers)
        rows.append({"method": method, "layer": layer, "budget": budget, "draw": draw, **metrics, **extra})
        if draw in (None, 0):
            kept[f"{method}|{layer}|{budget}"] = result["out"].kept

    def single(method, layer, budget):
        pruner = TransPrune(model, layout, accumulate=list(range(max(0, layer - config.ttv_window), layer)),
                            prune_layers=[layer], ratios=[budget], use_ttv=method != "attention",
                            use_iga=method != "ttv")
        return scores_of(pruner.run(**enc.inputs(), logits=predicting(enc)), enc, selected=True)

    sensitivity = None
    if "sads" in config.methods:
        zoo = (config.sads.get("m", 64), config.sads.get("h", 0.01), torch.Generator().manual_seed(config.seed))
        if enc.zoo_map is None:  # text: layer 0's pre-norm -> MLP on every input embedding
            embeds = model.get_input_embeddings()(enc.ids)[0].detach()
            sensitivity = zeroth_order_sensitivity(text_map(model), embeds, *zoo)
        else:  # the projector on the pre-projector features (the mini-VLM's patches), context positions only
            sensitivity = torch.zeros(len(layout), dtype=torch.float64)
            sensitivity[layout.positions("context")] = zeroth_order_sensitivity(enc.zoo_map, enc.zoo_inputs,
                                                                                *zoo).double()
    scores = {}
    if "relevance" in config.methods:
        scores["relevance"] = _relevance_of(model, enc)
    if predictor is not None:
        from ..prune.relevance import predict

        scores["predicted"] = predict(predictor, _features_of(model, enc), layout)
    for layer in config.layers:
        for budget in config.budgets:
            for method in config.methods:
                if method in scores:
                    keep = topk(layout, scores[method], budget)
                    record(method, layer, budget, answer_scores(runner, enc, {layer: keep}, "renumber"))
                elif method == "random":
                    for draw in range(config.random_draws):
                        keep = random_keep(layout, budget, generator)
                        record(method, layer, budget, answer_scores(runner, enc, {layer: keep}, "renumber"), draw)
                elif method in ("attention", "ttv", "transprune"):
                    if method == "ttv" and layer == 0:
                        continue  # no layer before the input to accumulate TTV over
                    record(method, layer, budget, single(method, layer, budget))
                elif method == "divprune":
                    drop = lambda state, b=budget: divprune(layout, state.hidden[0], b)
                    record(method, layer, budget, answer_scores(runner, enc, {layer: drop}, "renumber"))
                elif method == "sads":
                    drop = lambda state, b=budget: sads(layout, state.hidden[0], sensitivity, b)
                    record(method, layer, budget, answer_scores(runner, enc, {layer: drop}, "renumber"))
        if "embedlens" in config.methods:
            categories = _lens_categories(runner, enc, layer, attractors.get(layer, []), config)
            keep = drop_categories(layout, categories)
            # Its budget is what the categories leave (per example): the rows carry budget "lens" and the share.
            share = max(1, sum(1 for p in keep if layout.roles[p] == "context")) / len(layout.pruneable)
            record("embedlens", layer, LENS, answer_scores(runner, enc, {layer: keep}, "renumber"), kept_share=share)
            for draw in range(config.random_draws):
                other = random_keep(layout, share, generator)
                record("random", layer, LENS, answer_scores(runner, enc, {layer: other}, "renumber"), draw,
                       kept_share=share)
    if "progressive" in config.methods:
        spec = config.progressive
        pruner = TransPrune(model, layout, accumulate=list(spec["accumulate"]), prune_layers=list(spec["prune_layers"]),
                            ratios=list(spec["ratios"]))
        final = spec["ratios"][-1]
        record("progressive", "progressive", final,
               scores_of(pruner.run(**enc.inputs(), logits=predicting(enc)), enc, selected=True))
        for draw in range(config.random_draws):
            schedule = _random_schedule(layout, spec, generator)
            record("random", "progressive", final, answer_scores(runner, enc, schedule, "renumber"), draw)
    return rows, kept


def _random_schedule(layout, spec, generator) -> dict:
    """Random drops at the progressive schedule's layers, keeping its ratios of the original context."""
    from ..prune.policies import progressive

    return progressive(layout, list(spec["prune_layers"]), list(spec["ratios"]),
                       lambda state, current: torch.rand(len(current), generator=generator, dtype=torch.float64))


def _hidden_at(runner, enc, layer: int) -> torch.Tensor:
    """(T, d) hidden states entering ``layer`` (the embeddings for layer 0)."""
    captured = {}

    def grab(state):
        captured["h"] = state.hidden[0].detach()
        return state.kept

    runner.run(**enc.inputs(), drops={layer: grab}, logits=None)
    return captured["h"]


def _attractors(runner, encoded, config: PruneConfig) -> dict[int, list[int]]:
    """Per sweep layer: the vocabulary ids nearest to more than ``lens.share`` of all examples' context hidden
    states (read through the input embedding matrix: EmbedLens' lens)."""
    from ..prune.signals import embedding_lens, find_attractors

    table = runner.model.get_input_embeddings().weight.detach()
    found = {}
    for layer in config.layers:
        states = torch.cat([_hidden_at(runner, enc, layer)[enc.layout.pruneable] for enc in encoded])
        found[layer] = find_attractors(embedding_lens(states, table, config.lens.get("k", 3)),
                                       config.lens.get("share", 0.10))
    return found


def _lens_categories(runner, enc, layer: int, attractors: list[int], config: PruneConfig) -> dict[int, str]:
    from ..prune.signals import embedding_lens, lens_categories

    context = enc.layout.pruneable
    states = _hidden_at(runner, enc, layer)[context]
    lens = embedding_lens(states, runner.model.get_input_embeddings().weight.detach(), config.lens.get("k", 3))
    return lens_categories(lens, context, attractors)


def _information(runner, encoded, config: PruneConfig, log) -> dict:
    from ..prune import TokenLayout
    from ..prune.signals import information_horizon, information_map

    spec = config.horizon
    layers, window = list(spec.get("layers", [0])), spec.get("window", 8)
    maps = []
    for enc in encoded[: spec.get("n", 4)]:
        first = enc.answer_positions[0]  # p(the answer's first token) read at the position before it
        layout = TokenLayout(enc.layout.roles[:first], enc.layout.sink)
        found = information_map(runner, layout, enc.answer_ids[0], layers, window, **enc.prefix_inputs(first))
        maps.append(found)
        log(f"[prune] information map: {len(maps)} of {min(len(encoded), spec.get('n', 4))}")
    columns = min(m["info"].shape[1] for m in maps)
    mean = torch.stack([m["info"][:, :columns] for m in maps]).mean(0)
    return {"layers": layers, "window": window, "examples": len(maps), "mean": mean.tolist(),
            "per_example": [m["info"].tolist() for m in maps], "p_full": [m["p_full"] for m in maps],
            "p_none": [m["p_none"] for m in maps], "horizon": information_horizon(mean, layers)}


def _view(tokenizer, enc, answer: str, kept: dict) -> dict:
    """One example's tokens (text pieces), roles, evidence and, per method|layer|budget, the kept positions."""
    ids = enc.ids[0].tolist()
    tokens = [f"[p{n}]" if i < 0 else tokenizer.decode([i]) for n, i in
              enumerate(ids)]  # image slots (id -1): their patch index is filled in below
    context = enc.layout.positions("context")
    for rank, position in enumerate(context):
        if ids[position] < 0:
            tokens[position] = f"[p{rank}]"
    return {"tokens": tokens, "roles": list(enc.layout.roles), "evidence": enc.evidence, "answer": answer,
            "kept": kept, "grid": 4 if ids[context[0]] < 0 else None}


# --- summary: means, paired differences to random, verdicts -------------------------------------------------


METRICS = ("delta_logp", "kl_first", "exact", "evidence", "flops", "kept_share")


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


def summarize(rows: list[dict], information: dict | None, config: PruneConfig) -> dict:
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


def judge(cells, information: dict | None, config: PruneConfig) -> list[dict]:
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


def _predictor_claim(cells, config: PruneConfig) -> dict:
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


def _alive_claim(cells, config: PruneConfig) -> dict:
    from ..report.stats import mean_interval

    row = {"claim": "EmbedLens: about 60 % of projected (visual) tokens are alive", "paper": "2603.00510"}
    if config.testbed.get("name") != "digits":
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested here: the claim is about projected visual "
                "tokens (testbed digits); on text the lens reads hidden states (see the embedlens rows)"}
    shares = [v["kept_share"] for v in cells.get(("embedlens", 0, LENS), {}).values() if v["kept_share"] is not None]
    if len(shares) < 2:
        return {**row, "verdict": INCONCLUSIVE, "evidence": "not tested: no embedlens rows at layer 0 (the projected "
                                                            "tokens as the LM reads them); add layer 0 to layers"}
    found = mean_interval(shares)
    low, high = ALIVE_BAND
    evidence = (f"alive share of the 16 image tokens at the LM input, {found.n} images: {_text(found)} "
                f"(band {low:.0%}-{high:.0%})")
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


def _horizon_claim(cells, information, config: PruneConfig) -> dict:
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
