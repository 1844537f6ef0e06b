"""Per-query attention entropy recorded inside the model's own attention call, without a T x T matrix.

The math is in ``kernels.py`` (``entropy_lse``: the exact LSE identity in O(T) extra memory, ``backend="lse"``;
``entropy_chunked``: explicit scores a block of queries at a time, ``backend="chunked"``). Where the LSE
identity does not hold -- logit soft-capping, additive position biases (ALiBi, T5), learned sink logits -- or
no kernel returns the LSE, the recorder switches to the chunked path with the same mask, biases, soft-cap and
sinks the model uses. It never returns a silently wrong value.

How it hooks in: the model's attention implementation is switched (inside the context only) to a
registered wrapper that calls the original implementation for the layer output -- so logits are bitwise
unchanged -- and, for recorded layers, computes entropy from the same post-RoPE query/key tensors and mask.

Complexity per recorded layer: one extra attention call (2*B*H*T^2*D FLOPs causal-halved) and O(B*H*T)
memory; the chunked path holds B*H*chunk*T floats at a time.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterable, Iterator, Literal

import torch
from torch import nn

from ..options import check_choice
from ..types import AttentionRecord
from .hooks import find_decoder_layers
from .kernels import (_allowed_keys, _first_keys, _has_additive_bias, _key_counts, _repeat_kv, entropy_chunked,
                      entropy_lse, key_mass, received_mass)

Backend = Literal["lse", "chunked"]
# "fp32": recorded layers' q and k are cast to fp32 (exact to ~1e-6 nats; default).
# "model": the model's own dtype (bf16 on GPU): the fast flash kernel, ~1e-2 nats error (see the benchmark).
Precision = Literal["fp32", "model"]
_WRAPPED_NAME = "tokenfocus_entropy_{}"


class AttentionEntropyRecorder:
    """Collects an AttentionRecord per recorded layer and per forward call (appended in call order)."""

    def __init__(
        self,
        layers: Iterable[int],
        backend: Backend = "lse",
        record_sink: bool = False,
        chunk_size: int = 128,
        precision: Precision = "fp32",
        key_marks: torch.Tensor | None = None,
        record_received: bool = False,
    ):
        """key_marks: optional (N, K) bool keys whose attention mass to record (e.g. the prompt), one row per
        sequence of every forward in call order: a forward of b rows reads the next b rows (row chunks need no
        re-setting). Records then carry ``key_mass``. record_received: records also carry ``received``, the
        attention each key receives (column sums, one more pass over the scores in query chunks)."""
        check_choice("backend", backend, Backend, owner="attention_entropy")
        check_choice("precision", precision, Precision, owner="attention_entropy")
        self.precision = precision
        self.layers = frozenset(layers)
        self.backend = backend
        self.record_sink = record_sink
        self.chunk_size = chunk_size
        self.key_marks = key_marks
        self.record_received = record_received
        self.calls: dict[int, list[AttentionRecord]] = defaultdict(list)
        self.fallbacks: dict[int, str] = {}  # layer -> why the chunked path was used

    def record(self, module: nn.Module, query, key, attention_mask, scaling, kwargs) -> None:
        # Gradient-checkpoint recompute runs the attention again inside the backward pass: that forward
        # was already recorded, so skip it (current_graph_task_id is -1 outside autograd's engine).
        if torch._C._current_graph_task_id() != -1:
            return
        layer = module.layer_idx
        b, h, q_len, d = query.shape
        kv_len = key.shape[2]
        if q_len != kv_len:
            raise RuntimeError(
                f"attention-entropy recorder active during KV-cached decoding (layer {layer}: {q_len} queries, "
                f"{kv_len} keys). Generate first, then score the full sequences with one forward."
            )
        scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
        with torch.no_grad():
            dtype = torch.float32 if self.precision == "fp32" else query.dtype
            q = query.detach().to(dtype)
            k = _repeat_kv(key.detach().to(dtype), h // key.shape[1])
            allowed = _allowed_keys(attention_mask, b, q_len, kv_len, q.device)
            softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
            position_bias = kwargs.get("position_bias")
            reason = self._chunked_reason(q, attention_mask, softcap, sinks, position_bias)
            if reason is None:
                try:
                    entropy, lse = entropy_lse(q, k, allowed, scale)
                except RuntimeError as error:  # a CUDA kernel refusing a shape/alignment: stay exact
                    if q.device.type != "cuda":
                        raise
                    reason = f"the CUDA LSE kernel refused these inputs ({str(error)[:120]})"
            if reason is not None:
                self.fallbacks.setdefault(layer, reason)
                entropy, lse = entropy_chunked(
                    q.float(), k.float(), attention_mask, scale, softcap=softcap, sinks=sinks,
                    position_bias=position_bias, chunk_size=self.chunk_size,
                )
            n_keys = _key_counts(allowed, b, q_len, q.device)
            valid = (n_keys > 0)[:, None, :]
            entropy = torch.where(valid, entropy, torch.zeros_like(entropy))
            mass = None
            if self.key_marks is not None:
                offset = sum(c.entropy.shape[0] for c in self.calls[layer])  # rows this layer already recorded
                if self.key_marks.shape[0] < offset + b or self.key_marks.shape[1] != kv_len:
                    raise ValueError(f"key_marks has shape {tuple(self.key_marks.shape)}, but this forward "
                                     f"needs rows {offset}..{offset + b} with {kv_len} keys; mark one row per sequence")
                marks = self.key_marks[offset:offset + b].to(q.device)
                mass = key_mass(q, k, attention_mask, scale, lse, marks, softcap=softcap,
                                position_bias=position_bias, chunk_size=self.chunk_size)
                mass = torch.where(valid, mass, torch.zeros_like(mass))
            sink_prob = None
            if self.record_sink:
                first = _first_keys(allowed, b, q_len, q.device)  # (B, S)
                k_first = torch.gather(k, 2, first[:, None, :, None].expand(b, h, q_len, d))
                sink_prob = torch.exp((q.float() * k_first.float()).sum(-1) * scale - lse)
                sink_prob = torch.where(valid, sink_prob, torch.zeros_like(sink_prob))
            received = None
            if self.record_received:
                # Only real query rows count: a padding row (which may still see real keys under right padding)
                # is the one that may not see itself; rows without any key add nothing either.
                rows = valid if allowed is None else valid & allowed[:, :1].diagonal(dim1=-2, dim2=-1)
                row_lse = torch.where(rows, lse, torch.full_like(lse, float("inf")))
                received = received_mass(q, k, attention_mask, scale, row_lse, softcap=softcap,
                                         position_bias=position_bias, chunk_size=self.chunk_size)
        self.calls[layer].append(AttentionRecord(entropy.float(), n_keys, sink_prob, mass, received))

    def _chunked_reason(self, q, mask, softcap, sinks, position_bias) -> str | None:
        if self.backend == "chunked":
            return "backend='chunked' requested"
        if softcap is not None:
            return "logit soft-capping breaks the LSE identity"
        if sinks is not None:
            return "learned sink logits"
        if position_bias is not None or _has_additive_bias(mask):
            return "additive position bias in the scores"
        if q.device.type not in ("cpu", "cuda"):
            return f"no LSE kernel on {q.device.type}"
        return None

    def result(self) -> dict[int, AttentionRecord]:
        """Per layer, the calls concatenated along the batch dimension (row chunks in call order)."""
        out = {}
        for layer, calls in sorted(self.calls.items()):
            sinks = [c.sink_prob for c in calls]
            masses = [c.key_mass for c in calls]
            received = [c.received for c in calls]
            out[layer] = AttentionRecord(
                torch.cat([c.entropy for c in calls]),
                torch.cat([c.n_keys for c in calls]),
                torch.cat(sinks) if all(s is not None for s in sinks) else None,
                torch.cat(masses) if all(m is not None for m in masses) else None,
                torch.cat(received) if all(r is not None for r in received) else None,
            )
        return out


def _register_wrapper(base: str) -> str:
    """Register (once) an attention implementation that runs ``base`` and then the layer's recorder."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = _WRAPPED_NAME.format(base)
    if name in AttentionInterface._global_mapping:
        return name

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        if base == "eager":  # eager lives in each model's own file, not in the global registry
            forward = sys.modules[type(module).__module__].eager_attention_forward
        else:
            forward = AttentionInterface._global_mapping[base]
        output = forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        recorder = getattr(module, "_tokenfocus_recorder", None)
        if recorder is not None:
            recorder.record(module, query, key, attention_mask, scaling, kwargs)
        return output

    AttentionInterface.register(name, attention)
    # The wrapper needs exactly the mask format its base implementation expects.
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[base])
    return name


