"""`tokenfocus cdpo-weights`: cDPO's critical-token weights for DPO pairs (RL_TOKEN_CREDIT.md §8).

1. Sample ``samples`` responses per training prompt from the model (temperature 1) and score them with the task's
   reward: correct and incorrect trajectories.
2. LoRA-SFT a positive model on the correct and a negative model on the incorrect ones (TRL's SFTTrainer with a
   ``peft`` LoraConfig: r = 8 on the MLP projections, lr 3e-4, one epoch -- the reference code's settings).
3. Pairs (correct, incorrect) of the same prompt; each completion token weighted by contrastive estimation at its
   predicting position (``signals.critical``): rejected tokens 1 - p_ce, chosen tokens p_ce (1 with ``only_neg``).
   The completions are tokenized as TRL's DPOTrainer tokenizes them (chat template, prompt prefix cut), so the
   weights line up one per completion token; DPO's ``weights: {mode: column}`` reads them.
4. Checks, written to ``<out>.summary.json``: on incorrect responses whose first wrong digit is known (they depart
   from the gold worked solution at a digit), how often the highest-weight token is that digit, against the
   chance rate 1 / (response tokens) and against the sampling model's own 1 - p(y_t) (no contrast); and, on
   ``check_responses`` short responses, continuations sampled from just before and just after the highest-weight
   token (``continuations`` each): a critical token is one whose presence turns correct continuations into wrong
   ones. A prompt's responses are scored together in padded batches (``score_completions``), each once.
5. ``save_models``: the positive and negative models (adapters merged) as ``positive/`` and ``negative/`` beside
   the pairs file, for the ``critical_token`` signal (``tokenfocus analyze -s '{"name": "critical_token",
   "positive": ".../positive", "negative": ".../negative"}'``).
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from ..config.cdpo import CDPOWeightsConfig
from ..io import atomic_write_text, write_json
from ..options import parse_section
from ..signals.critical import contrastive_token_probs, first_wrong_digit
from ..tasks import RewardConfig, Task, parse_task


def parse_cdpo_config(data: dict, base: Path | None = None) -> tuple[CDPOWeightsConfig, Task, Path]:
    """(settings, task, output pairs file) from ``{task: {...}, out: pairs.jsonl, <CDPOWeightsConfig fields>}``."""
    from ..config.schema import ConfigError

    problems: list[str] = []
    data = dict(data)
    task_spec, out = data.pop("task", None), data.pop("out", None)
    task = parse_task(task_spec, problems, base=base) if isinstance(task_spec, dict) else None
    if task_spec is None or not isinstance(task_spec, dict):
        problems.append("task: give the task whose training prompts are sampled, e.g. {name: arithmetic}")
    if not isinstance(out, str) or not out.strip():
        problems.append("out: give the pairs file to write, e.g. runs/cdpo/pairs.jsonl")
    settings = parse_section(CDPOWeightsConfig, data, "cdpo", problems)
    if problems:
        raise ConfigError("invalid cdpo-weights config:\n  - " + "\n  - ".join(problems))
    path = Path(out).expanduser()
    return settings, task, path if path.is_absolute() or base is None else base / path


def completion_ids(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) as TRL's DPOTrainer tokenizes a conversational row: the completion starts where
    the tokenized prompt (with the generation prompt) and prompt + completion diverge."""
    def ids(messages, **kwargs):
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])

    prompt_ids, full = ids(prompt, add_generation_prompt=True), ids(prompt + completion)
    cut = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
    return full[:cut], full[cut:]


