"""Token policies: per-token signals -> detached weights / masks [B, T] + stats, with an explicit scope.

One file per policy family; each registers its policies in ``POLICIES``. Use ``apply_policy(spec, inputs)``.
"""

from . import combinators, controls, d3s, low2high, pgpo, subsets, video_ktr  # noqa: F401  (registers)
from .registry import (POLICIES, PolicyInfo, PolicySpec, apply_policy, parse_policy_spec, register_policy,
                       weight_histogram, weight_stats)
from .d3s import rows_before_forward
from .subsets import anchor_explorer_subsets, random_subset

__all__ = ["POLICIES", "PolicyInfo", "PolicySpec", "anchor_explorer_subsets", "apply_policy", "parse_policy_spec",
           "random_subset", "register_policy", "rows_before_forward", "weight_histogram", "weight_stats"]
