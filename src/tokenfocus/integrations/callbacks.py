"""transformers/TRL callbacks of a tokenfocus run: namespaced metrics lines, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from ..io import append_jsonl

_RENAMES = {"reward": "reward/mean", "reward_std": "reward/std", "loss": "loss/train", "learning_rate": "optim/lr",
            "grad_norm": "optim/grad_norm", "epoch": "progress/epoch", "num_tokens": "progress/num_tokens",
            "entropy": "signal/predictive_entropy_train/mean", "frac_reward_zero_std": "reward/frac_zero_std"}
_OURS = ("signal/", "policy/", "loss/", "diag/", "eval/", "time/", "reward/", "optim/", "progress/", "completion/",
         "otr/")


def namespaced(logs: dict) -> dict:
    """TRL's log keys under tokenfocus namespaces; ours pass through."""
    out = {}
    for key, value in logs.items():
        if key in _RENAMES:
            out[_RENAMES[key]] = value
        elif key.startswith(_OURS):
            out[key] = value
        elif key.startswith("rewards/"):
            out["reward/" + key.removeprefix("rewards/")] = value
        elif key.startswith("completions/"):
            out["completion/" + key.removeprefix("completions/")] = value
        else:
            out["trl/" + key] = value
    return out


class MetricsFile(TrainerCallback):
    """Appends each log as one namespaced JSON line; adds step time and reward-function counters."""

    def __init__(self, path: Path, reward_fn=None):
        self.path = path
        self.reward_fn = reward_fn
        self.last_time = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.step_seconds = now - self.last_time
        self.last_time = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "time": time.time(), **namespaced(logs)}
        if "train_runtime" in logs:  # the end-of-training summary, not a step record
            row["event"] = "train_end"
        if hasattr(self, "step_seconds"):
            row["time/step_s"] = self.step_seconds
        if self.reward_fn is not None:
            row.update(self.reward_fn.counters())
            if "reward/answer_reward/mean" in row:
                row["reward/accuracy"] = row["reward/answer_reward/mean"]
        append_jsonl(self.path, row)


class GracefulStop(TrainerCallback):
    """On SIGTERM: finish the current step, save a checkpoint, stop."""

    def __init__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self.previous)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
