"""Sink score: the attention each token receives as a key (PRUNING_TOKENIZERS_MECHANISMS.md C2).

Paper: "Mitigating Attention Sinks and Massive Activations in Audio-Visual Speech Recognition with LLMs",
arXiv 2510.22603. Attention sinks are keys that receive a disproportionate share of the attention of later
rows: the BOS / first token, and "intermediate sinks" (low-semantic tokens such as spaces or punctuation).

    received_j = sum_i p_ij               (over the real query rows i >= j; a column sum of the attention)
    score_j    = mean_heads received_j / n_queries(j)         in [0, 1]; 1 = every row that can see j looks only at j

n_queries(j) is the number of real rows that may see key j (causal: the real tokens at positions >= j), so the
score is the average probability a row puts on j and does not grow with how early j sits. The column sums come
from the recorder (``record_received``), never a T x T matrix. A key's value is stored at its own index (it
describes the token as a key; no predicting-row shift). [our default]: layers "middle", mean over heads and
layers. Used by the sink probe, pruning's sink protection and policies (e.g. to drop or protect sink tokens).
"""

from __future__ import annotations

import torch

from ..capture.recorder import resolve_layers
from ..types import ForwardCapture
from .registry import register_signal


def queries_per_key(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) float number of real query rows i >= j that may see key j under a causal mask (0 at padding)."""
    mask = attention_mask.bool()
    later = mask.flip(-1).long().cumsum(-1).flip(-1)  # real tokens at positions >= j
    return torch.where(mask, later, torch.zeros_like(later)).float()


def sink_scores(received: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, H, T) attention received -> (B, T) sink score: head mean of received / n_queries, 0 at padding."""
    counts = queries_per_key(attention_mask)
    score = received.float().mean(1) / counts.clamp_min(1)
    return torch.where(counts > 0, score, torch.zeros_like(score))


@register_signal("sink_score", requires=("attention", "received"), cost="forward+attention")
def sink_score(capture: ForwardCapture, layers="middle") -> torch.Tensor:
    """Average attention probability each response token receives as a key from the rows that can see it."""
    chosen = resolve_layers(layers, capture.num_layers)
    records = [capture.attention.get(layer) for layer in chosen]
    if any(r is None or r.received is None for r in records):
        raise ValueError(f"sink_score: layers {chosen} need the attention each key receives; record them with "
                         "record_received=True (compute_signals does this for a sink_score spec)")
    batch = capture.batch
    values = torch.stack([sink_scores(r.received, batch.attention_mask) for r in records]).mean(0)
    return torch.where(batch.response_mask, values, torch.zeros_like(values)).float()
