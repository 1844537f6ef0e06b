"""mean@k sampling with and without a shared prompt forward, side by side in one run (interleaved rounds), on
SmolLM2-135M-Instruct and long-context prompts (task T4, long_facts L20: about 230 tokens each).

    repeated   each problem's prompt written k times and generated as k rows (k prompt forwards)
    shared     generate_rollout(samples_per_prompt=k): one prompt forward per problem, its KV cache copied to k rows

Reported: seconds per sampled pass over the problems (median of rounds) and the ratio repeated / shared. The two
modes draw different samples from the same distribution; with greedy decoding they give the same tokens (tested in
tests/test_rollout.py), which this script also checks on the real model.

    python benchmarks/eval_shared_prefill.py [--problems 16] [--k 4] [--rounds 3] [--tier L20]
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
from tokenfocus.rollout import format_prompts, generate_rollout
from tokenfocus.tasks import build_task

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tier", default="L20")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS / "eval_shared_prefill_cpu.json")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    task = build_task({"name": "long_facts"})
    prompts = [e.prompt for e in task.eval_examples("test", args.problems, 0, tiers={args.tier: args.problems})]
    prompt_tokens = statistics.mean(len(tokenizer(text, add_special_tokens=False).input_ids)
                                    for text in format_prompts(tokenizer, prompts))
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    greedy = {mode: generate_rollout(model, tokenizer, prompts if mode == "shared" else
                                     [p for p in prompts for _ in range(args.k)], temperature=0.0,
                                     samples_per_prompt=args.k if mode == "shared" else 1, **common).completions
              for mode in ("repeated", "shared")}
    times = {"repeated": [], "shared": []}
    for round_ in range(args.rounds):
        for mode in times:
            started = time.perf_counter()
            if mode == "shared":
                generate_rollout(model, tokenizer, prompts, temperature=1.0, seed=round_, samples_per_prompt=args.k,
                                 **common)
            else:
                generate_rollout(model, tokenizer, [p for p in prompts for _ in range(args.k)], temperature=1.0,
                                 seed=round_, **common)
            times[mode].append(time.perf_counter() - started)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    result = {
        "what": f"one sampled pass (k = {args.k}) over {args.problems} long_facts {args.tier} problems, prompts of "
                f"{prompt_tokens:.0f} tokens on average, <= {args.max_new_tokens} new tokens, batch {args.batch_size} "
                "rows; median of interleaved rounds (seconds)",
        "rounds": args.rounds, "threads": torch.get_num_threads(), "median_s": median, "all_s": times,
        "ratio repeated / shared": median["repeated"] / median["shared"],
        "greedy_equal": greedy["repeated"] == greedy["shared"], "model": args.model, "manifest": manifest(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("what", "median_s", "ratio repeated / shared", "greedy_equal")},
                     indent=2))


if __name__ == "__main__":
    main()
