"""The warm-up section of a study config (config/warmup.py): range problems listed together."""

from __future__ import annotations

from tokenfocus.config import WarmupConfig
from tokenfocus.options import parse_section


def test_warmup_config_lists_its_range_problems():
    problems: list[str] = []
    assert parse_section(WarmupConfig, {"n_train": 0, "learning_rate": 2.0}, "warmup", problems) is None
    assert problems == ["warmup.n_train must be >= 1, got 0", "warmup.learning_rate must be in (0, 1), got 2.0"]
    assert WarmupConfig().problems() == []
