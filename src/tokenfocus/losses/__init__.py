"""Per-token objectives, one aggregate, the token-mean denominators, and loss presets (GRPO, DAPO, Dr. GRPO...)."""

from .aggregate import NORMALIZERS, NORMS, aggregate, aggregate_coefficients
from .normalization import TokenCounts, token_counts, zero_weight_rows_droppable
from .objective import LossConfig, compute_loss
from .presets import LOSS_PRESETS, loss_preset
from .regularizers import entropy_bonus, kl_k3, sink_decorrelation
from .surrogate import cispo, clipped_surrogate, log_ratio

__all__ = [
    "LOSS_PRESETS", "NORMALIZERS", "NORMS", "LossConfig", "TokenCounts", "aggregate", "aggregate_coefficients", "cispo",
    "clipped_surrogate", "compute_loss", "entropy_bonus", "kl_k3", "log_ratio", "loss_preset", "sink_decorrelation", "token_counts",
    "zero_weight_rows_droppable",
]
