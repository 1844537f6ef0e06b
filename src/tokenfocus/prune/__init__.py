"""Token pruning at inference: the prompt layout, a layer-by-layer runner that drops tokens mid-forward, pruning
signals and policies, and fidelity against the unpruned run (PRUNING_TOKENIZERS_MECHANISMS.md §0.6, A1-A5)."""

from .layout import ROLES, TokenLayout
from .runner import LayerRunner, Merge, RunnerOutput, RunState

__all__ = ["ROLES", "LayerRunner", "Merge", "RunState", "RunnerOutput", "TokenLayout"]
