"""The SFT warm-up settings of a study (``warmup:``; RL_TOKEN_CREDIT.md §0.4)."""

from __future__ import annotations

from dataclasses import dataclass

from ..losses.otr import OTRConfig


@dataclass(frozen=True)
class WarmupConfig:
    """One pass of SFT on gold short solutions before RL. ``seed``: the problems' seed (None: task seed + 1000,
    so they differ from the RL prompts); ``tiers``: arithmetic tiers (None: the task's)."""

    n_train: int = 512
    epochs: float = 1.0
    learning_rate: float = 1e-5
    batch_size: int = 16
    seed: int | None = None
    tiers: list | None = None
    otr: dict | None = None  # One-Token Rollout instead of plain SFT: OTRConfig fields ({k: 8, beta_neg: 0.1, ...})

    def problems(self) -> list[str]:
        problems = []
        if self.n_train < 1:
            problems.append(f"n_train must be >= 1, got {self.n_train}")
        if self.epochs <= 0:
            problems.append(f"epochs must be > 0, got {self.epochs}")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.otr is not None:
            problems += [f"otr: {p}" for p in otr_problems(self.otr)]
        return problems


def otr_problems(data: dict) -> list[str]:
    """Problems of an ``otr`` mapping (unknown keys with the valid ones, then OTRConfig's ranges)."""
    from dataclasses import fields

    valid = {f.name for f in fields(OTRConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        return [f"unknown key(s) {unknown}; valid: {sorted(valid)}"]
    return OTRConfig(**data).problems()
