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
from dataclasses import asdict
from pathlib import Path

from ..config import WarmupConfig
from ..integrations.callbacks import MetricsFile
from ..io import write_json
from ..tasks import Task


def gold_rows(task: Task, config: WarmupConfig) -> list[dict]:
    """Prompt / gold completion pairs for the warm-up, in the chat format TRL's SFTTrainer takes."""
    drawn = task.gold_examples(config.n_train, seed=config.seed, tiers=config.tiers)
    return [{"prompt": [{"role": "user", "content": e.prompt}],
             "completion": [{"role": "assistant", "content": e.solution}]} for e in drawn]


def run_warmup(model_spec: str, task: Task, config: WarmupConfig, out_dir: Path, log=print) -> Path:
    """Fine-tune ``model_spec`` on gold solutions; returns ``out_dir/final`` (reused when already there)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from ..integrations.sft import TokenFocusSFTTrainer
    from ..losses.otr import OTRConfig
    from ..models import load_model

    out_dir = Path(out_dir)
    final = out_dir / "final"
    if (final / "config.json").is_file():
        log(f"warm-up model found, reused: {final}")
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = gold_rows(task, config)
    write_json(out_dir / "warmup.json", {"model": model_spec, "task": task.spec(), "config": asdict(config),
                                         "examples": rows[:3]})
    model, tokenizer = load_model(model_spec)
    model.train()
    args = SFTConfig(
        output_dir=str(out_dir / "trainer"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
        seed=config.seed if config.seed is not None else task.options.seed, bf16=False,
        gradient_checkpointing=False, max_length=512, disable_tqdm=True,
    )
    extra = {} if config.otr is None else {"otr": OTRConfig(**config.otr)}  # One-Token Rollout instead of NLL
    trainer = (TokenFocusSFTTrainer if extra else SFTTrainer)(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[MetricsFile(out_dir / "metrics.jsonl")], **extra)
    trainer.remove_callback(PrinterCallback)
    started = time.time()
    log(f"warm-up: {'OTR' if extra else 'SFT'} of {model_spec} on {len(rows)} gold solutions, {config.epochs} epoch(s), "
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
