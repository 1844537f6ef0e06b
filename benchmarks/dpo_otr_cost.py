"""Cost of token-weighted DPO and of One-Token Rollout on SmolLM2-135M (CPU), each against TRL's plain step, side by
side in one run (interleaved rounds, medians of one optimizer step = forward + backward + AdamW).

    dpo_trl        TRL's DPOTrainer, sigmoid loss, reference online: the unit of the DPO rows
    dpo_weighted   TokenFocusDPOTrainer, diff weights (omega) + TAB-PO's barrier: target <= 1.05x dpo_trl
    sft_trl        TRL's SFTTrainer (fused LM head): the unit of the SFT rows
    otr            TokenFocusSFTTrainer with OTR (K = 8): the paper's extra cost is one sampled token per position;
                   the ratio is reported, no target

The batch: 8 pairs of task T5 (json_answers, D2-D3, chat format) for DPO; 16 gold arithmetic solutions for SFT.

    python benchmarks/dpo_otr_cost.py [--rounds 5] [--model SPEC --device cuda --out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from tokenfocus.config.dpo import build_dpo_config
from tokenfocus.config.sft import build_sft_config
from tokenfocus.integrations.dpo import TokenFocusDPOTrainer
from tokenfocus.integrations.sft import TokenFocusSFTTrainer
from tokenfocus.io import manifest
from tokenfocus.losses.otr import OTRConfig
from tokenfocus.models import load_model
from tokenfocus.policies.pairs import PairWeighting

from step_harness import add_device_arguments, synchronize

RESULTS = Path(__file__).parent / "results"
COMMON = {"per_device_train_batch_size": 8, "learning_rate": 1e-6, "report_to": "none", "save_strategy": "no",
          "use_cpu": True, "bf16": False, "disable_tqdm": True, "logging_steps": 1, "seed": 0,
          "gradient_checkpointing": False}


def _step(trainer) -> float:
    """Seconds of one training step on the trainer's first batch (forward, backward, optimizer)."""
    batch = next(iter(trainer.get_train_dataloader()))
    if trainer.optimizer is None:
        trainer.create_optimizer_and_scheduler(num_training_steps=10)
        trainer.current_gradient_accumulation_steps = 1  # set by train(); one micro-batch per step here
    began = time.perf_counter()
    trainer.model.train()
    loss = trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    synchronize()
    assert torch.isfinite(loss)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "dpo_otr_cost_cpu.json")
    add_device_arguments(parser)
    args = parser.parse_args()
    COMMON["use_cpu"] = args.device == "cpu"
    model, tokenizer = load_model(args.model)
    pairs = build_dpo_config({"pairs": {"task": {"name": "json_answers", "tiers": ["D2", "D3"]}, "n": 8}},
                             check_model=False).rows
    gold = build_sft_config({"data": {"task": {"name": "arithmetic"}, "n": 16, "seed": 1000}}, check_model=False).rows
    tmp = Path(tempfile.mkdtemp())

    reference = copy.deepcopy(model).eval().to(args.device)  # one frozen reference, shared by both DPO trainers

    def dpo(cls, **extra):
        return cls(model=copy.deepcopy(model), ref_model=reference, processing_class=tokenizer,
                   args=DPOConfig(output_dir=str(tmp / cls.__name__), max_length=256, beta=0.1, **COMMON),
                   train_dataset=Dataset.from_list(pairs), **extra)

    def sft(cls, **extra):
        common = {**COMMON, "per_device_train_batch_size": 16}
        return cls(model=copy.deepcopy(model), processing_class=tokenizer, train_dataset=Dataset.from_list(gold),
                   args=SFTConfig(output_dir=str(tmp / f"sft-{cls.__name__}"), max_length=256, **common), **extra)

    # Two pairs, one after the other (four trainers with AdamW state at once need ~10 GB): each pair interleaved.
    pairs_of_trainers = {
        "dpo": lambda: {"dpo_trl": dpo(DPOTrainer),
                        "dpo_weighted": dpo(TokenFocusDPOTrainer, weighting=PairWeighting(mode="diff", barrier=1.0))},
        "sft": lambda: {"sft_trl": sft(SFTTrainer), "otr": sft(TokenFocusSFTTrainer, otr=OTRConfig(k=8))},
    }
    times = {}
    for build in pairs_of_trainers.values():
        trainers = build()
        for trainer in trainers.values():  # warm-up: allocator, optimizer state
            _step(trainer)
        for name in trainers:
            times[name] = []
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                times[name].append(_step(trainer))
        del trainers
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "what": "one optimizer step, median of interleaved rounds (seconds)",
        "rounds": args.rounds, "threads": torch.get_num_threads(), "model": args.model, "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "median_s": median, "all_s": times,
        "ratios": {"dpo_weighted / dpo_trl": median["dpo_weighted"] / median["dpo_trl"],
                   "otr / sft_trl": median["otr"] / median["sft_trl"]},
        "targets": {"dpo_weighted / dpo_trl": 1.05},
        "batch": {"dpo_pairs": len(pairs), "sft_rows": len(gold)},
        "manifest": manifest(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_s": median, "ratios": result["ratios"]}, indent=2))


if __name__ == "__main__":
    main()
