"""Cost of the mechanism probes (issue 17) on SmolLM2-135M (CPU), against a plain forward of the same tokens,
side by side in one run (interleaved rounds, medians).

    plain          model(ids).logits under no_grad: the unit (embedding, 30 layers, the LM head)
    sinks          probe_sinks on every layer: the decoder with the recorder's LSE pass and column sums, the
                   residual stream kept, the massive-activation and cos statistics (one pass; target <= 1.3x)
    decomposition  token_losses: the decoder and the LM head in position chunks (the loss decomposition's pass)
    ngram_heads    head_ngram_scores at 512 tokens (eager attention, T x T per layer; refuses T > 512), against
                   a plain forward of 512 tokens
    block          block_sensitivity: a full and a block-masked forward and the chunked KL (k_passes: 2 forwards)
    concepts       concept_matrix on the unembedding rows (no forward at all)
Target (issue 17): every one-pass probe <= 1.3x a plain forward at 1,024 tokens.

    python benchmarks/probe_cost.py [--rounds 3] [--tokens 1024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tokenfocus.io import manifest
from tokenfocus.models import load_model
from tokenfocus.probes.block_attention import block_sensitivity
from tokenfocus.probes.concepts import concept_matrix, unembedding
from tokenfocus.probes.function_tokens import token_losses
from tokenfocus.probes.ngram import head_ngram_scores
from tokenfocus.probes.sinks import probe_sinks

RESULTS = Path(__file__).parent / "results"
GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k" / "test.jsonl"


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_cost_cpu.json")
    args = parser.parse_args()
    model, tokenizer = load_model("default")
    text = "\n\n".join(json.loads(line)["question"] for line in GSM8K.read_text().splitlines())
    ids = tokenizer(text, return_tensors="pt").input_ids[:, : args.tokens]
    if ids.shape[1] < args.tokens:
        raise SystemExit(f"only {ids.shape[1]} tokens of text; lower --tokens")
    short = ids[:, :512]
    mask = torch.ones_like(ids, dtype=torch.bool)
    blocks = (torch.arange(args.tokens) // 64)[None]  # 16 blocks of 64 tokens, the last one the query block
    vectors = unembedding(model)
    cases = {
        "plain": lambda: model(ids).logits,
        "sinks": lambda: probe_sinks(model, ids),
        "decomposition": lambda: token_losses(model, ids, mask),
        "plain_512": lambda: model(short).logits,
        "ngram_heads_512": lambda: head_ngram_scores(model, short),
        "block": lambda: block_sensitivity(model, ids, mask, blocks),
        "concepts": lambda: concept_matrix(vectors, tokenizer),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        model(ids[:, :64])  # warm-up: the first call pays for kernels and allocations
        for round_index in range(args.rounds):
            for name, fn in cases.items():
                times[name].append(timed(fn))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    median = {name: statistics.median(v) for name, v in times.items()}
    ratio = {name: median[name] / median["plain_512" if name.endswith("_512") else "plain"] for name in cases}
    rows = [{"case": name, "seconds": round(median[name], 3), "ratio_to_plain": round(ratio[name], 3)}
            for name in cases]
    print(f"\n{'case':18s} {'median s':>9s} {'x plain':>8s}")
    for row in rows:
        print(f"{row['case']:18s} {row['seconds']:9.3f} {row['ratio_to_plain']:8.2f}")
    result = {"tokens": args.tokens, "rounds": args.rounds, "threads": torch.get_num_threads(), "rows": rows,
              "times": times, "target": "one-pass probes (sinks, decomposition, ngram_heads) <= 1.3x plain",
              "manifest": manifest()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
