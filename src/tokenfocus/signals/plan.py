"""What a scoring forward must record for a set of signals: the attention capture plan.

    specs ──► attention_plan ──► AttentionPlan(layers, record_sink, backend, precision, keys, record_received)
                                   ├─ key_marks(batch)   (B, T) bool keys for attention mass, or None
                                   └─ recorder(model)    the attention-entropy recorder context, or nullcontext(None)

One plan serves every caller that runs the forward itself (``compute_signals``, the TRL trainer): the union
of the layers the specs read; sink probabilities if any spec excludes the sink; the exact chunked backend or
fp32 if any spec asks for them; and the one set of keys whose attention mass the specs read.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..capture.recorder import AttentionEntropyRecorder, Backend, Precision, record_attention_entropy, resolve_layers
from ..options import check_choice
from ..types import TokenBatch, prompt_keys
from .attention_mass import KeySet
from .registry import SignalSpec

# Where a trainer's signals come from: the rollout (old) policy, or the training forward's current policy.
SignalSource = Literal["rollout", "current"]
# How rollout signals are captured: inside the training forward ("fused", when one optimizer step consumes one
# generation batch), in one extra no-grad forward per generation batch ("separate"), or "auto" (fused if possible).
SignalPass = Literal["auto", "separate", "fused"]


@dataclass(frozen=True)
class AttentionPlan:
    """The attention capture one scoring forward needs.

    layers:      union of the layers to record (empty: no recorder needed).
    record_sink: record the first-key (sink) probabilities.
    backend:     "chunked" if any spec asks for the exact chunked path, else "lse".
    precision:   "fp32" if any spec asks for it, else "model".
    keys:        the keys whose attention mass is recorded ("prompt" or caller-"marked"); None when no signal
                 reads attention mass.
    record_received: record the attention each key receives (column sums; the sink_score signal).
    """

    layers: tuple[int, ...]
    record_sink: bool
    backend: Backend
    precision: Precision
    keys: KeySet | None
    record_received: bool = False

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, Backend, owner="attention_plan")
        check_choice("precision", self.precision, Precision, owner="attention_plan")
        if self.keys is not None:
            check_choice("keys", self.keys, KeySet, owner="attention_plan")

    def key_marks(self, batch: TokenBatch, given: torch.Tensor | None = None) -> torch.Tensor | None:
        """The (B, T) bool keys whose attention mass the signals read: the prompt, or the caller's ``given``
        marks (restricted to real tokens) for keys="marked"; None when no signal reads attention mass."""
        if self.keys is None:
            return None
        if self.keys == "prompt":
            return prompt_keys(batch)
        if given is None:
            raise ValueError("keys='marked' needs compute_signals(..., key_marks=(B, T) bool tensor) marking the keys "
                             "(e.g. an evidence span)")
        if given.shape != batch.input_ids.shape or given.dtype != torch.bool:
            raise ValueError(f"key_marks must be a bool tensor of shape {tuple(batch.input_ids.shape)}, "
                             f"got {given.dtype} {tuple(given.shape)}")
        return given & batch.attention_mask

    def recorder(
        self, model: nn.Module, key_marks: torch.Tensor | None = None
    ) -> AbstractContextManager[AttentionEntropyRecorder | None]:
        """``record_attention_entropy`` on this plan's layers (yielding the recorder), or ``nullcontext(None)``
        when no layer is recorded. key_marks: (N, K) bool, one row per sequence of every forward in call order."""
        if not self.layers:
            if key_marks is not None:
                raise ValueError("key_marks needs attention layers: the mass is recorded by the attention recorder")
            return nullcontext(None)
        return record_attention_entropy(model, list(self.layers), backend=self.backend, record_sink=self.record_sink,
                                        precision=self.precision, key_marks=key_marks,
                                        record_received=self.record_received)


def attention_plan(specs: list[SignalSpec], num_layers: int) -> AttentionPlan:
    """The plan for parsed ``specs`` on a ``num_layers``-layer model; refuses specs reading different key sets."""
    layers: set[int] = set()
    record_sink, record_received, backend, precision = False, False, "lse", "model"
    wanted: set = set()
    for spec in specs:
        options = {**spec.entry.options(), **spec.options}
        if "key_mass" in spec.entry.requires:
            wanted.add(options.get("keys"))
        if "attention" not in spec.entry.requires:
            continue
        layers.update(resolve_layers(options["layers"], num_layers))
        record_sink |= options.get("sink") == "exclude"
        record_received |= "received" in spec.entry.requires
        if options.get("backend") == "chunked":
            backend = "chunked"
        if options.get("precision") == "fp32":
            precision = "fp32"
    if len(wanted) > 1:
        raise ValueError(f"one scoring pass records one set of marked keys, but the signals ask for {sorted(wanted)}; "
                         "compute them in separate calls")
    keys = next(iter(wanted)) if wanted else None
    if wanted:
        check_choice("keys", keys, KeySet)
    return AttentionPlan(tuple(sorted(layers)), record_sink, backend, precision, keys, record_received)
