"""Token policies: per-token signals -> detached weights / masks [B, T] + stats, with an explicit scope.

One file per policy family; each registers its policies in ``POLICIES``. Use ``apply_policy(spec, inputs)``.
"""

from . import combinators, controls, d3s, low2high, pgpo, subsets, video_ktr  # noqa: F401  (registers)
from .registry import POLICIES, PolicyInfo, apply_policy, parse_policy_spec, register_policy, weight_stats

__all__ = ["POLICIES", "PolicyInfo", "apply_policy", "parse_policy_spec", "register_policy", "weight_stats"]
