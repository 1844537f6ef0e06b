"""Per-token objectives, one aggregate, and presets (GRPO, DAPO, Dr. GRPO, 80/20, flagship subsets...)."""

from .aggregate import NORMALIZERS, NORMS, aggregate
from .objective import LossConfig, compute_loss
from .presets import PRESETS, Preset, get_preset
from .regularizers import entropy_bonus, kl_k3
from .surrogate import cispo, clipped_surrogate, log_ratio

__all__ = [
    "NORMALIZERS", "NORMS", "PRESETS", "LossConfig", "Preset", "aggregate", "cispo", "clipped_surrogate",
    "compute_loss", "entropy_bonus", "get_preset", "kl_k3", "log_ratio",
]
