"""LayerRunner's cost on SmolLM2-135M (CPU), side by side in one run (interleaved rounds, medians):

    forward        model.forward on a prompt of --length tokens (no grad): the unit
    runner         LayerRunner.run unpruned on the same ids: target <= 1.05x forward
    pruned         LayerRunner.run with 75 % of a >= 1,024-token context dropped before layer 2: target <= 0.5x
                   forward (the prompt is a few template tokens, the context, a question)
FLOPs per configuration from prune.fidelity.relative_flops (per layer: 2 x weights x n + 4 d n^2).

    python benchmarks/pruning.py [--length 1024] [--rounds 5]
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
from tokenfocus.prune import LayerRunner, TokenLayout
from tokenfocus.prune.fidelity import relative_flops
from tokenfocus.prune.policies import random_keep

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "pruning_cpu.json")
    args = parser.parse_args()
    model, _ = load_model("smollm2-135m-instruct")
    model.eval()
    context = args.length - 24
    layout = TokenLayout.from_segments([("system", 8), ("context", context), ("query", 16)])
    ids = torch.randint(100, model.config.vocab_size, (1, args.length), generator=torch.Generator().manual_seed(0))
    keep = random_keep(layout, 0.25, torch.Generator().manual_seed(1))
    runner = LayerRunner(model)
    runs = {"forward": lambda: model(ids, logits_to_keep=1).logits[:, -1],  # the head on the last position only, as the runner
            "runner": lambda: runner.run(ids, logits="last").logits,
            "pruned": lambda: runner.run(ids, drops={2: keep}, logits="last").logits}
    with torch.no_grad():
        check = (runs["forward"]() - runs["runner"]()[:, 0]).abs().max().item()
        times = {name: [] for name in runs}
        for name, run in runs.items():  # warm-up
            run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    layers = runner.num_layers
    result = {
        "what": f"one no-grad prefill of {args.length} tokens (last-position logits), median of interleaved rounds (s)",
        "rounds": args.rounds, "threads": torch.get_num_threads(), "median_s": median, "all_s": times,
        "ratios": {"runner / forward": median["runner"] / median["forward"],
                   "pruned / forward": median["pruned"] / median["forward"]},
        "targets": {"runner / forward": 1.05, "pruned / forward": 0.5},
        "relative_flops": {"runner": 1.0, "pruned": relative_flops(model.config, args.length, {2: keep}, layers)},
        "pruned": {"context": context, "kept_context": len(keep) - 24, "drop_before_layer": 2},
        "max_abs_logit_difference_runner_vs_forward": check,
        "manifest": manifest(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s", "ratios", "relative_flops",
                                             "max_abs_logit_difference_runner_vs_forward")}, indent=2))


if __name__ == "__main__":
    main()