def lora_sft(model, tokenizer, rows: list[dict], settings: CDPOWeightsConfig, out_dir: Path):
    """A LoRA-fine-tuned copy of ``model`` (adapters on the MLP projections) after ``lora_epochs`` on ``rows``."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["gate_proj", "up_proj", "down_proj"])
    args = SFTConfig(output_dir=str(out_dir), num_train_epochs=settings.lora_epochs, per_device_train_batch_size=8,
                     learning_rate=settings.lora_lr, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                     report_to="none", seed=settings.seed, bf16=False, use_cpu=not torch.cuda.is_available(),
                     gradient_checkpointing=False, max_length=256, disable_tqdm=True)
    trainer = SFTTrainer(model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    tuned = trainer.model.eval()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return tuned, {"rows": len(rows), "steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
                   "last_loss": losses[-1] if losses else None}


def score_completions(positive, negative, tokenizer, prompt: list[dict], completions: list[str], beta: float,
                      batch_size: int = 16) -> list[tuple[list[int], list[float]]]:
    """(completion ids, p_ce per completion token) for each completion of one prompt, scored in right-padded batches:
    the causal models never see the padding after a row's tokens, and positions count from 0 in every row, so each
    row's numbers are those it gets when scored alone."""
    parts = [completion_ids(tokenizer, prompt, [{"role": "assistant", "content": text}]) for text in completions]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = []
    for start in range(0, len(parts), batch_size):
        chunk = parts[start:start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.tensor([p + c + [pad] * (width - len(p) - len(c)) for p, c in chunk])
        mask = torch.tensor([[1] * (len(p) + len(c)) + [0] * (width - len(p) - len(c)) for p, c in chunk])
        probs = contrastive_token_probs(positive, negative, ids, mask, beta=beta)
        scored += [(c, probs[row, len(p):len(p) + len(c)].tolist()) for row, (p, c) in enumerate(chunk)]
    return scored


def _continuation_check(model, tokenizer, prompt: str, response_ids: list[int], position: int, gold: str, reward,
                        n: int, max_new_tokens: int, seed: int) -> dict:
    """Correct rate of ``n`` continuations sampled from just before ``response_ids[position]`` and from just after."""
    from ..rollout import format_prompts

    text = format_prompts(tokenizer, [prompt])[0]
    base = tokenizer(text, add_special_tokens=False).input_ids
    rates = {}
    for name, cut in (("before", position), ("after", position + 1)):
        ids = torch.tensor([base + response_ids[:cut]] * n)
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        texts = [tokenizer.decode(row[len(base):], skip_special_tokens=True) for row in out]
        rates[name] = sum(reward(texts, [gold] * n)) / n
    return rates


def run_cdpo_weights(settings: CDPOWeightsConfig, task: Task, out: Path, log=print) -> dict:
    """Write the weighted pairs to ``out`` (JSONL) and the checks to ``out.summary.json``; returns the summary."""
    from ..models import load_model
    from ..rollout import generate_rollout

    if out.exists():
        raise ValueError(f"{out} exists; choose another out path or remove it (nothing is overwritten)")
    model, tokenizer = load_model(settings.model)
    model.eval()
    reward = task.reward(RewardConfig())
    examples = task.train_examples(settings.n_prompts)
    log(f"sampling {settings.samples} responses for each of {len(examples)} prompts")
    rollout = generate_rollout(model, tokenizer, [e.prompt for e in examples for _ in range(settings.samples)],
                               max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                               seed=settings.seed, batch_size=32)
    texts = [tokenizer.decode(tokenizer(t, add_special_tokens=False).input_ids, skip_special_tokens=True)
             for t in rollout.completions]
    golds = [e.answer for e in examples for _ in range(settings.samples)]
    scores = reward(texts, golds)
    groups = [[(texts[i * settings.samples + j], scores[i * settings.samples + j]) for j in range(settings.samples)]
              for i in range(len(examples))]
    correct = [(e, t) for e, g in zip(examples, groups) for t, s in g if s >= 1.0]
    wrong = [(e, t) for e, g in zip(examples, groups) for t, s in g if s < 1.0]
    if not correct or not wrong:
        raise ValueError(f"{len(correct)} correct and {len(wrong)} incorrect responses: contrastive estimation needs "
                         "both; choose tiers where the model is sometimes right (20-70 %)")

    def chat(e, text):
        return {"prompt": [{"role": "user", "content": e.prompt}], "completion": [{"role": "assistant",
                                                                                    "content": text}]}

    scratch = out.parent / f".{out.name}.lora"
    log(f"LoRA SFT: positive model on {len(correct)} correct, negative on {len(wrong)} incorrect responses")
    positive, pos_log = lora_sft(model, tokenizer, [chat(e, t) for e, t in correct], settings, scratch / "pos")
    negative, neg_log = lora_sft(model, tokenizer, [chat(e, t) for e, t in wrong], settings, scratch / "neg")
    rng = random.Random(settings.seed)
    rows, hits, top3, chance, labelled, checks = [], 0, 0, 0.0, 0, []
    plain_hits = 0  # the same check with the sampling model's own 1 - p(y_t): is the contrast needed?
    for example, group in zip(examples, groups):
        good = [t for t, s in group if s >= 1.0]
        bad = [t for t, s in group if s < 1.0]
        rng.shuffle(good)
        rng.shuffle(bad)
        prompt = [{"role": "user", "content": example.prompt}]
        pairs = list(zip(good, bad))[:settings.pairs_per_prompt]
        scored_good = score_completions(positive, negative, tokenizer, prompt, [c for c, _ in pairs],
                                        settings.beta_ce)
        # every incorrect response once: the pairs' rejected ones are the first, the check reads them all
        scored_bad = score_completions(positive, negative, tokenizer, prompt, bad, settings.beta_ce)
        for (chosen, rejected), (c_ids, p_chosen), (_, p_rejected) in zip(pairs, scored_good, scored_bad):
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}],
                         "chosen_weights": [1.0] * len(c_ids) if settings.only_neg else p_chosen,
                         "rejected_weights": [1.0 - p for p in p_rejected]})
        # the first-wrong-digit check, over every incorrect response of the prompt that departs at a digit
        labelled_bad = [(i, char) for i, text in enumerate(bad)
                        if (char := first_wrong_digit(text, example.solution or "")) is not None]
        plain = score_completions(model, model, tokenizer, prompt, [bad[i] for i, _ in labelled_bad], 0.0)
        for (i, char), (_, p_plain) in zip(labelled_bad, plain):
            rejected, (r_ids, p_rejected) = bad[i], scored_bad[i]
            ends, length = [], 0
            for token in r_ids:
                length += len(tokenizer.decode([token]))
                ends.append(length)
            target = next((k for k, end in enumerate(ends) if end > char), None)
            if target is None:
                continue
            weights = [1.0 - p for p in p_rejected]
            order = sorted(range(len(weights)), key=lambda k: -weights[k])
            plain_hits += max(range(len(p_plain)), key=lambda k: 1.0 - p_plain[k]) == target
            labelled += 1
            hits += order[0] == target
            top3 += target in order[:3]
            chance += 1.0 / len(weights)
            if len(checks) < settings.check_responses and settings.continuations:
                rates = _continuation_check(model, tokenizer, example.prompt, r_ids, order[0], example.answer, reward,
                                            settings.continuations, settings.max_new_tokens, settings.seed)
                checks.append({"response": rejected, "token": tokenizer.decode([r_ids[order[0]]]),
                               "is_first_wrong_digit": order[0] == target, **rates})
    if not rows:
        raise ValueError("no prompt had both a correct and an incorrect response; raise samples or change tiers")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "settings": asdict(settings), "task": task.spec(), "pairs": len(rows), "responses": len(texts),
        "correct": len(correct), "incorrect": len(wrong), "lora": {"positive": pos_log, "negative": neg_log},
        "first_wrong_digit": {"labelled": labelled, "top1_hit_rate": hits / labelled if labelled else None,
                              "top3_hit_rate": top3 / labelled if labelled else None,
                              "chance_top1": chance / labelled if labelled else None,
                              "model_own_top1_hit_rate": plain_hits / labelled if labelled else None},
        "continuations": {"responses": checks,
                          "mean_before": sum(c["before"] for c in checks) / len(checks) if checks else None,
                          "mean_after": sum(c["after"] for c in checks) / len(checks) if checks else None},
    }
    write_json(out.with_name(out.name + ".summary.json"), summary)
    if settings.save_models:
        for name, tuned in (("positive", positive), ("negative", negative)):
            merged = tuned.merge_and_unload()
            merged.save_pretrained(str(out.parent / name))
            tokenizer.save_pretrained(str(out.parent / name))
    shutil.rmtree(scratch, ignore_errors=True)
    return summary
