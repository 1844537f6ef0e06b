"""Diagnostics: pure functions of gradients and signals returning typed results or namespaced numbers."""

from .config import DiagnosticsConfig
from .diagnose import diagnose, diagnosis_signals
from .entropy_dynamics import entropy_dynamics, jaccard, spearman
from .gradient_geometry import (CountSketch, SubsetGeometry, geometry, group_subset_gradients, informative_groups,
                                trainable_parameters)

__all__ = ["CountSketch", "DiagnosticsConfig", "SubsetGeometry", "diagnose", "diagnosis_signals", "entropy_dynamics",
           "geometry", "group_subset_gradients", "informative_groups", "jaccard", "spearman", "trainable_parameters"]
