"""Per-query attention entropy recorded inside the model's own attention call, without a T x T matrix.

For query i with scores s_ij = scale * q_i . k_j and p = softmax(s) over the allowed keys:

    H_i = LSE_i - sum_j p_ij s_ij = LSE_i - scale * q_i . Attn(q, K, V=K)_i        (nats)

so one fused attention call with the keys as values, plus the log-sum-exp the kernel returns, gives the
exact entropy in O(T) extra memory (``backend="lse"``). Where the identity does not hold -- logit
soft-capping, additive position biases (ALiBi, T5), learned sink logits -- or no kernel returns the LSE,
the recorder switches to ``backend="chunked"``: the exact scores of a block of queries at a time, with the
same mask, biases, soft-cap and sinks the model uses. It never returns a silently wrong value.

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
from typing import Iterable, Iterator

import torch
from torch import nn

from ..types import AttentionRecord
from .hooks import find_decoder_layers

BACKENDS = ("lse", "chunked")
# "fp32": recorded layers' q and k are cast to fp32 (exact to ~1e-6 nats; default).
# "model": the model's own dtype (bf16 on GPU): the fast flash kernel, ~1e-2 nats error (see the benchmark).
PRECISIONS = ("fp32", "model")
_WRAPPED_NAME = "tokenfocus_entropy_{}"


def _repeat_kv(key: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D), each KV head shared by n_rep consecutive query heads."""
    if n_rep == 1:
        return key
    b, h_kv, s, d = key.shape
    return key[:, :, None].expand(b, h_kv, n_rep, s, d).reshape(b, h_kv * n_rep, s, d)


def _allowed_keys(mask: torch.Tensor | None, batch: int, q_len: int, kv_len: int, device) -> torch.Tensor | None:
    """Bool (B, 1|H, Q, K) of allowed keys, or None for the pure causal case (mask None)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        allowed = mask
    else:  # additive float mask: 0 (or a bias) where allowed, a very negative number where not
        allowed = mask > torch.finfo(mask.dtype).min / 2
    return allowed[..., :q_len, :kv_len].expand(batch, -1, -1, -1)


def _has_additive_bias(mask: torch.Tensor | None) -> bool:
    """True when a float mask carries values other than 0 and the 'masked' minimum (ALiBi, relative bias)."""
    if mask is None or mask.dtype == torch.bool:
        return False
    allowed = mask > torch.finfo(mask.dtype).min / 2
    return bool((mask[allowed] != 0).any())


def _key_counts(allowed: torch.Tensor | None, batch: int, q_len: int, device) -> torch.Tensor:
    """(B, Q) float number of keys each query may attend to."""
    if allowed is None:
        return torch.arange(1, q_len + 1, device=device, dtype=torch.float32).expand(batch, q_len)
    return allowed[:, 0].sum(-1).float()


def _first_keys(allowed: torch.Tensor | None, batch: int, q_len: int, device) -> torch.Tensor:
    """(B, Q) index of the first allowed key of each query row (the BOS / sink column)."""
    if allowed is None:
        return torch.zeros(batch, q_len, dtype=torch.long, device=device)
    return allowed[:, 0].to(torch.uint8).argmax(-1)


def entropy_lse(
    query: torch.Tensor, key: torch.Tensor, allowed: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query entropy through one fused attention call with V = K; exact up to the kernel's rounding.

    query (B, H, S, D), key (B, H, S, D) (already repeated for GQA), same dtype; allowed: bool (B, 1, S, S)
    or None for pure causal. Returns fp32 (entropy (B, H, S), lse (B, H, S)). Rows with no allowed key give
    garbage that the caller zeroes with the key count.

    In fp32 the error is ~1e-6 nats. In bf16/fp16 the kernel's output O = E_p[k] is rounded to 8-11 bits
    and LSE - scale*q.O cancels; the values are therefore centred first (V = K - mean K; E_p[k] = O + mean K
    since the probabilities sum to one), which shrinks O and its absolute rounding error.
    """
    shift = None
    values = key
    if query.dtype != torch.float32:
        shift = key.float().mean(dim=2, keepdim=True)  # (B, H, 1, D)
        values = (key.float() - shift).to(key.dtype)
    bias = None
    if allowed is not None:
        # CUDA's memory-efficient kernel wants the bias rows 16-aligned: allocate padded, view the real width.
        width = allowed.shape[-1]
        padded = -(-width // 16) * 16 if query.device.type == "cuda" else width
        bias = torch.zeros((*allowed.shape[:-1], padded), dtype=query.dtype, device=query.device)[..., :width]
        bias.masked_fill_(~allowed, float("-inf"))
    if query.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, values, 0.0, allowed is None, attn_mask=bias, scale=scale
        )
    elif query.device.type == "cuda" and bias is None and query.dtype != torch.float32:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, values, 0.0, True, False, scale=scale)[:2]
    elif query.device.type == "cuda":
        if bias is not None:
            bias = bias.expand(-1, query.shape[1], -1, -1)
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, values, bias, True, 0.0, allowed is None, scale=scale
        )[:2]
    else:
        raise ValueError(f"no LSE kernel on {query.device.type}; use backend='chunked'")
    lse = lse[..., : query.shape[2]].float()  # CUDA kernels may pad the query dimension
    out = out.float() if shift is None else out.float() + shift
    expected = (query.float() * out).sum(-1) * scale  # (B, H, S)  E_p[s]
    return lse - expected, lse


