"""A mixin for transformers ``Trainer`` subclasses whose checkpoints are written aside and published whole
(``tokenfocus.checkpoints``). Every tokenfocus trainer puts it first in its bases."""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import STAGING, clear_staging, fault_point, publish, rotate, write_manifest

CHECKPOINT_PREFIX = "checkpoint-"


class AtomicCheckpoints:
    """``_save_checkpoint`` writes into ``run_dir/.staging/checkpoint-N``, adds the manifest, renames it to
    ``run_dir/checkpoint-N`` and rotates, keeping at least two (``save_total_limit`` when larger)."""

    _tf_staging: Path | None = None

    def _get_output_dir(self, trial) -> str:
        if self._tf_staging is not None:  # inside a save: the trainer's files go to the staging folder
            return str(self._tf_staging)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if self.args.should_save:
            clear_staging(run_dir)
        self.accelerator.wait_for_everyone()
        self._tf_staging = run_dir / STAGING
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._tf_staging = None
        self.accelerator.wait_for_everyone()  # every rank has written its part
        if self.args.should_save:
            fault_point("checkpoint:manifest")
            write_manifest(run_dir / STAGING / name)
            publish(run_dir / STAGING / name, run_dir / name)
            fault_point("checkpoint:rotate")
            rotate(run_dir, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _save_optimizer_and_scheduler(self, output_dir) -> None:
        fault_point("checkpoint:optimizer")  # the model is written, the optimizer not yet
        super()._save_optimizer_and_scheduler(output_dir)
