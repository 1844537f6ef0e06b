"""The sink decorrelation fine-tune (arXiv 2510.22603, C2): does the term remove intermediate sinks, at what cost?

Two short SFT runs from the same model on the same gold solutions (the package's generated tasks, chat format,
loss on the completion): lambda = 0 (plain TRL SFT) and lambda > 0 (``TokenFocusSFTTrainer`` with the term on the
prompt positions). Before and after, on held-out prompts: the sink probe (intermediate sink hits, the mean sink
score of the non-first tokens, the mean cos^2 to the first token over layers 0..L-2, massive-activation ratios) and
the task loss (mean next-token loss over the held-out gold completions).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..probes.function_tokens import token_losses
from ..tasks import build_task
from .probe import sink_summary

Log = Callable[[str], None]


def gold_chat_rows(n: int, seed: int) -> list[dict]:
    """Prompt / completion rows (TRL conversational) from the generated tasks, in equal parts."""
    rows = []
    for name in ("arithmetic", "facts", "steps"):
        task = build_task({"name": name, "seed": seed})
        for e in task.gold_examples(-(-n // 3), seed=seed):
            rows.append({"prompt": [{"role": "user", "content": e.prompt}],
                         "completion": [{"role": "assistant", "content": e.solution}]})
    return rows[:n]


def completion_loss(model, tokenizer, rows: Sequence[dict]) -> float:
    """Mean next-token loss (nats) over the gold completion tokens of ``rows``, prompt in the chat template."""
    total, count = 0.0, 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False)
        ids = torch.tensor([full])
        losses = token_losses(model, ids, torch.ones_like(ids, dtype=torch.bool))[0, len(prompt):]
        total += float(losses.sum())
        count += len(losses)
    return total / max(count, 1)


def cos2_to_first(model, tokenizer, prompts: Sequence[str]) -> float:
    """Mean over prompts, positions > 0 and layer outputs 0..L-2 of cos^2(h_i, h_first): the term's value."""
    from ..capture import capture, layer_output_points
    from ..losses import sink_decorrelation

    points = layer_output_points(model, last=False)
    values = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                                add_generation_prompt=True, return_dict=False)
            ids = torch.tensor([ids])
            with capture(model, points) as cap:
                model.get_decoder()(input_ids=ids, use_cache=False)
            term = sink_decorrelation([torch.cat(cap[n]) for n in points], torch.ones_like(ids, dtype=torch.bool),
                                      torch.zeros(1, dtype=torch.long))
            values.append(term.metrics["loss/sink_decorrelation"])
    return float(np.mean(values))


def measure(model, tokenizer, prompts: Sequence[str], rows: Sequence[dict], **sink_options) -> dict:
    summary = sink_summary(model, tokenizer, prompts, chat=True, **sink_options)
    return {"intermediate_hits": summary["intermediate"]["count"],
            "nonfirst_score": float(np.mean(summary["nonfirst_score"])),
            "first_token_score": float(np.mean(summary["first_token_score"])),
            "massive_ratio_max": float(np.max(summary["massive"]["ratio_max"])),
            "cos2_first": cos2_to_first(model, tokenizer, prompts),
            "task_loss": completion_loss(model, tokenizer, rows),
            "by_token": summary["intermediate"]["by_token"][:8]}


def run_decorrelation(model_spec: str, *, out: Path, steps: int, lam: float, learning_rate: float = 1e-5,
                      batch_size: int = 8, n_eval: int = 24, seed: int = 0, log: Log = print,
                      **sink_options) -> dict:
    """lambda = 0 and lambda = ``lam`` fine-tunes of ``model_spec`` for ``steps`` steps; before / after numbers."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig

    from ..integrations.sft import TokenFocusSFTTrainer
    from ..models import load_model

    train = gold_chat_rows(steps * batch_size, seed)
    held = gold_chat_rows(n_eval, seed + 7919)
    prompts = [row["prompt"][0]["content"] for row in held]
    model, tokenizer = load_model(model_spec)
    result = {"model": model_spec, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
              "lambda": lam, "n_eval": n_eval, "before": measure(model, tokenizer, prompts, held, **sink_options)}
    for name, coefficient in (("lambda_0", 0.0), ("lambda", lam)):
        model, tokenizer = load_model(model_spec)
        model.train()
        work = Path(out) / f".finetune-{name}"
        args = SFTConfig(output_dir=str(work), max_steps=steps, per_device_train_batch_size=batch_size,
                         learning_rate=learning_rate, lr_scheduler_type="constant", logging_steps=1,
                         save_strategy="no", report_to="none", seed=seed, bf16=False, use_cpu=True,
                         gradient_checkpointing=False, max_length=512, disable_tqdm=True)
        trainer = TokenFocusSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                                       processing_class=tokenizer, sink_decorrelation=coefficient)
        trainer.remove_callback(PrinterCallback)
        started = time.time()
        trainer.train()
        log(f"decorrelation fine-tune {name} (lambda {coefficient:g}): {steps} steps in {time.time() - started:.0f} s")
        model.eval()
        history = [r for r in trainer.state.log_history if "loss" in r]
        result[name] = {"lambda": coefficient, "seconds": time.time() - started,
                        "train_loss": [round(r["loss"], 4) for r in history],
                        "term": [round(r["sink_decorrelation"], 5) for r in history if "sink_decorrelation" in r],
                        "after": measure(model, tokenizer, prompts, held, **sink_options)}
        shutil.rmtree(work, ignore_errors=True)
    return result
