"""Cost of the counterfactual signals: time per optimizer step on SmolLM2-135M (CPU), side by side in one run.

Variants, on one fixed generation batch of the steps task (T3: marks the start value as evidence and the steps),
replayed to every variant (``step_harness``):
  dapo             tokenfocus, DAPO, no signal (the plain step)
  pgpo             + context_dependency (k3): one no-grad forward with the evidence hidden
  ktr_image        + predictive entropy and the evidence-hidden attribution (Video-KTR image form): one forward
  ktr_video        + the step-shuffled attribution too (Video-KTR video form): two forwards
  pgpo_full_kl     + context_dependency with the exact KL: two forwards (the full context's distributions again)
Target (issue 12): each counterfactual adds no more than one no-grad forward over the prompt and completion,
<= 1.35 x the plain step at the study's shapes (4 prompts x G = 8, <= 32 new tokens); per counterfactual the
added cost is (ratio - 1) / forwards.

    python benchmarks/counterfactual_step.py [--prompts 4] [--generations 8] [--completion 32] [--rounds 3]
        [--model SPEC --device cuda --out FILE]   # on a GPU, with the CUDA peak memory of each variant's step
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from step_harness import add_device_arguments, build_trainers, cuda_step_peaks, ratio_table, time_steps

RESULTS = Path(__file__).parent / "results"
FORWARDS = {"dapo": 0, "pgpo": 1, "ktr_image": 1, "ktr_video": 2, "pgpo_full_kl": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "counterfactual_step_cpu.json")
    add_device_arguments(parser)
    args = parser.parse_args()

    from datasets import Dataset

    from tokenfocus.config import method_preset
    from tokenfocus.integrations.prompt_marks import SPANS_COLUMN
    from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
    from tokenfocus.models import load_model
    from tokenfocus.tasks import AnswerReward, build_task
    from tokenfocus.tasks.spans import encode_spans

    batch = args.prompts * args.generations
    examples = build_task({"name": "steps", "tiers": ["S3"]}).train_examples(args.prompts)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}], "answer": e.answer,
             SPANS_COLUMN: encode_spans(e.spans)} for e in examples]
    base, tokenizer = load_model(args.model)
    config = {"output_dir": "/tmp/tokenfocus-bench-counterfactual", "per_device_train_batch_size": batch,
              "num_generations": args.generations, "max_completion_length": args.completion, "learning_rate": 1e-6,
              "use_cpu": args.device == "cpu", "bf16": False, "gradient_checkpointing": False, "report_to": [],
              "max_steps": 100,
              "temperature": 1.0, "beta": 0.0, "disable_tqdm": True}

    def method(name, **changes):  # the trainer arguments of a method preset
        preset = method_preset(name)
        signals = [{"name": s.name, "label": s.label, **s.options, **changes} if s.name == "context_dependency" else s
                   for s in preset.signals]
        return {"signals": signals, "policy": preset.policy, "loss": preset.loss}

    variants = {
        "dapo": (TokenFocusGRPOTrainer, method("dapo")),
        "pgpo": (TokenFocusGRPOTrainer, method("pgpo")),
        "ktr_image": (TokenFocusGRPOTrainer, method("video_ktr_image")),
        "ktr_video": (TokenFocusGRPOTrainer, method("video_ktr")),
        "pgpo_full_kl": (TokenFocusGRPOTrainer, method("pgpo", estimator="full_kl")),
    }
    trainers = build_trainers(variants, base, tokenizer, Dataset.from_list(rows), AnswerReward(), config)
    times = time_steps(trainers, [row for row in rows for _ in range(args.generations)], args.rounds)
    print(f"batch {batch} completions x <= {args.completion} tokens; medians of {args.rounds} interleaved rounds")
    table = ratio_table(times, "dapo")
    for name, row in table.items():
        if FORWARDS[name]:
            row["added_per_counterfactual"] = (row["ratio_vs_dapo"] - 1) / FORWARDS[name]
            print(f"{name:>18}: +{row['added_per_counterfactual']:.3f} x plain per counterfactual forward")
    if args.device == "cuda":
        for name, row in cuda_step_peaks(trainers, [row for row in rows for _ in range(args.generations)]).items():
            table[name]["cuda_memory"] = row
    payload = {"benchmark": "counterfactual_step", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "model": args.model,
               "device": args.device,
               "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
               "task": "steps S3", "completions": batch, "max_completion_length": args.completion,
               "forwards": FORWARDS, "variants": table,
               "target": "each counterfactual forward adds <= 0.35 x the plain step (pgpo, ktr_image <= 1.35 x)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
