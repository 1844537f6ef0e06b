"""The calculator tool loop (task T6) batched against one prompt at a time, on SmolLM2-135M after a short SFT on
scripted tool-call solutions (so that it does call the tool), side by side in one run (interleaved rounds).

    one_by_one   CalcToolLoop(batch_size=1): each prompt generated alone, call round by call round
    batched      CalcToolLoop(batch_size=B): the rows still running generated together each round

Reported: seconds per rollout of the whole batch (median of rounds), the ratio, and calls per row in each mode
(sampled at temperature 1 with the same seed per round, so the two modes draw different samples but the same
distribution).

    python benchmarks/calc_tool_batch.py [--prompts 16] [--rounds 3] [--sft-steps 24]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tokenfocus.integrations.calc_tool import CalcToolLoop
from tokenfocus.io import manifest
from tokenfocus.models import load_model
from tokenfocus.rollout import format_prompts
from tokenfocus.tasks import build_task

RESULTS = Path(__file__).parent / "results"


def sft(model, tokenizer, examples, steps: int) -> None:
    """A few plain SFT steps on scripted solutions (prompt masked), enough to make the model call the tool."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    for step in range(steps):
        batch = examples[(step * 8) % len(examples):][:8]
        prompts = format_prompts(tokenizer, [e.prompt for e in batch])
        rows = [tokenizer(p + e.solution + tokenizer.eos_token, add_special_tokens=False).input_ids for p, e in
                zip(prompts, batch)]
        starts = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.eos_token_id] * (width - len(r)) for r in rows])
        labels = ids.clone()
        for i, (r, s) in enumerate(zip(rows, starts)):
            labels[i, :s] = -100
            labels[i, len(r):] = -100
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sft-steps", type=int, default=24)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS / "calc_tool_batch_cpu.json")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m-instruct")
    task = build_task({"name": "calculator", "tiers": ["C2", "C3"]})
    sft(model, tokenizer, task.gold_examples(8 * args.sft_steps, seed=5), args.sft_steps)
    prompts = [tokenizer(text, add_special_tokens=False).input_ids
               for text in format_prompts(tokenizer, [e.prompt for e in task.examples("test", args.prompts, 1)])]
    loops = {"one_by_one": CalcToolLoop(batch_size=1), "batched": CalcToolLoop(batch_size=args.prompts)}
    times = {name: [] for name in loops}
    calls = {name: [] for name in loops}
    for round_ in range(args.rounds):
        for name, loop in loops.items():
            torch.manual_seed(round_)
            started = time.perf_counter()
            rows = loop.rollouts(model, tokenizer, prompts, args.budget, temperature=1.0)
            times[name].append(time.perf_counter() - started)
            calls[name].append(sum(r["calls"] for r in rows) / len(rows))
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "what": f"one tool-loop rollout of {args.prompts} prompts (C2-C3), budget {args.budget} tokens, "
                "median of interleaved rounds (seconds)",
        "rounds": args.rounds, "threads": torch.get_num_threads(), "median_s": median, "all_s": times,
        "calls_per_row": calls, "ratio one_by_one / batched": median["one_by_one"] / median["batched"],
        "sft_steps": args.sft_steps, "manifest": manifest(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_s": median, "calls_per_row": calls,
                      "ratio one_by_one / batched": result["ratio one_by_one / batched"]}, indent=2))


if __name__ == "__main__":
    main()
