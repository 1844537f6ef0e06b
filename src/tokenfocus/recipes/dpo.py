"""`tokenfocus dpo`: token-weighted DPO in a run directory with the contract of `tokenfocus train` (config.yaml,
manifest, metrics.jsonl, checkpoints published whole, --resume, SIGTERM saves and stops, final/ always whole)."""

from __future__ import annotations

import copy
import os
import time

from transformers import PrinterCallback

from ..config.dpo import DPORunConfig
from ..integrations.callbacks import GracefulStop, MetricsFile
from ..io import append_jsonl
from ..tasks.preference import PairRow, length_problems, summarize
from .train import open_run_dir, train_and_publish


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
    # Rows longer than max_length would lose their completion to TRL's truncation: refused, all listed, before the
    # run directory is touched.
    too_long = length_problems([PairRow(line, row) for line, row in zip(config.lines, config.rows)], tokenizer,
                               args.max_length, where=config.pairs_source)
    if too_long:
        raise ValueError(f"{len(too_long)} pair(s) longer than max_length:" + summarize(too_long))
    chosen, complete = open_run_dir(config, resume, overwrite, allow_config_change, main_process, log)
    if complete:
        return run_dir, None
    reference = load_model(config.reference)[0] if config.reference else copy.deepcopy(model)
    reference.eval()
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
