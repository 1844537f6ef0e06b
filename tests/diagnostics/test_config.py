"""DiagnosticsConfig (diagnostics/config.py): min_groups defaults to 8 and is clamped, with a warning, to the prompt
groups a batch holds, so a run with smaller batches is diagnosed instead of waiting forever; the trainer's
scheduler (``TokenFocusGRPOTrainer._maybe_diagnose``) uses the clamp."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from tokenfocus.diagnostics import DiagnosticsConfig


def test_min_groups_defaults_to_8_and_clamps_to_the_batch_with_a_warning():
    config = DiagnosticsConfig()
    assert config.min_groups == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the batch holds enough groups
        assert config.groups_required(12) == 8 and config.groups_required(8) == 8
    with pytest.warns(UserWarning, match="holds 3 prompt group"):
        assert config.groups_required(3) == 3
    assert DiagnosticsConfig(bins=0).problems() == ["bins must be >= 1, got 0"]


def scheduler(config, logged, diagnosed):
    """The state ``_maybe_diagnose`` reads, without a model or TRL."""
    return SimpleNamespace(
        tf_diagnostics=config, state=SimpleNamespace(global_step=0), model=SimpleNamespace(training=True),
        tf_last_diag_step=-1, tf_diag_pending=False, accelerator=SimpleNamespace(is_main_process=True),
        _diagnose=lambda out: diagnosed.append(out) or {}, _log=logged.append)


def test_a_batch_with_fewer_groups_than_min_groups_is_diagnosed_with_a_logged_note():
    from tokenfocus.integrations.trl import TokenFocusGRPOTrainer

    logged, diagnosed = [], []
    trainer = scheduler(DiagnosticsConfig(), logged, diagnosed)  # min_groups 8; the batch holds 2 groups
    one_informative = {"advantages": torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
                       "tf_group": torch.arange(8) // 4}
    with pytest.warns(UserWarning, match="min_groups=8"):
        TokenFocusGRPOTrainer._maybe_diagnose(trainer, one_informative)
    assert not diagnosed and trainer.tf_diag_pending  # 1 informative group of 2: waits
    both = {**one_informative, "advantages": torch.tensor([1.0, -1.0, 0.0, 0.0, 0.5, -0.5, 0.0, 0.0])}
    with pytest.warns(UserWarning):
        TokenFocusGRPOTrainer._maybe_diagnose(trainer, both)
    assert len(diagnosed) == 1 and not trainer.tf_diag_pending
    assert logged[0]["diag/min_groups"] == 2.0 and "time/diagnostics_s" in logged[0]
    # A batch with enough groups needs the full min_groups.
    logged, diagnosed = [], []
    trainer = scheduler(DiagnosticsConfig(min_groups=3), logged, diagnosed)
    five = {"advantages": torch.tensor([1.0, -1.0] * 2 + [0.0, 0.0] * 3), "tf_group": torch.arange(10) // 2}
    TokenFocusGRPOTrainer._maybe_diagnose(trainer, five)
    assert not diagnosed
    TokenFocusGRPOTrainer._maybe_diagnose(trainer, {**five, "advantages": torch.tensor([1.0, -1.0] * 3 + [0.0] * 4)})
    assert len(diagnosed) == 1 and logged[0]["diag/min_groups"] == 3.0
