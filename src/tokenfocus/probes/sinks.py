"""Attention sinks and massive activations in one forward (PRUNING_TOKENIZERS_MECHANISMS.md C2).

Paper: "Mitigating Attention Sinks and Massive Activations in Audio-Visual Speech Recognition with LLMs",
arXiv 2510.22603 (code umbertocappellazzo/Llama-AVSR). Its diagnostics, measured here on any HF decoder:

- **Attention received per key** (sinks). ``received[l, b, h, j] = sum_i p_ij`` over the query rows that may
  see key j, from the recorder's column sums (``capture.kernels.received_mass``: the row LSEs of the entropy pass,
  then the scores again in query chunks -- never the T x T matrix). The **sink score** of key j is the mean over
  heads of ``received / n_queries(j)``: the average attention probability key j gets from the rows that can see
  it (1 = every row looks only at j). The BOS key of a trained model scores near 1; an *intermediate sink* is a
  later key scoring at least ``sink_threshold`` (our default 0.2; the paper reads them off heatmaps) with at
  least ``min_queries`` rows able to see it, so the last few keys (seen by a handful of rows) do not count.
- **Massive activations** (Sun et al. 2024): per layer output (the residual stream after block l), entries of
  |h| above ``abs_threshold`` (100) AND above ``ratio_threshold`` (1000) times the layer's median |h|; we report
  the max / median ratio per layer, the top entries (position, token, dimension) and the dimensions involved.
- **cos(h_i, h_BOS)** per layer: high for intermediate sinks (the paper's observation).

``sink_score`` (per position) also feeds the ``sink_score`` signal and pruning's sink protection.

Cost: one decoder forward (no LM head) with the recorder on every probed layer; per layer one extra attention call (the entropy
pass's LSE) and one pass over the scores in query chunks (B*H*chunk*T floats), plus the residual stream
(L*B*T*d floats) kept for the activation statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..capture import capture, find_decoder_layers, record_attention_entropy, resolve_layers
from ..signals.sink_score import queries_per_key, sink_scores


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the first real token of each row (the BOS / sink position under left padding too)."""
    return attention_mask.bool().to(torch.uint8).argmax(-1)


def cosine_to_first(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) hidden states -> (B, T) cos(h_i, h_first) with h_first the row's first real token; 0 at padding."""
    first = first_token_index(attention_mask)
    anchor = hidden[torch.arange(hidden.shape[0]), first]  # (B, d)
    cos = torch.nn.functional.cosine_similarity(hidden.float(), anchor.float()[:, None, :], dim=-1)
    return torch.where(attention_mask.bool(), cos, torch.zeros_like(cos))


@dataclass
class MassiveActivations:
    """Per layer output: median |h|, max |h|, their ratio, and the entries meeting both massive thresholds.

    median, maximum, ratio: (L,) float.  massive: list per layer of (batch, position, dim, value) tuples, largest
    first (capped at ``top``).  dims: per layer the sorted set of dimensions with a massive entry.
    """

    median: torch.Tensor
    maximum: torch.Tensor
    ratio: torch.Tensor
    massive: list[list[tuple[int, int, int, float]]]
    dims: list[list[int]]


def massive_activations(hidden: list[torch.Tensor], attention_mask: torch.Tensor, *, abs_threshold: float = 100.0,
                        ratio_threshold: float = 1000.0, top: int = 10) -> MassiveActivations:
    """Massive entries of each layer's (B, T, d) output, over real tokens only (Sun et al. 2024's criterion)."""
    valid = attention_mask.bool()
    medians, maxima, massive, dims = [], [], [], []
    for h in hidden:
        values = h.float().abs()[valid]  # (N, d) real tokens only
        median = values.median()
        medians.append(float(median))
        maxima.append(float(values.max()))
        magnitude = h.float().abs().masked_fill(~valid[..., None], 0.0)  # (B, T, d)
        hit = (magnitude > abs_threshold) & (magnitude > ratio_threshold * median)
        where = hit.nonzero().tolist()
        entries = sorted(((b, t, d, float(h[b, t, d])) for b, t, d in where), key=lambda e: -abs(e[3]))
        massive.append(entries[:top])
        dims.append(sorted({d for _, _, d in where}))
    median_t, max_t = torch.tensor(medians), torch.tensor(maxima)
    return MassiveActivations(median_t, max_t, max_t / median_t.clamp_min(1e-12), massive, dims)


