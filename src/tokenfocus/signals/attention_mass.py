"""Attention mass on marked keys: how much of the scoring row's attention lands on the prompt or an evidence span.

RL_TOKEN_CREDIT.md §1.8 (evidence-gathering analyses): for the query row q(c) that scores response token c,

    M_E(c) = sum_{j in E} A_{q(c), j}

with E the prompt (``keys="prompt"``: every real token before the row's first response token) or a
caller-given set (``keys="marked"`` with ``compute_signals(..., key_marks=...)``, e.g. the operand digits).
1 - M_prompt is the share on earlier response tokens. Recorded without a T x T matrix from the entropy
pass's log-normalizer (INTEGRATION_NOTES.md §5.5; ``capture.kernels.key_mass``).

sink="exclude" removes the first valid key (the attention sink) from the distribution and renormalizes:
M' = (M - p_s [first key marked]) / (1 - p_s).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..capture.recorder import Backend, Precision, resolve_layers
from ..options import check_choice
from ..types import ForwardCapture
from .attention_entropy import HeadReduce, QueryPosition, SinkMode, rows_to_tokens
from .registry import register_signal

KeySet = Literal["prompt", "marked"]
_SINK_GUARD = 1e-6


@register_signal("attention_mass", requires=("attention", "key_mass"), cost="forward+attention")
def attention_mass(
    capture: ForwardCapture,
    layers="middle",
    head_reduce: HeadReduce = "mean",
    query_position: QueryPosition = "predicting",
    keys: KeySet = "prompt",
    sink: SinkMode = "include",
    backend: Backend = "lse",
    precision: Precision = "fp32",
) -> torch.Tensor:
    """Attention probability the row scoring each response token puts on the prompt (or marked) keys, in [0, 1]."""
    check_choice("head_reduce", head_reduce, HeadReduce, owner="attention_mass")
    check_choice("query_position", query_position, QueryPosition, owner="attention_mass")
    check_choice("keys", keys, KeySet, owner="attention_mass")
    check_choice("sink", sink, SinkMode, owner="attention_mass")
    check_choice("backend", backend, Backend, owner="attention_mass")
    check_choice("precision", precision, Precision, owner="attention_mass")
    chosen = resolve_layers(layers, capture.num_layers)
    missing = [layer for layer in chosen if layer not in capture.attention or capture.attention[layer].key_mass is None]
    if missing:
        raise ValueError(f"attention_mass: layers {missing} have no recorded key mass in this forward pass")
    per_layer = []
    for layer in chosen:
        record = capture.attention[layer]
        mass = record.key_mass
        if sink == "exclude":
            if record.sink_prob is None:
                raise ValueError("sink='exclude' needs the sink probabilities: record with record_sink=True")
            first = capture.batch.attention_mask.to(torch.uint8).argmax(-1)  # first real token of each row
            first_marked = capture.key_marks.gather(1, first[:, None]).float()[:, None, :]  # (B, 1, 1)
            p = record.sink_prob.clamp(0.0, 1.0)
            rest = 1.0 - p
            mass = torch.where(rest < _SINK_GUARD, torch.zeros_like(mass),
                               ((mass - p * first_marked) / rest.clamp_min(_SINK_GUARD)).clamp(0.0, 1.0))
        per_layer.append(mass)
    return rows_to_tokens(capture, per_layer, head_reduce, query_position)
