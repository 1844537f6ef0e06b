"""`tokenfocus dpo`: token-weighted DPO in a run directory with the contract of `tokenfocus train` (config.yaml,
manifest, metrics.jsonl, checkpoints published whole, --resume, SIGTERM saves and stops, final/ always whole)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from transformers import PrinterCallback

from ..config.dpo import DPORunConfig
from ..integrations.callbacks import GracefulStop, MetricsFile
from ..io import append_jsonl, atomic_write_text, holds_run_dir, write_json
from ..tasks.preference import PairRow, length_problems, summarize
from .train import open_run_dir, train_and_publish


@holds_run_dir
def run_dpo(config: DPORunConfig, resume: bool = False, log=print, overwrite: bool = False,
            allow_config_change: bool = False):
    """Train; returns (run directory, trainer or None when the run was already complete)."""
    from datasets import Dataset
    from trl import DPOConfig

    from ..integrations.dpo import TokenFocusDPOTrainer
    from ..models import load_model

    run_dir = config.run_dir
    main_process = int(os.environ.get("RANK", "0")) == 0
    args = DPOConfig(**config.trl_args())
    model, tokenizer = load_model(config.model)
    reference = load_model(config.reference)[0] if config.reference else copy.deepcopy(model)
    reference.eval()
    if config.sampling is not None:
        config = replace(config, rows=sampled_pairs(config, reference, tokenizer, log), lines=[])
        config = replace(config, lines=[0] * len(config.rows))
    # Rows longer than max_length would lose their completion to TRL's truncation: refused, all listed, before the
    # run directory is touched.
    too_long = length_problems([PairRow(line, row) for line, row in zip(config.lines, config.rows)], tokenizer,
                               args.max_length, where=config.pairs_source)
    if too_long:
        raise ValueError(f"{len(too_long)} pair(s) longer than max_length:" + summarize(too_long))
    chosen, complete = open_run_dir(config, resume, overwrite, allow_config_change, main_process, log)
    if complete:
        return run_dir, None
    model.train()
    stop = GracefulStop()
    trainer = TokenFocusDPOTrainer(
        model=model, ref_model=reference, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(config.rows), weighting=config.weighting,
        callbacks=[MetricsFile(run_dir / "metrics.jsonl"), stop],
    )
    trainer.remove_callback(PrinterCallback)
    if chosen is not None and main_process:
        append_jsonl(run_dir / "metrics.jsonl", {"event": "resume", "from": chosen.name, "time": time.time()})
    log(f"DPO on {len(config.rows)} pairs ({config.pairs_source}), weights {config.weighting.mode}"
        f"{f', barrier {config.weighting.barrier}' if config.weighting.barrier else ''}, {args.max_steps} steps "
        f"-> {run_dir}")
    train_and_publish(trainer, tokenizer, chosen, stop, run_dir, main_process, log)
    return run_dir, trainer


def pairs_cache(config: DPORunConfig) -> Path:
    """Where sampled pairs are kept: beside the run directory, named by what they depend on (the reference model
    and the sampling spec), so every arm and seed of a study trains on the same pairs, sampled once."""
    key = json.dumps({"reference": config.reference or config.model, **config.sampling}, sort_keys=True)
    return config.run_dir.parent / f"pairs-on-policy-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsonl"


def sampled_pairs(config: DPORunConfig, reference, tokenizer, log=print) -> list[dict]:
    """On-policy pairs (``tasks.json_answers.on_policy_pairs``) from the reference's own responses, in chat format;
    read from ``pairs_cache`` when there, else sampled and written there (with their counts beside)."""
    from ..config.dpo import chat_rows
    from ..rollout import generate_rollout
    from ..tasks import RewardConfig, build_task
    from ..tasks.json_answers import on_policy_pairs

    cache = pairs_cache(config)
    if cache.is_file():
        rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
        log(f"{len(rows)} on-policy pairs reused: {cache}")
        return rows
    spec = config.sampling
    if "cdpo" in spec:  # cDPO: LoRA positive/negative models of the reference weight the tokens of its own pairs
        from ..config.cdpo import CDPOWeightsConfig
        from .cdpo import run_cdpo_weights

        settings = CDPOWeightsConfig(**spec["cdpo"], model=config.reference or config.model, save_models=False)
        log(f"cDPO pairs from the reference -> {cache}")
        summary = run_cdpo_weights(settings, build_task(spec["task"]), cache, log=log)  # + <cache>.summary.json
        log(f"{summary['pairs']} cDPO pairs ({summary['correct']} correct, {summary['incorrect']} incorrect responses)")
        return [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    task = build_task(spec["task"])
    examples = task.gold_examples(spec["n"], seed=spec["seed"])
    log(f"sampling {spec['samples']} responses for each of {len(examples)} prompts from the reference -> {cache}")
    rollout = generate_rollout(reference, tokenizer, [e.prompt for e in examples for _ in range(spec["samples"])],
                               max_new_tokens=spec["max_new_tokens"], temperature=spec["temperature"],
                               seed=spec["seed"], batch_size=32)
    texts = [tokenizer.decode(tokenizer(t, add_special_tokens=False).input_ids, skip_special_tokens=True).strip()
             for t in rollout.completions]
    scores = task.reward(RewardConfig())(texts, [e.answer for e in examples for _ in range(spec["samples"])])
    k = spec["samples"]
    groups = [list(zip(texts[i * k:(i + 1) * k], scores[i * k:(i + 1) * k])) for i in range(len(examples))]
    rows, counts = on_policy_pairs(examples, groups, seed=spec["seed"], max_digits=spec["max_digits"])
    if not rows:
        raise ValueError(f"no prompt of {len(examples)} had a correct response from the reference (pass rate "
                         f"{sum(scores) / len(scores):.3f}); warm the model up on the task first, or use gold pairs")
    rows = chat_rows(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, "".join(json.dumps(r) + "\n" for r in rows))
    write_json(cache.with_name(cache.name + ".json"), {"sampling": spec, "reference": config.reference or config.model,
                                                       "pass_rate": sum(scores) / len(scores), **counts})
    log(f"{len(rows)} pairs: {counts}")
    return rows
