"""Typed settings of the trainer's gradient diagnostics (RL_TOKEN_CREDIT.md §1.7-1.8); defaults defined here only."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Gradient geometry + entropy dynamics every ``every`` optimizer steps from step ``start``.

    Subsets are the ``ratio`` bottom / top tokens by attention entropy of ``layers``; gradients are
    count-sketched to ``project_dim`` coordinates (None: exact); ``bootstrap`` resamples of prompt groups.
    A scheduled diagnosis waits for a generation batch with at least ``min_groups`` prompt groups whose
    rewards differ (the others have no gradient; split-half volatility needs two), clamped to the groups a
    batch holds (``groups_required``), so a small batch is diagnosed rather than never.
    ``matched``: also diagnose position- and predictive-entropy-matched random controls of anchors and
    explorers (C1, C5; ``bins`` bins each). ``token_proxy``: log the mean per-token logit-space gradient norm
    (one extra no-grad forward per diagnosed group). ``unshared``: also diagnose every subset without the
    tokens of prefixes shared by a whole group (``<subset>_unshared``; doubles the backwards).
    """

    every: int = 10
    start: int = 0
    ratio: float = 0.2
    layers: str | int | list = "middle"
    project_dim: int | None = 4096
    bootstrap: int = 8
    exclude_embeddings: bool = True
    seed: int = 0
    min_groups: int = 8
    matched: bool = True
    bins: int = 10
    token_proxy: bool = True
    unshared: bool = False

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
        if self.bins < 1:
            found.append(f"bins must be >= 1, got {self.bins}")
        return found

    def groups_required(self, available: int) -> int:
        """Informative prompt groups a batch holding ``available`` groups needs to be diagnosed: ``min_groups``,
        clamped to ``available`` (with a warning, once per count) so a run whose batches hold fewer groups is
        still diagnosed instead of waiting forever."""
        if 0 < available < self.min_groups:
            warnings.warn(f"diagnostics: a generation batch holds {available} prompt group(s) < min_groups="
                          f"{self.min_groups}; diagnosing batches with {available} informative group(s) instead",
                          stacklevel=2)
            return available
        return self.min_groups

    def due(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % self.every == 0

    def to_dict(self) -> dict:
        return asdict(self)
