"""`tokenfocus tokenizer bytes | probe | metrics | transfer`: the tokenizer probes (B5, B6, B9, B7) on a model.

Each command writes one JSON file into its output directory (``bytes.json``, ``ensemble.json``, ``phantom.json``,
``metrics.json``, ``transfer.json``, each with its manifest) and re-renders ``tokenizer.html`` from every such file present, so
the four commands pointed at one directory give one page.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..io import RUN_MARKERS, manifest, write_json
from ..report.stats import mean_interval, paired_difference
from ..report.tokenizer_page import render_tokenizer_page
from ..tokenizers import VocabTrie
from ..tokenizers.bytegen import ByteEnsemble, complete_word, token_word_completion
from ..tokenizers.byteprobs import END, ByteState, start_ids
from ..tokenizers.metrics import tokenizer_metrics, train_bpe
from ..tokenizers.phantom import probe_texts, run_probe, summarize
from ..tokenizers.transfer import bits_per_byte, continue_training, small_lm, transfer_model

Log = Callable[[str], None]
DEFAULT_PROMPTS = ("The capital of France is Pa", "She counted the apples and the oran",
                   "Natalia sold clips to 48 of her frie", "The answer is 12 because 3 times 4 equ")


def prepare(out: Path, filename: str, overwrite: bool) -> Path:
    """``out`` ready for ``filename``: other tokenizer outputs may share it; a run or the same file may not."""
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


def _byte_label(b: int) -> str:
    return "<end>" if b == END else repr(bytes([b]))[2:-1]


def _distribution(p: np.ndarray, top: int) -> list[dict]:
    return [{"byte": _byte_label(int(b)), "p": float(p[b])} for b in np.argsort(-p)[:top] if p[b] > 0]


def mid_word_prompts(texts: Sequence[str], n: int, seed: int = 0, min_len: int = 4) -> list[tuple[str, str]]:
    """``(prompt, rest of the word)`` pairs: each text cut inside a word of >= ``min_len`` letters (not its
    first word), after 1 to len-2 letters."""
    import re

    rng = np.random.default_rng(seed)
    pairs = []
    for text in texts:
        words = [m for m in re.finditer(r"[A-Za-z]+", text) if len(m.group()) >= min_len and m.start() > 0]
        if not words:
            continue
        word = words[int(rng.integers(len(words)))]
        cut = word.start() + int(rng.integers(1, len(word.group()) - 1))
        pairs.append((text[:cut], text[cut:word.end()]))
        if len(pairs) == n:
            break
    return pairs


def run_bytes(model, tokenizer, *, prompts: Sequence[str], out: Path, heal_texts: Sequence[str] = (),
              n_heal: int = 0, check: str = "mass", min_mass: float = 1e-4, top: int = 8, seed: int = 0,
              model_spec: str = "", log: Log = print) -> dict:
    """Next-byte distributions for ``prompts``; healing measured on ``n_heal`` texts cut mid-word."""
    trie = VocabTrie.from_tokenizer(tokenizer)
    prefix = start_ids(tokenizer)
    rows = []
    for prompt in prompts:
        began = time.perf_counter()
        state = ByteState.from_prompt(model, trie, prompt, check=check, min_mass=min_mass)
        p = state.next_byte_distribution()
        seconds = time.perf_counter() - began
        tail, prefix_prob = state.tail.decode("utf-8", "replace"), float(np.exp(state.prefix_logprob()))
        word, _ = complete_word(state)
        naive, first = token_word_completion(model, tokenizer, prefix, prompt)
        rows.append({"prompt": prompt, "tail": tail, "tail_prob": prefix_prob, "next_bytes": _distribution(p, top),
                     "healed_word": word, "token_word": naive, "token_next": first, "seconds": seconds,
                     "unchecked_mass": state.unchecked_mass})
    healing = measure_healing(model, tokenizer, heal_texts, n_heal, seed=seed, check=check, min_mass=min_mass,
                              log=log) if n_heal else None
    result = {"model": model_spec, "check": check, "min_mass": min_mass, "prompts": rows, "healing": healing,
              "manifest": manifest(seeds={"seed": seed})}
    write_json(out / "bytes.json", result)
    return result


def measure_healing(model, tokenizer, texts: Sequence[str], n: int, *, seed: int = 0, check: str = "mass",
                    min_mass: float = 1e-4, log: Log = print) -> dict:
    """Word completion on prompts cut mid-word: plain greedy tokens vs exact byte-level healing, paired."""
    trie = VocabTrie.from_tokenizer(tokenizer)
    prefix = start_ids(tokenizer)
    pairs = mid_word_prompts(texts, n, seed)
    if not pairs:
        raise ValueError("no text has a word of 4+ letters after its first word to cut; pass other --heal-texts")
    cases = []
    for k, (prompt, rest) in enumerate(pairs):
        state = ByteState.from_prompt(model, trie, prompt, check=check, min_mass=min_mass)
        first_byte = int(np.argmax(state.next_byte_distribution()))
        healed, _ = complete_word(state)
        naive, first_token = token_word_completion(model, tokenizer, prefix, prompt)
        cases.append({"prompt": prompt, "gold": rest, "healed": healed, "token": naive, "token_next": first_token,
                      "byte_next": _byte_label(first_byte),
                      "next_changed": not first_token.encode("utf-8", "replace").startswith(bytes([first_byte]))
                      if first_byte != END else bool(first_token.strip()),
                      "healed_correct": healed == rest, "token_correct": naive == rest})
        if (k + 1) % 20 == 0:
            log(f"healing: {k + 1}/{len(pairs)} prompts")
    healed = [float(c["healed_correct"]) for c in cases]
    plain = [float(c["token_correct"]) for c in cases]
    return {"n": len(cases), "seed": seed, "healed_accuracy": float(np.mean(healed)),
            "token_accuracy": float(np.mean(plain)),
            "difference": vars(paired_difference(healed, plain)),
            "next_changed_rate": vars(mean_interval([float(c["next_changed"]) for c in cases])),
            "cases": cases}


def run_phantom(model, tokenizer, *, n: int, out: Path, rate: float = 0.05, seed: int = 0, batch_size: int = 8,
                temperature: float = 0.0, model_spec: str = "", log: Log = print) -> dict:
    """The phantom-edit probe on ``n`` generated texts, without and with the decoding mask."""
    texts = probe_texts(n, seed)
    conditions = {}
    for mask in (False, True):
        began = time.perf_counter()
        trials = run_probe(model, tokenizer, texts, mask=mask, rate=rate, seed=seed, batch_size=batch_size,
                           temperature=temperature)
        name = "masked" if mask else "plain"
        conditions[name] = {**summarize(trials), "seconds": time.perf_counter() - began,
                            "trials_detail": [t.to_dict() for t in trials]}
        log(f"phantom probe ({name}): {conditions[name]['phantom']} phantom of {conditions[name]['judged']} judged")
    plain, masked = conditions["plain"], conditions["masked"]
    # paired over trials judged in both conditions: phantom (1) or not (0)
    both = [(a["label"] == "phantom", b["label"] == "phantom")
            for a, b in zip(plain["trials_detail"], masked["trials_detail"])
            if a["label"] in ("unchanged", "replaced", "phantom") and b["label"] in ("unchanged", "replaced", "phantom")]
    effect = (vars(paired_difference([float(b) for _, b in both], [float(a) for a, _ in both])) if both else None)
    result = {"model": model_spec, "texts": n, "rate": rate, "seed": seed, "temperature": temperature,
              "conditions": conditions,
              "mask_effect_on_phantom_rate": effect, "manifest": manifest(seeds={"seed": seed})}
    write_json(out / "phantom.json", result)
    return result


def load_tokenizer_spec(spec: str, train_texts: Sequence[str]):
    """``bpe:N`` (a byte-level BPE of N tokens trained on ``train_texts``) or a model spec's tokenizer."""
    if spec.startswith("bpe:"):
        size = spec.partition(":")[2]
        if not size.isdigit():
            raise ValueError(f"tokenizer {spec!r}: expected bpe:N with N the vocabulary size, e.g. bpe:8192")
        if not train_texts:
            raise ValueError(f"tokenizer {spec!r} is trained on --train-text; pass a text file")
        return train_bpe(train_texts, int(size))
    from ..models import load_model

    return load_model(spec)[1]


