"""`tokenfocus probe sinks | function-tokens | block-attention | ngram-heads | concepts`: mechanism probes on a model.

Each command writes one JSON file into its output directory (``sinks.json``, ``function_tokens.json``,
``block_attention.json``, ``ngram_heads.json``, ``concepts.json``, each with its manifest) and re-renders
``probes.html`` from every such file present, so the five commands pointed at one directory give one page.
The sink decorrelation fine-tune lives in ``probe_finetune.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..io import RUN_MARKERS, manifest, write_json
from ..probes.block_attention import probe_block_sensitivity, token_kinds
from ..probes.block_distill import block_distill
from ..probes.concepts import concept_matrix, token_states, unembedding
from ..probes.function_tokens import function_partition, loss_decomposition, steering, token_losses
from ..probes.segment import segment, token_blocks
from ..probes.sinks import probe_sinks
from ..report.probe_page import render_probe_page
from ..report.stats import mean_interval, paired_difference
from ..tasks import build_task

Log = Callable[[str], None]
CALCULATOR = re.compile(r"<<[^>]*>>")


def prepare(out: Path, filename: str, overwrite: bool) -> Path:
    """``out`` ready for ``filename``: other probe outputs may share it; a run or the same file may not."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output directory {out} is a file; choose a directory")
    marker = next((m for m in RUN_MARKERS if (out / m).exists()), None)
    if marker is not None:
        raise ValueError(f"output directory {out} holds a training run or study ({marker}); choose another")
    if (out / filename).exists() and not overwrite:
        raise ValueError(f"{out} already holds {filename}; pass --overwrite to replace it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def finish(out: Path) -> Path:
    return render_probe_page(out)


def read_texts(path: Path, answers: bool = True) -> list[str]:
    """Documents from a text file (one per non-empty line) or JSONL (``text``, or ``question`` + ``answer`` with
    GSM8K's calculator annotations removed (``answers=False``: the question alone), or ``prompt``). Bad rows are
    reported with their line numbers."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"text file not found: {path}")
    texts, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix not in (".jsonl", ".json"):
            texts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if not isinstance(row, dict):
            bad.append(number)
        elif "text" in row:
            texts.append(str(row["text"]))
        elif "question" in row:
            answer = "\n" + CALCULATOR.sub("", str(row["answer"])) if answers and "answer" in row else ""
            texts.append(str(row["question"]) + answer)
        elif "prompt" in row:
            texts.append(str(row["prompt"]))
        else:
            bad.append(number)
    if bad:
        raise ValueError(f"{path}: lines {bad[:10]} are not JSON objects with text / question / prompt; fix them")
    if not texts:
        raise ValueError(f"{path} holds no text")
    return texts


def generated_texts(n: int, seed: int = 0) -> list[str]:
    """Prompt + gold solution texts of the package's generated tasks (arithmetic, facts, steps), in equal parts."""
    texts = []
    for name in ("arithmetic", "facts", "steps"):
        task = build_task({"name": name, "seed": seed})
        texts += [f"{e.prompt}\n{e.solution}" for e in task.gold_examples(-(-n // 3), seed=seed)]
    return texts[:n]


def encode(tokenizer, texts: Sequence[str], max_tokens: int, chat: bool = False) -> list[torch.Tensor]:
    """One (1, T) id tensor per text, cut to ``max_tokens``; ``chat`` wraps each text as a user turn."""
    out = []
    for text in texts:
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                add_generation_prompt=True, return_dict=False)
            ids = torch.tensor([ids])
        else:
            ids = tokenizer(text, return_tensors="pt").input_ids
        out.append(ids[:, :max_tokens])
    return out


# -- sinks (C2) -------------------------------------------------------------------------------------------------

def sink_summary(model, tokenizer, texts: Sequence[str], *, max_tokens: int = 256, chat: bool = False,
                 sink_threshold: float = 0.2, min_queries: int = 16) -> dict:
    """Sink probe over ``texts`` (one forward each): per layer first-token score and massive-activation ratio,
    the intermediate sinks by token with their cos to the first token and |h| against the other tokens, and the
    first text's maps for the page."""
    first_scores, ratios, maxima, medians = [], [], [], []
    by_token: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    contrast = {"sink_max_abs": [], "other_max_abs": [], "sink_cos": [], "other_cos": []}
    nonfirst_score, first_json, dims = [], None, Counter()
    for index, ids in enumerate(encode(tokenizer, texts, max_tokens, chat)):
        report = probe_sinks(model, ids, layers="all", sink_threshold=sink_threshold, min_queries=min_queries)
        tokens = [tokenizer.convert_ids_to_tokens(ids[0].tolist())]
        if first_json is None:
            first_json = report.to_json(tokens)
        first_scores.append(report.first_token_score().tolist())
        act = report.activations
        ratios.append(act.ratio.tolist())
        maxima.append(act.maximum.tolist())
        medians.append(act.median.tolist())
        for layer_dims in act.dims:
            dims.update(layer_dims)
        nonfirst_score.append(report.sink_score[:, 0, 1:].mean(-1).tolist())
        hits = torch.zeros_like(report.sink_score, dtype=torch.bool)
        for layer, _, pos, score in report.intermediate:
            hits[layer, 0, pos] = True
            by_token[tokens[0][pos]].append((report.layers[layer], score, float(report.cos_first[layer, 0, pos]),
                                             float(report.max_abs[layer, 0, pos])))
        others = ~hits
        others[:, :, 0] = False
        for layer in range(hits.shape[0]):
            if hits[layer].any():  # the layer's sinks against the same layer's other tokens
                contrast["sink_max_abs"].append(float(report.max_abs[layer][hits[layer]].mean()))
                contrast["other_max_abs"].append(float(report.max_abs[layer][others[layer]].median()))
                contrast["sink_cos"].append(float(report.cos_first[layer][hits[layer]].mean()))
                contrast["other_cos"].append(float(report.cos_first[layer][others[layer]].mean()))
    sinks = sorted(({"token": tok, "count": len(v), "layers": sorted({x[0] for x in v}),
                     "score": float(np.mean([x[1] for x in v])), "cos_first": float(np.mean([x[2] for x in v])),
                     "max_abs": float(np.mean([x[3] for x in v]))} for tok, v in by_token.items()),
                   key=lambda r: -r["count"])
    ratio = np.asarray(contrast["sink_max_abs"]) / np.maximum(np.asarray(contrast["other_max_abs"]), 1e-9)
    return {
        "n_texts": len(texts), "max_tokens": max_tokens, "chat": chat, "sink_threshold": sink_threshold,
        "min_queries": min_queries, "layers": first_json["layers"],
        "first_token_score": np.mean(first_scores, 0).round(4).tolist(),
        "nonfirst_score": np.mean(nonfirst_score, 0).round(5).tolist(),
        "massive": {"ratio_max": np.max(ratios, 0).round(1).tolist(), "max": np.max(maxima, 0).round(2).tolist(),
                    "median": np.mean(medians, 0).round(4).tolist(),
                    "dims": [{"dim": d, "layers": c} for d, c in dims.most_common(10)]},
        "intermediate": {"count": sum(r["count"] for r in sinks), "texts": len(texts), "by_token": sinks[:20],
                         "layer_hits": len(contrast["sink_cos"]),
                         "sink_over_other_max_abs": vars(mean_interval(ratio)) if len(ratio) else None,
                         "sink_cos_first": float(np.mean(contrast["sink_cos"])) if contrast["sink_cos"] else None,
                         "other_cos_first": float(np.mean(contrast["other_cos"])) if contrast["other_cos"] else None},
        "example": first_json,
    }


def run_sinks(model, tokenizer, *, texts: Sequence[str], out: Path, model_spec: str = "", log: Log = print,
              **options) -> dict:
    log(f"sinks: {len(texts)} texts, one forward each with column sums on every layer")
    result = {"model": model_spec, **sink_summary(model, tokenizer, texts, **options),
              "manifest": manifest()}
    write_json(out / "sinks.json", result)
    return result


# -- function tokens (C1) -----------------------------------------------------------------------------------------

STEERING = {
    "concept_a": ["The waves of the ocean and", "We swam in the sea and", "The fish in the water and",
                  "A boat sailed on the lake and", "The river flows to the sea and", "Rain fell into the pond and",
                  "The sailors looked at the waves and", "Dolphins jumped out of the water and",
                  "The beach was wet from the tide and", "We fished in the river and",
                  "The ship crossed the ocean and", "Water splashed over the boat and"],
    "concept_b": ["The fire burned in the", "Smoke rose from the flames and", "The desert sun was hot and",
                  "Ash fell from the burning", "The oven was hot and", "The candle flame and",
                  "The campfire crackled and", "Heat rose from the burning sand and", "The forest fire spread and",
                  "Sparks flew from the fire and", "The dry desert was hot and", "The flames of the torch and"],
    "neutral": ["Yesterday I walked outside and saw the", "My favourite thing in the world is the",
                "She looked at the picture of the", "In the story, the children found a",
                "He opened the door and there was a", "The painting on the wall shows a",
                "On our trip we visited the", "The old man told us about the", "Everyone in the town talked about the",
                "The book on the table was about the", "At the end of the day we went to the",
                "The teacher asked us to draw a", "When I close my eyes I think of the", "The photo in her phone showed a",
                "Last summer we spent a week near the", "The song was written about the",
                "My grandmother always spoke of the", "The movie begins with a scene of the",
                "From the window of the train we saw the", "The children drew pictures of the",
                "The postcard from my friend showed a", "He dreamed about a", "The poem describes the",
                "In the museum there is a painting of the", "Our guide pointed at the",
                "The first thing I noticed was the", "She wrote a story about a", "The news today was about the",
                "We sat quietly and watched the", "The artist is famous for painting the",
                "On the cover of the book there is a", "The village is known for its",
                "After lunch we walked down to the", "The documentary was about the", "I took a picture of the",
                "Their house is close to the", "The game was named after the", "The little boy was afraid of the",
                "In my dream I saw a", "The map showed the way to the"],
    "words_a": ["water", "sea", "ocean", "fish", "waves", "boat", "river", "lake", "beach", "rain"],
    "words_b": ["fire", "flames", "smoke", "heat", "desert", "sun", "ash", "oven", "candle", "hot"],
}


def run_function_tokens(model, tokenizer, *, texts: Sequence[str], out: Path, coverage: float = 0.4,
                        n_eval: int = 64, max_tokens: int = 256, layer: int | None = None,
                        alphas: Sequence[float] = (2.0, 4.0, 8.0), seed: int = 0, model_spec: str = "",
                        log: Log = print) -> dict:
    """The partition on ``texts`` minus ``n_eval`` held-out ones, the 4-way loss decomposition on those, and
    steering at the last function vs content token of built-in neutral prompts."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    held = [texts[i] for i in order[:n_eval]]
    fit = [texts[i] for i in order[n_eval:]] or list(texts)
    partition = function_partition(tokenizer, fit, coverage)
    log(f"function tokens: {len(partition.ids)} tokens cover {partition.coverage:.3f} of {partition.total} "
        f"occurrences in {len(fit)} texts; loss decomposition on {len(held)} held-out texts")
    losses, tags, valid = [], [], []
    for ids in encode(tokenizer, held, max_tokens):
        mask = torch.ones_like(ids, dtype=torch.bool)
        loss = token_losses(model, ids, mask)
        losses.append(loss[0])
        tags.append(partition.mask(ids)[0])
        v = mask[0].clone()
        v[0] = False
        valid.append(v)
    width = max(len(x) for x in losses)
    pad = lambda xs, fill: torch.stack([torch.cat([x, x.new_full((width - len(x),), fill)]) for x in xs])  # noqa: E731
    decomposition = loss_decomposition(pad(losses, 0.0), pad(tags, False), pad(valid, False))
    per_text = [loss_decomposition(l[None], g[None], v[None]) for l, g, v in zip(losses, tags, valid)]
    pairs = {}  # paired over texts: is F->C the largest mean loss?
    for other in ("C->C", "C->F", "F->F"):
        usable = [d for d in per_text if d.count["F->C"] and d.count[other]]
        if usable:
            pairs[f"F->C minus {other}"] = vars(paired_difference([d.mean["F->C"] for d in usable],
                                                                  [d.mean[other] for d in usable]))
    log("function tokens: steering at the last function token vs the last content token")
    steer = steering(model, tokenizer, partition, layer=layer, alphas=alphas, **STEERING)
    comparisons = {str(a): vars(paired_difference(steer.shifts["function"][a], steer.shifts["content"][a]))
                   for a in alphas}
    result = {"model": model_spec, "partition": partition.to_json(tokenizer), "n_fit": len(fit), "n_eval": len(held),
              "decomposition": decomposition.to_json(), "decomposition_paired": pairs,
              "steering": steer.to_json(),
              "steering_function_minus_content": comparisons, "steering_prompts": STEERING,
              "manifest": manifest(seeds={"seed": seed})}
    write_json(out / "function_tokens.json", result)
    return result


# -- concepts (C3) ------------------------------------------------------------------------------------------------

def run_concepts(model, tokenizer, *, out: Path, vectors: str = "unembedding", space: str = "raw", C: float = 1e-4,
                 min_pairs: int = 5, seed: int = 0, model_spec: str = "", log: Log = print) -> dict:
    """Mean differences vs logistic probes on the unembedding rows (Park et al.) or on the last hidden state of
    each word after BOS (Liu et al.'s vectors), for the packaged concept word pairs."""
    if vectors not in ("unembedding", "hidden"):
        raise ValueError(f"vectors {vectors!r}: choose unembedding or hidden")
    if vectors == "unembedding":
        table = unembedding(model)
    else:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        table = lambda ids: token_states(model, ids, prefix_ids=bos)  # noqa: E731
    log(f"concepts: {vectors} vectors, {space} space, C = {C:g}")
    result = concept_matrix(table, tokenizer, C=C, space=space, min_pairs=min_pairs, seed=seed)
    data = {"model": model_spec, "vectors": vectors, **result.to_json(), "manifest": manifest(seeds={"seed": seed})}
    write_json(out / "concepts.json", data)
    return data


# -- block attention (C9) -----------------------------------------------------------------------------------------

def facts_problems(n: int, seed: int = 0, facts: int = 5) -> list[str]:
    """Word problems of ``facts`` one-sentence facts and a question about two of them (a default for the block
    probe: every fact is its own block, the question needs two of them)."""
    rng = np.random.default_rng(seed)
    names = ["Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas"]
    things = ["apples", "books", "coins", "pencils", "stamps", "shells", "cards", "marbles"]
    problems = []
    for _ in range(n):
        people = rng.choice(names, size=facts, replace=False)
        thing = things[int(rng.integers(len(things)))]
        counts = rng.integers(2, 40, size=facts)
        a, b = rng.choice(facts, size=2, replace=False)
        statement = " ".join(f"{p} has {c} {thing}." for p, c in zip(people, counts))
        problems.append(f"{statement} How many {thing} do {people[a]} and {people[b]} have together?")
    return problems


def split_problem(text: str) -> tuple[str, str]:
    """(statement, question): the last sentence of a word problem is its query; the rest is its context."""
    spans = segment(text.strip(), "sentence")
    if len(spans) < 2:
        raise ValueError(f"a block-attention problem needs at least two sentences (context + question): {text[:60]!r}")
    cut = spans[-1][0]
    return text.strip()[:cut], text.strip()[cut:]


def block_example(tokenizer, text: str, segmenter: str = "sentence", **segment_options) -> dict:
    """A chat-formatted problem as (1, T) ids, mask and block ids: the statement's segments are the context
    blocks, its question the query block, the template header global."""
    statement, question = split_problem(text)
    content = statement + question
    chat = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    start = chat.index(content)
    spans = [(start + a, start + b) for a, b in segment(statement, segmenter, **segment_options)]
    spans.append((start + len(statement), start + len(content)))
    enc = tokenizer(chat, return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
    blocks = token_blocks(enc["offset_mapping"][0], spans)[None]
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].bool(), "block_ids": blocks}


def run_block_attention(model, tokenizer, *, texts: Sequence[str], out: Path, segmenter: str = "sentence",
                        n_eval: int = 24, distill_steps: int = 0, distill_train: int = 32,
                        learning_rate: float = 1e-5, top_k: int = 20, seed: int = 0, model_spec: str = "",
                        log: Log = print) -> dict:
    """Per-token KL(full || block) on ``n_eval`` problems (sentences as blocks, the question as the query block),
    its means by block kind and the tokens that lose most; optionally a block-distillation fine-tune (KL-weighted
    and uniform) on ``distill_train`` other problems, scored on the same ``n_eval`` ones."""
    import copy

    examples = [block_example(tokenizer, t, segmenter) for t in texts]
    held, train = examples[:n_eval], examples[n_eval:n_eval + distill_train]
    log(f"block attention: sensitivity on {len(held)} problems ({segmenter} blocks, the question as the query)")
    by_kind: dict[str, list[float]] = defaultdict(list)
    top = []
    for index, ex in enumerate(held):
        summary = probe_block_sensitivity(model, tokenizer, ex["input_ids"], ex["attention_mask"], ex["block_ids"],
                                          top_k=top_k)
        kinds = token_kinds(ex["block_ids"], ex["attention_mask"])[0]
        for t in summary.counted[0].nonzero()[:, 0].tolist():
            by_kind[kinds[t]].append(float(summary.values[0, t]))
        for item in summary.top:
            context = tokenizer.decode(ex["input_ids"][0, max(0, item["index"] - 6):item["index"]])
            top.append({**item, "row": index, "context": context})
    top = sorted(top, key=lambda r: -r["kl"])[:top_k]
    result = {"model": model_spec, "segmenter": segmenter, "n_eval": len(held),
              "block_means": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
              "block_counts": {k: len(v) for k, v in sorted(by_kind.items())},
              "query_kl": vars(mean_interval(by_kind["query"])) if by_kind.get("query") else None,
              "context_kl": vars(mean_interval(by_kind["context"])) if by_kind.get("context") else None,
              "top_tokens": top}
    if distill_steps:
        if not train:
            raise ValueError(f"--distill-steps needs problems beyond the {n_eval} evaluated ones; pass more texts")
        result["distill"] = {}
        for weighting in ("kl", "uniform"):
            student = copy.deepcopy(model)
            started = time.time()
            run = block_distill(student, model, train, steps=distill_steps, lr=learning_rate, weighting=weighting,
                                held_out=held, seed=seed)
            result["distill"][weighting] = {**run.to_json(), "seconds": round(time.time() - started, 1)}
            log(f"block distillation ({weighting}): held-out query KL {run.held_out_before:.4f} -> "
                f"{run.held_out_after:.4f} in {distill_steps} steps")
    result["manifest"] = manifest(seeds={"seed": seed})
    write_json(out / "block_attention.json", result)
    return result


# -- n-gram heads (C5) --------------------------------------------------------------------------------------------

def _head_grids(label: str, scores) -> dict:
    """Per n: the layer x head mass grid, the chance baseline and the top heads (for the page and the verdicts)."""
    data = scores.to_json()
    grids = {}
    for k, n in enumerate(scores.n_values):
        baseline = data["baseline"][str(n)]
        grids[f"{label}, n={n}"] = {"mass": [[h[k] for h in layer] for layer in data["mass"]], "baseline": baseline,
                                    "top": [{**row, "baseline": baseline} for row in data["top"][str(n)]]}
    return grids


def ngram_probe(model, tokenizer, *, periods: Sequence[int], n_dfa: int, dfa_length: int, vocab: Sequence[int],
                seed: int, label: str, length: int | None = None, batch: int = 2,
                dfa_options: dict | None = None) -> dict:
    """Head scores on repeated random tokens at each period (repeated to fill ``length``, at least twice) and on DFA
    sequences, plus the model's in-context DFA accuracy against the n-gram estimators."""
    from ..probes.ngram import dfa_token_sequences, head_ngram_scores, icl_accuracy, repeated_random_tokens

    bos = tokenizer.bos_token_id
    grids, best = {}, {}
    for period in periods:
        repeats = max(2, (length or 2 * period) // period)
        ids = repeated_random_tokens(list(vocab), period, repeats, seed, batch=batch, bos_id=bos)
        scores = head_ngram_scores(model, ids)
        grids.update(_head_grids(f"{label}, repeated tokens (period {period})", scores))
        best[f"period {period}"] = {str(n): {"head": scores.top[n][0][0], "mass": scores.top[n][0][1],
                                             "baseline": float(scores.baseline[k])}
                                    for k, n in enumerate(scores.n_values)}
    batch = dfa_token_sequences(tokenizer, n_dfa, dfa_length, seed, **(dfa_options or {}))
    scores = head_ngram_scores(model, batch.input_ids)
    grids.update(_head_grids(f"{label}, DFA sequences", scores))
    best["dfa"] = {str(n): {"head": scores.top[n][0][0], "mass": scores.top[n][0][1],
                            "baseline": float(scores.baseline[k])} for k, n in enumerate(scores.n_values)}
    return {"grids": grids, "best": best, "icl_accuracy": icl_accuracy(model, batch).to_json()}


def run_ngram_heads(model, tokenizer, *, out: Path, periods: Sequence[int] = (63, 32), n_dfa: int = 4,
                    dfa_length: int = 128, train_seconds: float = 0.0, seed: int = 0, model_spec: str = "",
                    log: Log = print) -> dict:
    """n-gram head scores of ``model`` and, with ``train_seconds`` > 0, of a tiny model trained from scratch on
    the DFA in-context task for that long."""
    vocab = [i for i in range(len(tokenizer)) if i not in set(tokenizer.all_special_ids)][:20000]
    log(f"ngram heads: repeated random tokens at periods {list(periods)} and {n_dfa} DFA sequences")
    result = {"model": model_spec, "periods": list(periods),
              "models": {"probed": ngram_probe(model, tokenizer, periods=periods, n_dfa=n_dfa, dfa_length=dfa_length,
                                               vocab=vocab, seed=seed, label=model_spec or "model")}}
    if train_seconds > 0:
        from ..probes.ngram import train_icl_model

        log(f"ngram heads: training a tiny model on the DFA task for up to {train_seconds:.0f} s")
        from ..probes.ngram import symbol_token_ids

        tiny, tiny_tok, train_log = train_icl_model(max_seconds=train_seconds, seed=seed)
        settings = train_log.settings  # probed as trained: its sequence length, its symbols, its DFA distribution
        length = settings["length"]
        letters, _ = symbol_token_ids(tiny_tok, settings.get("walk", {}).get("n_symbols", 16))
        longest = min(len(letters), length // 2 - 3)  # two periods of distinct symbols, each repeated >= twice
        result["models"]["tiny"] = {"training": train_log.to_json(),
                                    **ngram_probe(tiny, tiny_tok, periods=[longest - 3, longest],
                                                  n_dfa=16, dfa_length=length, vocab=letters, seed=seed + 1,
                                                  label="tiny from scratch", length=length, batch=8,
                                                  dfa_options=settings.get("dfa"))}
    result["grids"] = {name: grid for m in result["models"].values() for name, grid in m["grids"].items()}
    result["manifest"] = manifest(seeds={"seed": seed})
    write_json(out / "ngram_heads.json", result)
    return result
