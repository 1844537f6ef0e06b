"""SFT warm-up on gold short solutions, so that RL starts where rewards vary within groups.

RL_TOKEN_CREDIT.md §0.4 ("difficulty targeting"): when the initial pass rate is below ~20 %, most GRPO
groups have all-equal rewards and carry no signal; first run one epoch of SFT on gold short solutions
(lr 1e-5). This is that step, on TRL's ``SFTTrainer`` with a conversational prompt-completion dataset
(loss on the completion only, the same chat template the RL rollouts use):

    arithmetic:  "Compute 47+38. Answer in the form "Answer: N"."  ->  "47+38 = 85\\nAnswer: 85"
    gsm8k:       question + instruction                            ->  worked solution + "\\nAnswer: N"

The warm-up problems are drawn from the train split with their own seed (``seed``, default task seed +
1000), so they differ from the RL prompts. The result is a normal model directory (``OUT/final``), written
only when training finished, so an interrupted warm-up simply runs again.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .io import write_json

WARMUP_KEYS = {"n_train": int, "epochs": (int, float), "learning_rate": (int, float), "batch_size": int,
               "seed": int, "tiers": list}


@dataclass
class WarmupConfig:
    n_train: int = 512
    epochs: float = 1.0
    learning_rate: float = 1e-5
    batch_size: int = 16
    seed: int | None = None  # problems' seed; None = task seed + 1000
    tiers: list | None = None  # arithmetic tiers; None = the task's

    def problems(self) -> list[str]:
        problems = []
        if self.n_train < 1:
            problems.append(f"warmup.n_train must be >= 1, got {self.n_train}")
        if self.epochs <= 0:
            problems.append(f"warmup.epochs must be > 0, got {self.epochs}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"warmup.learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.batch_size < 1:
            problems.append(f"warmup.batch_size must be >= 1, got {self.batch_size}")
        return problems


def gold_rows(task: dict, config: WarmupConfig) -> list[dict]:
    """Prompt / gold completion pairs for the warm-up, in the chat format TRL's SFTTrainer takes."""
    from .tasks import generate_problems, load_gsm8k

    seed = config.seed if config.seed is not None else task.get("seed", 0) + 1000
    if task["name"] == "arithmetic":
        drawn = generate_problems(config.n_train, split="train", tiers=config.tiers or task.get("tiers"), seed=seed)
        pairs = [(p.prompt, f"{p.expression} = {p.answer}\nAnswer: {p.answer}") for p in drawn]
    elif task["name"] == "gsm8k":
        rows = load_gsm8k(task.get("path", "openai/gsm8k"), "train", limit=None)
        pairs = [(r["prompt"], r["solution"]) for r in rows[-config.n_train:]]  # RL reads from the front
    else:
        raise ValueError(f"warm-up has no gold solutions for task {task['name']!r}; use arithmetic or gsm8k")
    return [{"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": gold}]}
            for prompt, gold in pairs]


def run_warmup(model_spec: str, task: dict, config: WarmupConfig, out_dir: Path, log=print) -> Path:
    """Fine-tune ``model_spec`` on gold solutions; returns ``out_dir/final`` (reused when already there)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from .models import load_model
    from .train import MetricsFile

    out_dir = Path(out_dir)
    final = out_dir / "final"
    if (final / "config.json").is_file():
        log(f"warm-up model found, reused: {final}")
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = gold_rows(task, config)
    write_json(out_dir / "warmup.json", {"model": model_spec, "task": task, "config": asdict(config),
                                         "examples": rows[:3]})
    model, tokenizer = load_model(model_spec)
    model.train()
    args = SFTConfig(
        output_dir=str(out_dir / "trainer"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
        seed=config.seed if config.seed is not None else task.get("seed", 0), bf16=False,
        gradient_checkpointing=False, max_length=512, disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[MetricsFile(out_dir / "metrics.jsonl")])
    trainer.remove_callback(PrinterCallback)
    started = time.time()
    log(f"warm-up: SFT of {model_spec} on {len(rows)} gold solutions, {config.epochs} epoch(s), "
        f"lr {config.learning_rate} -> {final}")
    trainer.train()
    tmp = out_dir / f".final.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(final)
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    log(f"warm-up done in {time.time() - started:.0f} s")
    return final
