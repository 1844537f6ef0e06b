"""Attention-entropy math kernels: pure tensor functions, no modules, no hooks.

For query i with scores s_ij = scale * q_i . k_j and p = softmax(s) over the allowed keys:

    H_i = LSE_i - sum_j p_ij s_ij = LSE_i - scale * q_i . Attn(q, K, V=K)_i        (nats)

so one fused attention call with the keys as values, plus the log-sum-exp the kernel returns, gives the
exact entropy in O(T) extra memory (``entropy_lse``). Where the identity does not hold -- logit soft-capping,
additive position biases (ALiBi, T5), learned sink logits -- or no kernel returns the LSE, ``entropy_chunked``
computes the exact scores of a block of queries at a time, with the same mask, biases, soft-cap and sinks
the model uses. ``key_mass`` reuses the entropy pass's LSE to give each row's attention mass on marked keys, and
``received_mass`` the attention each key receives (a column sum: attention sinks).

Shapes: query/key (B, H, S, D) (keys already repeated for GQA); masks bool or additive (B, 1|H, S, S).
The recorder that calls these inside the model's attention lives in ``recorder.py``.
"""

from __future__ import annotations

import torch


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


def received_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    lse: torch.Tensor,
    *,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    chunk_size: int = 128,
) -> torch.Tensor:
    """(B, H, K) fp32 attention each key receives, summed over the query rows (INTEGRATION_NOTES §5.5):

        R_j = sum_i exp(s_ij - LSE_i)          (over the rows i allowed to see key j)

    A column sum is no row expectation, so no fused call gives it; with the row's ``lse`` from the entropy pass
    it costs the scores once more, ``chunk_size`` query rows at a time: B*H*S*K multiply-adds, B*H*chunk*K floats,
    never the S x K matrix. Rows with no allowed key add 0. The columns of all rows sum to the number of rows
    with a key (each row is a distribution), minus a learned sink's share when the model has one.

    Pure causal self-attention on the CPU (no mask, soft-cap or bias) takes one fused call instead
    (``_received_fused``): about 6x faster at 1,024 tokens.
    """
    if mask is None and softcap is None and position_bias is None and query.device.type == "cpu" \
            and query.shape[2] == key.shape[2]:
        return _received_fused(query.float(), key.float(), lse.float(), scale)
    b, h, s, _ = query.shape
    key_t = key.float().transpose(-1, -2)
    lse = lse.float()
    total = torch.zeros(b, h, key.shape[2], dtype=torch.float32, device=query.device)
    for start in range(0, s, chunk_size):
        stop = min(start + chunk_size, s)
        scores = _block_scores(query[:, :, start:stop].float(), key_t, mask, scale, start, softcap=softcap,
                               position_bias=position_bias)  # (B, H, c, K)
        p = torch.exp(scores - lse[..., start:stop, None])
        total += torch.where(torch.isfinite(p), p, torch.zeros_like(p)).sum(2)
    return total


def _received_fused(query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor, scale: float) -> torch.Tensor:
    """Column sums of causal attention through one fused call: R_j = sum_{i >= j} exp(scale q_i.k_j - LSE_i) is a
    log-sum-exp over "keys" i for the "query" j. Reversing the positions turns i >= j into a causal mask, and an
    extra dimension carries the per-row bias -LSE_i (query [scale k_j, 1], key [q_i, -LSE_i]), so the kernel's
    LSE output is log R_j. Rows whose LSE is +inf (no allowed key) add exp(-inf) = 0. (B, H, S) fp32."""
    pad = 8  # one bias column, padded so the head dimension stays a multiple of 8
    shape = (*query.shape[:-1], 1)
    reversed_keys = torch.flip(key, [2]) * scale
    reversed_queries = torch.flip(query, [2])
    bias = -torch.flip(lse, [2])[..., None]
    q = torch.cat([reversed_keys, torch.ones(shape, dtype=query.dtype), torch.zeros(*shape[:-1], pad - 1)], -1)
    k = torch.cat([reversed_queries, bias, torch.zeros(*shape[:-1], pad - 1)], -1)
    _, log_received = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, torch.zeros_like(q), 0.0, True,
                                                                                 scale=1.0)
    return torch.flip(log_received.float().exp(), [2])