@dataclass
class SinkReport:
    """One sink probe of B sequences over the layers in ``layers``.

    sink_score: (L, B, T) head-mean attention each key receives per row that can see it (module docstring).
    share:      (L, B, T) head-mean fraction of all the layer's attention (summed over real rows) landing on key j.
    cos_first:  (L, B, T) cos(h_l,i, h_l,first) of each layer's output.
    max_abs:    (L, B, T) max |h| over dimensions of each layer's output per position.
    activations: the massive-activation statistics of the same layer outputs.
    intermediate: (layer, batch, position, score) keys other than the first with score >= the threshold.
    """

    layers: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    sink_score: torch.Tensor
    share: torch.Tensor
    cos_first: torch.Tensor
    max_abs: torch.Tensor
    activations: MassiveActivations
    intermediate: list[tuple[int, int, int, float]]
    sink_threshold: float
    min_queries: int

    def first_token_score(self) -> torch.Tensor:
        """(L,) mean over rows of the first real token's sink score per layer."""
        first = first_token_index(self.attention_mask)
        return self.sink_score[:, torch.arange(len(first)), first].mean(-1)

    def to_json(self, tokens: list[list[str]] | None = None, max_positions: int = 256) -> dict:
        """Plain JSON: per-layer summaries, the first row's per-position maps (up to ``max_positions``), the
        intermediate sinks with their token text, cos and |h|."""
        t = min(int(self.attention_mask[0].sum()), max_positions)
        first = first_token_index(self.attention_mask)
        row = slice(int(first[0]), int(first[0]) + t)
        act = self.activations
        rows = []
        for layer_index, b, pos, score in self.intermediate:
            rows.append({"layer": self.layers[layer_index], "row": b, "position": pos, "score": round(score, 4),
                         "token": tokens[b][pos] if tokens else None,
                         "cos_first": round(float(self.cos_first[layer_index, b, pos]), 4),
                         "max_abs": round(float(self.max_abs[layer_index, b, pos]), 2)})
        return {
            "layers": self.layers,
            "sink_threshold": self.sink_threshold,
            "min_queries": self.min_queries,
            "first_token_score": [round(float(v), 4) for v in self.first_token_score()],
            "intermediate": rows,
            "heatmap": {"tokens": tokens[0][row] if tokens else None,
                        "sink_score": [[round(float(v), 4) for v in layer[0, row]] for layer in self.sink_score],
                        "cos_first": [[round(float(v), 4) for v in layer[0, row]] for layer in self.cos_first],
                        "max_abs": [[round(float(v), 2) for v in layer[0, row]] for layer in self.max_abs]},
            "massive": {"median": [round(float(v), 5) for v in act.median],
                        "max": [round(float(v), 2) for v in act.maximum],
                        "ratio": [round(float(v), 1) for v in act.ratio],
                        "dims": act.dims,
                        "top": [[{"row": b, "position": p, "dim": d, "value": round(v, 2),
                                  "token": tokens[b][p] if tokens else None} for b, p, d, v in layer]
                                for layer in act.massive]},
        }


def probe_sinks(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    layers: str | int | Iterable[int] = "all",
    sink_threshold: float = 0.2,
    min_queries: int = 16,
    abs_threshold: float = 100.0,
    ratio_threshold: float = 1000.0,
    chunk_size: int = 128,
) -> SinkReport:
    """Sink scores, massive activations and cos to the first token of ``layers`` in one no-grad forward.

    input_ids (B, T) with right or left padding marked by ``attention_mask`` (default: all real).
    """
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be (B, T) with T >= 2, got shape {tuple(input_ids.shape)}")
    if not 0 < sink_threshold <= 1:
        raise ValueError(f"sink_threshold is a probability in (0, 1], got {sink_threshold}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    attention_mask = attention_mask.bool()
    if not bool(attention_mask.any(-1).all()):
        raise ValueError("every row needs at least one real token (attention_mask is all False in some row)")
    chosen = resolve_layers(layers, len(find_decoder_layers(model)))
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    points = {f"layers.{i}.resid_post": None for i in chosen}
    device = next(model.parameters()).device
    with torch.no_grad(), record_attention_entropy(model, chosen, record_received=True, chunk_size=chunk_size) as rec, \
            capture(model, points) as cap:
        # the decoder alone: the probe reads attention and the residual stream, not the logits
        model.get_decoder()(input_ids=input_ids.to(device), attention_mask=attention_mask.long().to(device),
                            position_ids=position_ids.to(device), use_cache=False)
    records = rec.result()
    mask = attention_mask.cpu()
    hidden = [torch.cat(cap[f"layers.{i}.resid_post"]).float().cpu() for i in chosen]  # L x (B, T, d)
    score = torch.stack([sink_scores(records[i].received.cpu(), mask) for i in chosen])  # (L, B, T)
    rows = mask.sum(-1).float()  # (B,) each real row spreads probability 1 over its keys
    share = torch.stack([records[i].received.cpu().mean(1) / rows[:, None] for i in chosen])
    cos = torch.stack([cosine_to_first(h, mask) for h in hidden])
    max_abs = torch.stack([h.abs().amax(-1).masked_fill(~mask, 0.0) for h in hidden])
    counts = queries_per_key(mask)
    first = first_token_index(mask)
    candidate = (score >= sink_threshold) & (counts >= min_queries)[None]  # (L, B, T)
    candidate[:, torch.arange(len(first)), first] = False
    intermediate = [(l, b, p, float(score[l, b, p])) for l, b, p in candidate.nonzero().tolist()]
    activations = massive_activations(hidden, mask, abs_threshold=abs_threshold, ratio_threshold=ratio_threshold)
    return SinkReport(chosen, input_ids.cpu(), mask, score, share, cos, max_abs, activations, intermediate,
                      sink_threshold, min_queries)
