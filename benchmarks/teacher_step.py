"""Cost of a teacher in GRPO: time and memory per optimizer step on SmolLM2-135M (CPU), side by side in one run.

Variants (issue 13), on one fixed generation batch of the arithmetic task replayed to every variant
(``step_harness``); the teacher is a frozen copy of the same model (the cost does not depend on its weights):
  dapo         tokenfocus DAPO, no teacher (the plain step)
  dgrpo_a      + coef x token-mean reverse KL to the teacher (form "loss", exact, vocabulary-chunked): one no-grad
               teacher forward; the student's logits for the KL come from the training forward's hidden states
  dgrpo_a_topk the same with the top-k estimator (k = 20)
  dgrpo_b      + coef x (log pi_T - log pi_old) on the advantage (form "advantage"): one no-grad teacher scoring
  scope        SCOPE's dual path (form "scope"): the same teacher scoring, perplexity weights, the MLE term
  opd          on-policy distillation only (form "loss", rl: false)
A variant named with "+shared" (``dapo+shared``, ``dgrpo_b+shared``, ...) runs with ``shared_prefix``: one forward
of each group's prompt in the training forward and the teacher's scoring (``integrations/shared_prefix.py``); it
pays off on long prompts: ``--task long_facts:L20 --prompts 1`` (T4: one prompt of about 200 tokens, 8 rollouts).
Target: <= 1.35 x the plain step. Memory: each variant's step runs again in its own process, and the peak resident
memory of its steps above the loaded state (models, teacher, dataset) is compared with the plain step's; target:
the chunked KL stays within 1.2 x the plain step's peak (CPU stand-in for ``torch.cuda.max_memory_allocated``).

    python benchmarks/teacher_step.py [--prompts 4] [--generations 8] [--completion 32] [--rounds 3]
        [--variants dapo,scope --out benchmarks/results/teacher_step_scope_cpu.json]   # a subset (dapo always in)
        [--model SPEC --device cuda --out FILE]   # on a GPU: memory is the CUDA peak of each step, in one process
        [--teacher-device cpu]   # the teacher on another device than the student (teacher.device)
        [--task long_facts:L20 --prompts 1 --variants dapo+shared,dgrpo_b+shared --out FILE]   # shared prompts
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "dapo": None,
    "dgrpo_a": {"form": "loss", "coef": 0.05, "estimator": "full"},
    "dgrpo_a_topk": {"form": "loss", "coef": 0.05, "estimator": "topk", "topk": 20},
    "dgrpo_b": {"form": "advantage", "coef": 0.05},
    "scope": {"form": "scope", "rl": False},
    "opd": {"form": "loss", "coef": 1.0, "rl": False},
}


def setup(args, names: list[str]):
    """(trainers, generation batch) for ``names``, all on the same replayed generation batch."""
    import copy

    from datasets import Dataset
    from step_harness import build_trainers

    from tokenfocus.config import method_preset
    from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
    from tokenfocus.losses.distill import DistillConfig
    from tokenfocus.models import load_model
    from tokenfocus.tasks import AnswerReward, build_task

    batch = args.prompts * args.generations
    task, _, tiers = args.task.partition(":")
    examples = build_task({"name": task, "tiers": tiers.split(",")}).train_examples(args.prompts)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}], "answer": e.answer} for e in examples]
    base, tokenizer = load_model(args.model)
    teacher = copy.deepcopy(base)
    config = {"output_dir": "/tmp/tokenfocus-bench-teacher", "per_device_train_batch_size": batch,
              "num_generations": args.generations, "max_completion_length": args.completion, "learning_rate": 1e-6,
              "use_cpu": args.device == "cpu", "bf16": False, "gradient_checkpointing": False, "report_to": [],
              "max_steps": 100,
              "temperature": 1.0, "beta": 0.0, "disable_tqdm": True}
    preset = method_preset("dapo")
    plain = {"signals": preset.signals, "policy": preset.policy, "loss": preset.loss}
    variants = {}
    for name in names:
        kind, _, shared = name.partition("+")
        distill = VARIANTS[kind]
        distill = None if distill is None else {**distill, "device": args.teacher_device}
        extra = dict(plain) if distill is None else {**plain, "teacher": teacher, "distill": DistillConfig(**distill)}
        variants[name] = (TokenFocusGRPOTrainer, {**extra, "shared_prefix": shared == "shared"})
    trainers = build_trainers(variants, base, tokenizer, Dataset.from_list(rows), AnswerReward(), config)
    return trainers, [row for row in rows for _ in range(args.generations)]


def _status(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def memory_child(args) -> None:
    """One variant in this process: the peak resident memory of one step above the state after a warm-up step
    (models, teacher, optimizer state, the cached generation), printed as JSON. The child runs with a fixed mmap
    threshold, so freed tensors leave the resident set and the peak tracks live memory."""
    from step_harness import time_steps

    trainers, generation = setup(args, [args.child])
    time_steps(trainers, generation, rounds=0)  # the warm-up step: generation, optimizer state
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak) to the current resident set
    before = _status("VmRSS")
    time_steps(trainers, generation, rounds=1)
    print(json.dumps({"variant": args.child, "baseline_bytes": before, "step_peak_bytes": _status("VmHWM") - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="arithmetic:D2,D3", help="TASK:TIER[,TIER] of the prompts")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of the variants; the plain step (dapo) is always measured")
    parser.add_argument("--out", type=Path, default=RESULTS / "teacher_step_cpu.json")
    parser.add_argument("--teacher-device", default=None,
                        help="where the teacher lives (teacher.device), e.g. cpu beside a cuda student; default: "
                             "the student's device")
    sys.path.insert(0, str(Path(__file__).parent))
    from step_harness import add_device_arguments
    add_device_arguments(parser)
    args = parser.parse_args()
    if args.child:
        memory_child(args)
        return
    names = ["dapo", *(n for n in dict.fromkeys(args.variants.split(",")) if n and n != "dapo")]
    unknown = [n for n in names if n.partition("+")[0] not in VARIANTS or n.partition("+")[2] not in ("", "shared")]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}, each optionally with +shared")

    # memory first, each variant in its own process (the timing below holds all the trainers at once); on a GPU
    # the CUDA allocator's peak is read per step in one process, after the timing
    memory = {}
    for name in names if args.device == "cpu" else []:  # the peak of one process is not reset between variants
        command = [sys.executable, __file__, "--child", name, "--prompts", str(args.prompts), "--generations",
                   str(args.generations), "--completion", str(args.completion), "--model", args.model,
                   "--task", args.task,
                   *(["--teacher-device", args.teacher_device] if args.teacher_device else [])]
        found = subprocess.run(command, capture_output=True, text=True, check=True,
                               env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
        memory[name] = json.loads(found.stdout.strip().splitlines()[-1])

    from step_harness import cuda_step_peaks, ratio_table, time_steps

    trainers, generation = setup(args, names)
    times = time_steps(trainers, generation, args.rounds)
    print(f"batch {args.prompts * args.generations} completions x <= {args.completion} tokens; medians of "
          f"{args.rounds} interleaved rounds")
    table = ratio_table(times, "dapo")
    if args.device == "cuda":
        for name, row in cuda_step_peaks(trainers, generation).items():
            table[name]["memory"] = {**row, "what": "torch.cuda.max_memory_allocated above the step's start"}
    del trainers, generation

    plain = memory["dapo"]["step_peak_bytes"] if memory else None
    if memory:
        print(f"{'variant':>18} | {'step peak MiB':>13} | {'x dapo':>7}")
    for name, row in memory.items():
        row["ratio_vs_dapo"] = row["step_peak_bytes"] / plain if plain else None
        table[name]["memory"] = row
        print(f"{name:>18} | {row['step_peak_bytes'] / 2**20:13.1f} | {row['ratio_vs_dapo']:7.3f}")
    import torch

    result = {"benchmark": "teacher_step", "device": args.device, "model": args.model,
              "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
              "threads": torch.get_num_threads(), "teacher_device": args.teacher_device,
              "task": args.task, "prompts": args.prompts, "generations": args.generations,
              "completion": args.completion,
              "rounds": args.rounds, "targets": {"time_ratio_max": 1.35, "memory_ratio_max": 1.2}, "variants": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
