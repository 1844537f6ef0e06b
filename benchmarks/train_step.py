"""Time per optimizer step on SmolLM2-135M (CPU), one fixed generation batch, side by side in one process.

Variants (each its own copy of the same initial model; generation is done once and replayed to all, so
every variant trains on identical completions and the comparison excludes sampling noise):
  plain      TRL 1.16 GRPOTrainer, loss_type="dapo"
  random20   tokenfocus, random 20 % of tokens, selected-token mean (no signal forward)
  pred_top20 tokenfocus, predictive-entropy top 20 % (80/20; the training forward's entropy)
  low2high   tokenfocus, attention-entropy Low2High soft weights (rollout signal, fused pass)
  low2high_separate  the same with the separate no-grad signal pass (what GA > 1 uses)
  dapo       tokenfocus, the dapo preset (all tokens; the unit of D3S's row)
  d3s        tokenfocus, D3S (max-variance half of the rollouts x top 20 % |A|.H tokens at the run's start, where
             its down-sampling is strongest): the rows outside the rollout subset skip the forward and backward
  d3s_all_rows  the same step with every row forwarded (zero weights; the path before rows were dropped)
  d3s_mid    D3S at progress 0.5 (N = 3/4 of the batch, K = 60 %), rows dropped: about a run's average
A step = TRL's _prepare_inputs (reward scoring, advantages, our signals and policy) + forward/backward +
optimizer step. Rounds interleave the variants; medians reported. Targets (issue 4): random20 and
pred_top20 <= 1.05 x plain; low2high <= 1.15 x plain.

    python benchmarks/train_step.py [--prompts 4] [--generations 4] [--completion 48] [--rounds 4]
        [--variants plain,dapo,d3s,d3s_all_rows,d3s_mid --out FILE]   # a subset (plain always in)
        [--model SPEC --device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from step_harness import add_device_arguments, build_trainers, ratio_table, time_steps

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_step_cpu.json")
    parser.add_argument("--variants", default="plain,random20,pred_top20,low2high,low2high_separate",
                        help="comma-separated subset; the plain step is always measured")
    add_device_arguments(parser)
    args = parser.parse_args()

    from datasets import Dataset
    from trl import GRPOTrainer

    from tokenfocus.config import method_preset
    from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
    from tokenfocus.models import load_model
    from tokenfocus.tasks import AnswerReward, generate_problems

    batch = args.prompts * args.generations
    problems = generate_problems(args.prompts, split="train", seed=0)
    rows = [{"prompt": [{"role": "user", "content": p.prompt}], "answer": str(p.answer)} for p in problems]
    dataset = Dataset.from_list(rows)
    base, tokenizer = load_model(args.model)
    config = dict(output_dir="/tmp/tokenfocus-bench-train-step", per_device_train_batch_size=batch,
                  num_generations=args.generations, max_completion_length=args.completion, learning_rate=1e-6,
                  use_cpu=args.device == "cpu", bf16=False, gradient_checkpointing=False, report_to=[], max_steps=100,
                  temperature=1.0, beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", disable_tqdm=True)
    def method(name, **extra):  # the trainer arguments of a method preset
        preset = method_preset(name)
        return dict(signals=preset.signals, policy=preset.policy, loss=preset.loss, **extra)

    variants = {
        "plain": (GRPOTrainer, {}),
        "random20": (TokenFocusGRPOTrainer, method("random20")),
        "pred_top20": (TokenFocusGRPOTrainer, method("8020", signal_source="current")),
        "low2high": (TokenFocusGRPOTrainer, method("low2high")),
        "low2high_separate": (TokenFocusGRPOTrainer, method("low2high", signal_pass="separate")),
        "dapo": (TokenFocusGRPOTrainer, method("dapo")),
        "d3s": (TokenFocusGRPOTrainer, method("d3s")),
        "d3s_all_rows": (TokenFocusGRPOTrainer, method("d3s")),
        "d3s_mid": (TokenFocusGRPOTrainer, method("d3s")),
    }
    chosen = ["plain", *(n for n in dict.fromkeys(args.variants.split(",")) if n and n != "plain")]
    unknown = [n for n in chosen if n not in variants]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(variants)}")
    variants = {name: variants[name] for name in chosen}
    trainers = build_trainers(variants, base, tokenizer, dataset, AnswerReward(), config)
    if "d3s_all_rows" in trainers:
        trainers["d3s_all_rows"].tf_drop_rows = False
    if "d3s_mid" in trainers:  # the step stays at 50 of 100: progress 50 / 99
        trainers["d3s_mid"].state.max_steps, trainers["d3s_mid"].state.global_step = 100, 50
    generation_batch = [row for row in rows for _ in range(args.generations)]
    times = time_steps(trainers, generation_batch, args.rounds)
    print(f"batch {batch} completions x <= {args.completion} tokens; medians of {args.rounds} interleaved rounds")
    rows_out = ratio_table(times, "plain")
    payload = {"benchmark": "train_step", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "model": args.model, "device": args.device,
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "completions": batch,
               "max_completion_length": args.completion, "variants": rows_out,
               "targets": {"random20": 1.05, "pred_top20": 1.05, "low2high": 1.15}, "rounds": args.rounds,
               "prompts": args.prompts, "generations": args.generations}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