def _block_scores(
    query_block: torch.Tensor,
    key_t: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    start: int,
    *,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact scores of query rows ``start:start+c`` against the keys of ``key_t`` (B, H, D, K), -inf where the
    model's mask forbids a key: scale*q.k, optional soft-cap c*tanh(s/c), then the additive bias or mask."""
    stop = start + query_block.shape[2]
    kv = key_t.shape[-1]
    scores = (query_block @ key_t) * scale  # (B, H, c, K)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if position_bias is not None:
        scores = scores + position_bias[..., start:stop, :kv].to(scores.dtype)
    if mask is None:
        causal = torch.arange(start, stop, device=scores.device)[:, None] >= torch.arange(kv, device=scores.device)
        return scores.masked_fill(~causal, float("-inf"))
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask[..., start:stop, :kv], float("-inf"))
    return scores + mask[..., start:stop, :kv].to(scores.dtype)


def entropy_chunked(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    *,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    chunk_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-query entropy from explicit scores, ``chunk_size`` query rows at a time.

    Uses the model's exact score function: scale*q.k, optional soft-cap c*tanh(s/c), the additive mask or
    position bias, and learned sink logits (one per head; the sink joins the distribution as an extra
    column, as in gpt-oss). Returns (entropy (B, H, S), lse (B, H, S)) in the dtype of ``query``.
    """
    b, h, s, _ = query.shape
    entropies, lses = [], []
    key_t = key.transpose(-1, -2)
    for start in range(0, s, chunk_size):
        stop = min(start + chunk_size, s)
        scores = _block_scores(query[:, :, start:stop], key_t, mask, scale, start, softcap=softcap,
                               position_bias=position_bias)
        if sinks is not None:
            sink_col = sinks.to(scores.dtype).view(1, h, 1, 1).expand(b, h, stop - start, 1)
            scores = torch.cat([scores, sink_col], dim=-1)
        logp = torch.log_softmax(scores, dim=-1)
        p = logp.exp()
        entropies.append(-torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1))
        lses.append(torch.logsumexp(scores, dim=-1))
    return torch.cat(entropies, dim=-1), torch.cat(lses, dim=-1)


def key_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    lse: torch.Tensor,
    marks: torch.Tensor,
    *,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    chunk_size: int = 128,
) -> torch.Tensor:
    """(B, H, S) fp32 attention probability each query row puts on the marked keys (INTEGRATION_NOTES §5.5).

        M_i = sum_{j marked, allowed} exp(s_ij - LSE_i)

    ``lse`` is the row's log-normalizer from the entropy pass (it includes learned sinks when the model has
    them), ``marks`` (B, K) bool. Only keys up to the last marked one are scored, in query chunks, so a
    prompt span of P keys costs B*H*S*P multiply-adds and B*H*chunk*P floats. Rows with no allowed key
    give 0.
    """
    b, h, s, _ = query.shape
    columns = marks.any(0).nonzero()
    if columns.numel() == 0:
        return torch.zeros(b, h, s, dtype=torch.float32, device=query.device)
    span = int(columns.max()) + 1
    key_t = key[:, :, :span].float().transpose(-1, -2)
    weight = marks[:, None, None, :span].float()
    lse = lse.float()
    parts = []
    for start in range(0, s, chunk_size):
        stop = min(start + chunk_size, s)
        scores = _block_scores(query[:, :, start:stop].float(), key_t, mask, scale, start, softcap=softcap,
                               position_bias=position_bias)
        p = torch.exp(scores - lse[..., start:stop, None])
        parts.append(torch.where(weight > 0, p, torch.zeros_like(p)).sum(-1))
    mass = torch.cat(parts, dim=-1)
    return torch.where(torch.isfinite(mass), mass, torch.zeros_like(mass))


class AttentionEntropyRecorder:
    """Collects an AttentionRecord per recorded layer and per forward call (appended in call order)."""

    def __init__(
        self,
        layers: Iterable[int],
        backend: str = "lse",
        record_sink: bool = False,
        chunk_size: int = 128,
        precision: str = "fp32",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"Unknown attention-entropy backend {backend!r}; choose one of {BACKENDS}")
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown attention-entropy precision {precision!r}; choose one of {PRECISIONS}")
        self.precision = precision
        self.layers = frozenset(layers)
        self.backend = backend
        self.record_sink = record_sink
        self.chunk_size = chunk_size
        self.calls: dict[int, list[AttentionRecord]] = defaultdict(list)
        self.fallbacks: dict[int, str] = {}  # layer -> why the chunked path was used
        # (N, K) bool keys whose attention mass to record (e.g. the prompt), one row per sequence of every
        # forward in call order: a forward of b rows reads the next b rows (row chunks need no re-setting).
        # Records then carry ``key_mass``.
        self.key_marks: torch.Tensor | None = None

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
                    raise ValueError(f"recorder.key_marks has shape {tuple(self.key_marks.shape)}, but this forward "
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
        self.calls[layer].append(AttentionRecord(entropy.float(), n_keys, sink_prob, mass))

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
            out[layer] = AttentionRecord(
                torch.cat([c.entropy for c in calls]),
                torch.cat([c.n_keys for c in calls]),
                torch.cat(sinks) if all(s is not None for s in sinks) else None,
                torch.cat(masses) if all(m is not None for m in masses) else None,
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
    backend: str = "lse",
    record_sink: bool = False,
    chunk_size: int = 128,
    precision: str = "fp32",
) -> Iterator[AttentionEntropyRecorder]:
    """Record per-query attention entropy of ``layers`` for every full-sequence forward inside the block.

    The model's attention implementation and its attention modules are restored on exit, also on errors.
    """
    decoder_layers = find_decoder_layers(model)
    chosen = resolve_layers(layers, len(decoder_layers))
    recorder = AttentionEntropyRecorder(chosen, backend, record_sink, chunk_size, precision)
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
