"""Typed settings of the trainer's gradient diagnostics (RL_TOKEN_CREDIT.md §1.7-1.8); defaults defined here only."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Gradient geometry + entropy dynamics every ``every`` optimizer steps from step ``start``.

    Subsets are the ``ratio`` bottom / top tokens by attention entropy of ``layers``; gradients are
    count-sketched to ``project_dim`` coordinates (None: exact); ``bootstrap`` resamples of prompt groups.
    A scheduled diagnosis waits for a generation batch with at least ``min_groups`` prompt groups whose
    rewards differ (the others have no gradient; split-half volatility needs two).
    """

    every: int = 10
    start: int = 0
    ratio: float = 0.2
    layers: str | int | list = "middle"
    project_dim: int | None = 4096
    bootstrap: int = 8
    exclude_embeddings: bool = True
    seed: int = 0
    min_groups: int = 2

    def problems(self) -> list[str]:
        found = []
        if self.every < 1:
            found.append(f"every must be >= 1, got {self.every}")
        if self.start < 0:
            found.append(f"start must be >= 0, got {self.start}")
        if not 0 < self.ratio < 0.5:
            found.append(f"ratio must be in (0, 0.5), got {self.ratio}")
        if self.project_dim is not None and self.project_dim < 1:
            found.append(f"project_dim must be >= 1 or null (exact), got {self.project_dim}")
        if self.bootstrap < 0 or self.min_groups < 1:
            found.append("bootstrap must be >= 0 and min_groups >= 1")
        return found

    def due(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % self.every == 0

    def to_dict(self) -> dict:
        return asdict(self)