def run_metrics(specs: Sequence[str], *, texts: Sequence[str], train_texts: Sequence[str], out: Path,
                k_max: int = 5, log: Log = print) -> dict:
    """Every B9 metric for each tokenizer on ``texts``, ranked by bits per character after LZMA."""
    rows = []
    for spec in specs:
        tokenizer = load_tokenizer_spec(spec, train_texts)
        rows.append({"tokenizer": spec, **tokenizer_metrics(tokenizer, texts, k_max=k_max)})
        log(f"metrics: {spec}: {rows[-1]['bytes_per_token']:.2f} bytes/token")
    ranking = sorted(rows, key=lambda r: r["bits_per_char_lzma"])
    result = {"texts": len(texts), "tokenizers": rows, "ranking_by_bits_per_char_lzma": [r["tokenizer"] for r in ranking],
              "manifest": manifest()}
    write_json(out / "metrics.json", result)
    return result


def run_transfer(model, tokenizer, *, train_texts: Sequence[str], eval_texts: Sequence[str], vocab_size: int,
                 methods: Sequence[str], steps: int, out: Path, batch_size: int = 4, max_tokens: int = 128,
                 learning_rate: float = 1e-4, seed: int = 0, model_spec: str = "", log: Log = print) -> dict:
    """Move ``model`` onto a BPE of ``vocab_size`` trained on ``train_texts``; held-out bits per byte per
    initialization, before and after ``steps`` of continued training, with the original model as reference."""
    new = train_bpe(train_texts, vocab_size)
    reference = bits_per_byte(model, tokenizer, eval_texts)
    rows = {}
    for method in methods:
        began = time.perf_counter()
        moved = transfer_model(model, tokenizer, new, method, seed=seed)
        before = bits_per_byte(moved, new, eval_texts)
        losses = continue_training(moved, new, train_texts, steps=steps, batch_size=batch_size,
                                   max_tokens=max_tokens, learning_rate=learning_rate, seed=seed) if steps else []
        after = bits_per_byte(moved, new, eval_texts) if steps else before
        rows[method] = {"before": before, "after": after, "losses": losses,
                        "bpb_before": float(np.mean(before)), "bpb_after": float(np.mean(after)),
                        "seconds": time.perf_counter() - began}
        log(f"transfer {method}: {rows[method]['bpb_before']:.3f} -> {rows[method]['bpb_after']:.3f} bits/byte")
        del moved
    comparisons = {}
    for a, b in (("mean", "random"), ("focus", "random"), ("focus", "mean")):
        if a in rows and b in rows:  # lower bits per byte is better: b - a > 0 means a wins
            for when in ("before", "after"):
                comparisons[f"{a}_vs_{b}_{when}"] = vars(paired_difference(rows[b][when], rows[a][when]))
    old_trie, new_trie = VocabTrie.from_tokenizer(tokenizer), VocabTrie.from_tokenizer(new)
    shared = sum(1 for b in new_trie.token_bytes if b is not None and old_trie.ids_of(b))
    result = {"model": model_spec, "vocab_size": vocab_size, "steps": steps, "batch_size": batch_size,
              "max_tokens": max_tokens, "learning_rate": learning_rate, "eval_documents": len(eval_texts),
              "reference_bpb": float(np.mean(reference)), "reference": reference, "methods": rows,
              "shared_tokens": shared,
              "comparisons": comparisons, "manifest": manifest(seeds={"seed": seed})}
    write_json(out / "transfer.json", result)
    return result


