"""Capture: scoped hooks on the real HF module tree, and the attention-entropy recorder."""

from .entropy_attention import AttentionEntropyRecorder, record_attention_entropy, resolve_layers
from .hooks import Capture, capture, find_decoder_layers, resolve_point

__all__ = [
    "AttentionEntropyRecorder",
    "Capture",
    "capture",
    "find_decoder_layers",
    "record_attention_entropy",
    "resolve_layers",
    "resolve_point",
]
