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

A sweep resumes: each finished example's rows (and the random generator's state after it) are appended to
``partial.jsonl`` as one fsynced line; a killed sweep started again with the same config skips them and gives the
same rows as an uninterrupted one (a torn last line is set aside). A changed config is refused there unless
``--overwrite``; the partial file goes once results.jsonl and the page are written.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from ..config.prune import PruneConfig
from ..io import (
    RUN_MARKERS,
    append_jsonl,
    atomic_write_text,
    manifest,
    read_jsonl,
    set_aside_torn_tail,
    write_json,
    write_jsonl,
)
from ..report.prune_claims import LENS, summarize

PARTIAL = "partial.jsonl"  # one line per finished example while a sweep runs (what a resumed sweep skips)


def _prepare(out: Path, overwrite: bool, config: PruneConfig) -> list[dict]:
    """Check the dir and return the finished examples of an unfinished sweep of the same config (none: a fresh
    start). Refuses a finished sweep or an unfinished one of another config unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"prune dir {out} is a file; choose a directory")
    marker = next((m for m in RUN_MARKERS if (out / m).exists()), None)
    if marker is not None:
        raise ValueError(f"{out} holds a training run or study ({marker}); choose another dir")
    partial = out / PARTIAL
    if overwrite:
        partial.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        return []
    if (out / "results.jsonl").exists() and not partial.exists():
        raise ValueError(f"{out} already holds a prune sweep (results.jsonl); pass --overwrite to replace it, or "
                         "choose another dir")
    if not partial.exists():
        out.mkdir(parents=True, exist_ok=True)
        return []
    saved = out / "prune.yaml"
    before = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    now = yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if before != now:
        changed = sorted(k for k in set(before or {}) | set(now) if (before or {}).get(k) != now.get(k))
        raise ValueError(f"{out} holds an unfinished sweep of another config (prune.yaml differs in "
                         f"{', '.join(changed) or 'its file'}); run the same config to resume it, pass --overwrite "
                         "to start over, or choose another dir")
    set_aside_torn_tail(partial)  # a line torn by a kill is kept aside, never parsed
    return read_jsonl(partial)


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


def rejudge(out: Path, log=print) -> Path:
    """Summary, claims and page again from a finished sweep's files (results.jsonl, information.json, prune.yaml;
    summary.json's testbed_info is kept), after the claims' code changed; no model is loaded."""
    import json

    from ..config.prune import load_prune_config
    from ..report.prune_page import render_prune_page

    def read_json(path):
        return json.loads(path.read_text())

    out = Path(out)
    missing = [name for name in ("prune.yaml", "results.jsonl") if not (out / name).is_file()]
    if missing:
        raise ValueError(f"{out} holds no finished prune sweep (missing {', '.join(missing)}); run "
                         "`tokenfocus prune CONFIG` first")
    config = load_prune_config(out / "prune.yaml")
    rows = read_jsonl(out / "results.jsonl")
    information = read_json(out / "information.json") if (out / "information.json").is_file() else None
    before = read_json(out / "summary.json") if (out / "summary.json").is_file() else {}
    write_json(out / "summary.json", {**summarize(rows, information or None, config),
                                      "testbed_info": before.get("testbed_info", {})})
    page = render_prune_page(out)
    log(f"[prune] {len(rows)} runs judged again -> {page}")
    return out


def run_prune(config: PruneConfig, log=print, overwrite: bool = False) -> Path:
    from ..capture import find_decoder_layers
    from ..models import load_model
    from ..prune import LayerRunner

    out = config.run_dir
    done = _prepare(out, overwrite, config)
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
        attractors, record = _attractors(runner, encoded, config, tokenizer) if "embedlens" in config.methods else ({}, None)
    if record is not None:
        testbed_info = {**testbed_info, "attractors": record}
    predictor = None
    if "predicted" in config.methods:
        with torch.no_grad():
            calibration, _, _ = encode_examples(config, model, tokenizer, calibration_examples(config))
        predictor, fitted = _fit_predictor(model, calibration, config)
        testbed_info = {**testbed_info, "predictor": fitted}
        log(f"[prune] relevance predictor: loss {fitted['loss_before']:.3f} -> {fitted['loss_after']:.3f} on "
            f"{fitted['examples']} examples")
    generator = torch.Generator().manual_seed(config.seed)
    if done:
        log(f"[prune] resuming: {len(done)} of {len(encoded)} examples done in {out / PARTIAL}")
    with torch.no_grad():
        rows, views, information = _sweep(runner, tokenizer, answers, encoded, config, generator, attractors, log,
                                          started, predictor, done, out / PARTIAL)
    write_json(out / "views.json", {"examples": views})
    write_json(out / "information.json", information or {})
    write_json(out / "summary.json", {**summarize(rows, information, config), "testbed_info": testbed_info})
    write_jsonl(out / "results.jsonl", rows)
    from ..report.prune_page import render_prune_page

    page = render_prune_page(out)
    (out / PARTIAL).unlink(missing_ok=True)
    log(f"[prune] {len(rows)} runs in {time.time() - started:.0f} s -> {page}")
    return out


def _sweep(runner, tokenizer, answers, encoded, config, generator, attractors, log, started, predictor=None,
           done=(), partial: Path | None = None):
    """Every example's rows (those in ``done`` read back, the rest run and appended to ``partial``), the views of
    the first ``show`` examples, and the information map."""
    import base64

    rows, views = [], []
    for index, enc in enumerate(encoded):
        if index < len(done):
            line = done[index]
            if line.get("example") != index:
                raise ValueError(f"{partial}: line {index + 1} holds example {line.get('example')}, expected {index}; "
                                 "pass --overwrite to start the sweep over")
            example_rows, view = line["rows"], line["view"]
            generator.set_state(torch.tensor(list(base64.b64decode(line["generator"])), dtype=torch.uint8))
        else:
            found, kept = _sweep_example(runner, enc, config, generator, attractors, predictor)
            example_rows = [{"example": index, **row} for row in found]
            view = _view(tokenizer, enc, answers[index], kept) if index < config.show else None
            if partial is not None:
                state = base64.b64encode(bytes(generator.get_state().tolist())).decode()
                append_jsonl(partial, {"example": index, "rows": example_rows, "view": view, "generator": state})
            log(f"[prune] example {index + 1}/{len(encoded)}: {len(found)} runs, {time.time() - started:.0f} s")
        rows += example_rows
        if view is not None:
            views.append(view)
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
            alive = sum(1 for p in keep if layout.roles[p] == "context")
            share = max(1, alive) / len(layout.pruneable)  # random's budget: at least one token
            record("embedlens", layer, LENS, answer_scores(runner, enc, {layer: keep}, "renumber"), kept_share=share,
                   alive_share=alive / len(layout.pruneable))
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


def _attractors(runner, encoded, config: PruneConfig, tokenizer=None) -> tuple[dict[int, list[int]], dict]:
    """Per sweep layer: the vocabulary ids nearest to more than ``lens.share`` of all examples' context hidden
    states (read through the input embedding matrix: EmbedLens' lens), and a record of them for summary.json
    ({layer: [{id, token, nearest_share}]}, the share of states whose nearest id it is)."""
    from ..prune.signals import embedding_lens, find_attractors

    table = runner.model.get_input_embeddings().weight.detach()
    found, record = {}, {}
    for layer in config.layers:
        states = torch.cat([_hidden_at(runner, enc, layer)[enc.layout.pruneable] for enc in encoded])
        lens = embedding_lens(states, table, config.lens.get("k", 3))
        found[layer] = find_attractors(lens, config.lens.get("share", 0.10))
        nearest = lens[:, 0].tolist()
        record[str(layer)] = [{"id": i, "token": tokenizer.decode([i]) if tokenizer is not None else None,
                               "nearest_share": nearest.count(i) / len(nearest)} for i in found[layer]]
    return found, record


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