def resolve_layers(layers: str | int | Iterable[int], num_layers: int) -> list[int]:
    """'middle' -> [L // 2]; 'all' -> 0..L-1; an int or list of ints (negative counts from the end)."""
    if layers == "middle":
        return [num_layers // 2]
    if layers == "all":
        return list(range(num_layers))
    items = [layers] if isinstance(layers, int) else list(layers)
    resolved = []
    for item in items:
        if not isinstance(item, int) or not -num_layers <= item < num_layers:
            raise ValueError(f"layer {item!r} is out of range for a {num_layers}-layer model; use 'middle', 'all' or ints")
        resolved.append(item % num_layers)
    if not resolved:
        raise ValueError("layers is empty; use 'middle', 'all' or a non-empty list of ints")
    return sorted(set(resolved))


@contextmanager
def record_attention_entropy(
    model: nn.Module,
    layers: str | int | Iterable[int] = "middle",
    *,
    backend: Backend = "lse",
    record_sink: bool = False,
    chunk_size: int = 128,
    precision: Precision = "fp32",
    key_marks: torch.Tensor | None = None,
    record_received: bool = False,
) -> Iterator[AttentionEntropyRecorder]:
    """Record per-query attention entropy of ``layers`` for every full-sequence forward inside the block.

    key_marks: optional (N, K) bool keys; every recorded layer then also records each row's attention mass on
    them, reading the next b rows of the marks for a forward of b rows (see ``AttentionEntropyRecorder``).

    The model's attention implementation and its attention modules are restored on exit, also on errors.
    """
    decoder_layers = find_decoder_layers(model)
    chosen = resolve_layers(layers, len(decoder_layers))
    recorder = AttentionEntropyRecorder(chosen, backend, record_sink, chunk_size, precision, key_marks, record_received)
    original = model.config._attn_implementation
    base = original if original in ("sdpa", "eager") else "sdpa"  # flash/flex: sdpa gives the same output
    tagged = []
    try:
        model.set_attn_implementation(_register_wrapper(base))
        for index in chosen:
            attn = decoder_layers[index].self_attn
            attn._tokenfocus_recorder = recorder
            tagged.append(attn)
        yield recorder
    finally:
        for attn in tagged:
            del attn._tokenfocus_recorder
        model.set_attn_implementation(original)