def run_ensemble(model, tokenizer, *, train_texts: Sequence[str], eval_texts: Sequence[str], vocab_size: int,
                 steps: int, n: int, out: Path, weight: float = 0.5, layers: int = 4, hidden: int = 128,
                 batch_size: int = 16, max_tokens: int = 128, learning_rate: float = 1e-3, check: str = "mass",
                 min_mass: float = 1e-4, seed: int = 0, model_spec: str = "", log: Log = print) -> dict:
    """A byte-level ensemble across vocabularies (B5): ``model`` and a small model trained from scratch on a
    local BPE, scored on the rest of words cut mid-word (bits per byte of the gold rest, given the prompt)."""
    small_tok = train_bpe(train_texts, vocab_size)
    small = small_lm(small_tok, layers=layers, hidden=hidden, seed=seed)
    began = time.perf_counter()
    losses = continue_training(small, small_tok, train_texts, steps=steps, batch_size=batch_size,
                               max_tokens=max_tokens, learning_rate=learning_rate, seed=seed)
    log(f"ensemble: small model trained {steps} steps in {time.perf_counter() - began:.0f} s, "
        f"loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    big_trie, small_trie = VocabTrie.from_tokenizer(tokenizer), VocabTrie.from_tokenizer(small_tok)
    cases = []
    for k, (prompt, rest) in enumerate(mid_word_prompts(eval_texts, n, seed)):
        ensemble = ByteEnsemble([ByteState.from_prompt(m, t, prompt, check=check, min_mass=min_mass)
                                 for m, t in ((model, big_trie), (small, small_trie))], [weight, 1 - weight])
        bits = {"model": 0.0, "small": 0.0, "ensemble": 0.0}
        for byte in rest.encode():  # one pass: the members' distributions are the ones their mixture uses
            members = [state.next_byte_distribution()[byte] for state in ensemble.states]
            for name, p in zip(bits, members + [float(np.dot(ensemble.weights, members))]):
                bits[name] -= math.log2(p) if p > 0 else -math.inf
            ensemble.append(bytes([byte]))
        cases.append({"prompt": prompt, "rest": rest, "bytes": len(rest.encode()), **{f"bits_{k2}": v for k2, v in bits.items()}})
        if (k + 1) % 20 == 0:
            log(f"ensemble: {k + 1} prompts")
    total_bytes = sum(c["bytes"] for c in cases)
    per_byte = {name: sum(c[f"bits_{name}"] for c in cases) / total_bytes for name in ("model", "small", "ensemble")}
    per_case = {name: [c[f"bits_{name}"] / c["bytes"] for c in cases] for name in ("model", "small", "ensemble")}
    result = {"model": model_spec, "small": {"vocab_size": len(small_tok), "layers": layers, "hidden": hidden,
                                             "steps": steps, "losses": losses},
              "weight": weight, "n": len(cases), "bits_per_byte": per_byte,
              # positive: the ensemble needs fewer bits than the member (paired over prompts, bits per byte)
              "ensemble_vs_model": vars(paired_difference(per_case["model"], per_case["ensemble"])),
              "ensemble_vs_small": vars(paired_difference(per_case["small"], per_case["ensemble"])),
              "cases": cases, "manifest": manifest(seeds={"seed": seed})}
    write_json(out / "ensemble.json", result)
    return result


def finish(out: Path) -> Path:
    return render_tokenizer_page(out)

