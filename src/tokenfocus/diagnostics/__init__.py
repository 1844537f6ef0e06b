"""Diagnostics: pure functions of gradients and signals returning typed results or namespaced numbers."""

from .config import DiagnosticsConfig
from .controls import group_shared_prefix, matched_random, position_bins, quantile_bins
from .diagnose import diagnose, diagnosis_signals, matched_controls
from .drift import parameter_distance, token_kl
from .entropy_dynamics import entropy_dynamics, jaccard, spearman
from .gradient_geometry import (CountSketch, SubsetGeometry, geometry, group_subset_gradients, informative_groups,
                                trainable_parameters)
from .token_proxy import completion_logit_gradient_norm, completion_logits, logit_gradient_norm

__all__ = ["CountSketch", "DiagnosticsConfig", "SubsetGeometry", "completion_logit_gradient_norm",
           "completion_logits", "diagnose", "diagnosis_signals", "entropy_dynamics", "geometry",
           "group_shared_prefix", "group_subset_gradients", "informative_groups", "jaccard", "logit_gradient_norm",
           "matched_controls", "matched_random", "parameter_distance", "position_bins", "quantile_bins", "spearman",
           "token_kl", "trainable_parameters"]
