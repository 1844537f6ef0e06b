"""The token-mean denominators of one loss call when the batch is split over processes and accumulation steps.

A token mean over an optimizer step's tokens (``norm="token_mean"``, ``token_count="global"``: DAPO) must
not depend on how they were split. Each process computes ``sum_local(w l) / Z_local``, accumulation sums
``A`` micro-batches and DDP averages ``P`` processes, so with the global count ``N``
(all valid tokens, or the selected weight mass for ``normalizer="selected"``) each call divides by

    Z_local = N / P * A / S      counts of the generation batch (TRL's ``num_items_in_batch``): the batch is
                                 S micro-batches per process and an optimizer step takes A of them, so one
                                 step's tokens are N * A / S; DDP averages the P processes' gradients
    Z_local = N / P, then / A    counts of this micro-batch gathered over processes (the fused pass, where
                                 one micro-batch is the whole generation batch of its process)

exactly as TRL 1.16 rescales ``num_items_in_batch`` (tested against TRL's own training step). Other norms
average inside the call and only divide by ``A``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .objective import LossConfig

CountedOver = Literal["generation_batch", "micro_batch"]


@dataclass(frozen=True)
class TokenCounts:
    """What ``compute_loss`` needs: the policy term's and the KL term's denominators (None = local), and the
    number the returned loss is divided by."""

    global_count: torch.Tensor | None
    global_valid_count: torch.Tensor | None
    loss_divisor: float


def token_counts(config: LossConfig, valid_tokens: torch.Tensor, selected_mass: torch.Tensor, *,
                 num_processes: int, accumulation: int, steps_per_generation: int = 1,
                 counted_over: CountedOver = "generation_batch") -> TokenCounts:
    """Denominators for one loss call. ``valid_tokens`` / ``selected_mass``: global counts (0-d) over all
    processes of the batch named by ``counted_over``. In evaluation pass ``accumulation=1`` and
    ``steps_per_generation=1``."""
    count = selected_mass.float() if config.normalizer == "selected" else valid_tokens.float()
    if config.norm != "token_mean" or config.token_count != "global":
        return TokenCounts(None, None, accumulation)
    if counted_over == "micro_batch":
        rescale, divisor = num_processes, accumulation
    else:
        rescale, divisor = num_processes * (steps_per_generation / accumulation), 1
    return TokenCounts(count / rescale, valid_tokens.float() / rescale, divisor)


def zero_weight_rows_droppable(config: LossConfig) -> bool:
    """True when rows whose tokens all have weight 0 can leave a loss call without changing its value or gradient:
    only the weighted policy term is summed (no KL, entropy or sink term over all tokens) and its token-mean
    denominator does not count the rows (the global count, or the selected mass)."""
    return (config.norm == "token_mean" and config.beta == 0 and config.entropy_coef == 0
            and config.sink_decorrelation == 0
            and (config.token_count == "global" or config.normalizer == "selected"))
