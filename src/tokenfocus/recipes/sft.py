"""`tokenfocus sft`: SFT or One-Token Rollout on TRL's SFTTrainer, in a run directory with the contract of
`tokenfocus train` (config.yaml, manifest, metrics.jsonl, whole checkpoints, --resume, SIGTERM, final/)."""

from __future__ import annotations

import os
import time

from transformers import PrinterCallback

from ..config.sft import SFTRunConfig
from ..integrations.callbacks import GracefulStop, MetricsFile
from ..io import append_jsonl, holds_run_dir
from .train import open_run_dir, train_and_publish


@holds_run_dir
def run_sft(config: SFTRunConfig, resume: bool = False, log=print, overwrite: bool = False,
            allow_config_change: bool = False):
    """Train; returns (run directory, trainer or None when the run was already complete)."""
    from datasets import Dataset
    from trl import SFTConfig

    from ..integrations.sft import TokenFocusSFTTrainer
    from ..models import load_model

    run_dir = config.run_dir
    main_process = int(os.environ.get("RANK", "0")) == 0
    chosen, complete = open_run_dir(config, resume, overwrite, allow_config_change, main_process, log)
    if complete:
        return run_dir, None
    model, tokenizer = load_model(config.model)
    model.train()
    stop = GracefulStop()
    trainer = TokenFocusSFTTrainer(
        model=model, args=SFTConfig(**config.trl_args()), processing_class=tokenizer,
        train_dataset=Dataset.from_list(config.rows), otr=config.otr,
        callbacks=[MetricsFile(run_dir / "metrics.jsonl"), stop],
    )
    trainer.remove_callback(PrinterCallback)
    if chosen is not None and main_process:
        append_jsonl(run_dir / "metrics.jsonl", {"event": "resume", "from": chosen.name, "time": time.time()})
    what = f"OTR (K={config.otr.k}, beta_neg={config.otr.beta_neg})" if config.otr else "SFT"
    log(f"{what} on {len(config.rows)} rows ({config.data_source}), {trainer.args.max_steps} steps -> {run_dir}")
    train_and_publish(trainer, tokenizer, chosen, stop, run_dir, main_process, log)
    return run_dir, trainer
