"""SFT warm-up on gold short solutions, so that RL starts where rewards vary within groups.

RL_TOKEN_CREDIT.md §0.4 ("difficulty targeting"): when the initial pass rate is below ~20 %, most GRPO
groups have all-equal rewards and carry no signal; first run one epoch of SFT on gold short solutions
(lr 1e-5). This is that step, on TRL's ``SFTTrainer`` with a conversational prompt-completion dataset
(loss on the completion only, the same chat template the RL rollouts use):

    arithmetic:  "Compute 47+38. Answer in the form "Answer: N"."  ->  "47+38 = 85\\nAnswer: 85"
    gsm8k:       question + instruction                            ->  worked solution + "\\nAnswer: N"

The warm-up problems are drawn from the train split with their own seed (``seed``, default task seed +
1000), so they differ from the RL prompts. The result is a normal model directory (``OUT/final``), written
only when training finished. On the way the warm-up writes whole checkpoints (``OUT/trainer/checkpoint-N``, eight
per warm-up, published atomically): a warm-up stopped or killed (a study teacher's three epochs take hours on a CPU)
resumes from the last complete one when it runs again. Two processes that need the same warm-up at once (two
study slices started together) do not both train it: the second waits for the first and reuses its model.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from ..config import WarmupConfig
from ..integrations.callbacks import MetricsFile
from ..io import hold, write_json
from ..tasks import Task

LOCK_FILE = ".lock"


def gold_rows(task: Task, config: WarmupConfig) -> list[dict]:
    """Prompt / gold completion pairs for the warm-up, in the chat format TRL's SFTTrainer takes."""
    drawn = task.gold_examples(config.n_train, seed=config.seed, tiers=config.tiers)
    return [{"prompt": [{"role": "user", "content": e.prompt}],
             "completion": [{"role": "assistant", "content": e.solution}]} for e in drawn]


def run_warmup(model_spec: str, task: Task, config: WarmupConfig, out_dir: Path, log=print) -> Path:
    """Fine-tune ``model_spec`` on gold solutions; returns ``out_dir/final`` (reused when already there, or made by
    another process this one waited for)."""
    out_dir = Path(out_dir)
    final = out_dir / "final"
    if (final / "config.json").is_file():
        log(f"warm-up model found, reused: {final}")
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    with _only_maker(out_dir, log):
        if (final / "config.json").is_file():  # made by the process this one waited for
            log(f"warm-up model found, reused: {final}")
            return final
        return _train_warmup(model_spec, task, config, out_dir, log)


def _only_maker(out_dir: Path, log):
    """Hold ``out_dir``/.lock while making the warm-up: two study slices started together (one per core) would
    otherwise both train into one directory. The second waits for the first and then reuses its model; the lock
    goes with its holder's process (flock), so a killed maker never blocks the next one."""

    def waiting(pid: str, _command: str) -> None:
        log(f"another process (pid {pid}) is making the warm-up in {out_dir}; waiting for it")

    return hold(out_dir / LOCK_FILE, wait=True, on_wait=waiting)


def _train_warmup(model_spec: str, task: Task, config: WarmupConfig, out_dir: Path, log) -> Path:
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig

    from ..checkpoints import latest_complete_checkpoint, set_aside
    from ..integrations.sft import TokenFocusSFTTrainer
    from ..losses.otr import OTRConfig
    from ..models import load_model

    final = out_dir / "final"
    rows = gold_rows(task, config)
    write_json(out_dir / "warmup.json", {"model": model_spec, "task": task.spec(), "config": asdict(config),
                                         "examples": rows[:3]})
    model, tokenizer = load_model(model_spec)
    model.train()
    steps = -(-len(rows) // config.batch_size) * config.epochs
    args = SFTConfig(
        output_dir=str(out_dir / "trainer"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        lr_scheduler_type="constant", logging_steps=1, save_strategy="steps", save_steps=max(1, -(-steps // 8)),
        save_total_limit=2, report_to="none",
        seed=config.seed if config.seed is not None else task.options.seed, bf16=False,
        gradient_checkpointing=False, max_length=512, disable_tqdm=True,
    )
    # One-Token Rollout instead of NLL when configured; without it the trainer is TRL's SFTTrainer with atomic
    # checkpoints.
    otr = None if config.otr is None else OTRConfig(**config.otr)
    trainer = TokenFocusSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=[MetricsFile(out_dir / "metrics.jsonl")], otr=otr)
    trainer.remove_callback(PrinterCallback)
    started = time.time()
    checkpoint, skipped = latest_complete_checkpoint(out_dir / "trainer")
    for broken, problems in skipped:  # cut short inside a save: kept aside for inspection
        log(f"warm-up checkpoint {broken.name} is incomplete ({'; '.join(problems)}); moved to {set_aside(broken)}")
    log(f"warm-up: {'OTR' if otr else 'SFT'} of {model_spec} on {len(rows)} gold solutions, {config.epochs} epoch(s), "
        f"lr {config.learning_rate} -> {final}" + (f", resuming from {checkpoint.name}" if checkpoint else ""))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    tmp = out_dir / f".final.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(final)
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    log(f"warm-up done in {time.time() - started:.0f} s")
    return final
