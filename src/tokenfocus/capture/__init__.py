"""Capture: scoped hooks on the real HF module tree, the attention-entropy recorder and its math kernels."""

from .hooks import Capture, capture, find_decoder_layers, layer_output_points, resolve_point
from .kernels import entropy_chunked, entropy_lse, key_mass
from .recorder import AttentionEntropyRecorder, Backend, Precision, record_attention_entropy, resolve_layers

__all__ = [
    "AttentionEntropyRecorder",
    "Backend",
    "Capture",
    "capture",
    "entropy_chunked",
    "entropy_lse",
    "find_decoder_layers",
    "key_mass",
    "layer_output_points",
    "Precision",
    "record_attention_entropy",
    "resolve_layers",
    "resolve_point",
]
