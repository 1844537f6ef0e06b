"""Attention entropy of the query row that scores each response token (flagship signal).

Paper: "Not All Tokens Learn Alike: Attention Entropy Reveals Heterogeneous Signals in RL Reasoning",
arXiv 2605.07660 (see shared/methods/RL_TOKEN_CREDIT.md §1.2). Low values mark "anchors" (concentrated
contextual support), high values "explorers" (diffuse support).

    H^{l,h}_{b,i} = -sum_j A_{b,i,j} log A_{b,i,j}                      (nats; recorded by capture/)
    Ĥ = H / log(n_{b,i}),   n = number of keys row i may attend to       (normalize="log_context")
    sink="exclude":  H' = (H + p_s log p_s + (1-p_s) log(1-p_s)) / (1-p_s),  Ĥ' = H' / log(n-1)

Then mean (or max/min/median) over heads, mean over layers, and the value of response token t is read
from row t-1 (query_position="predicting", the row whose output predicts t) or row t ("self").
Reproducing the paper's setup as far as it is known: layers="middle", head_reduce="mean",
query_position="predicting", normalize="log_context", sink="include" (all [our default] except the
log-context normalization, which is [secondary]).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..capture.recorder import Backend, Precision, resolve_layers
from ..options import check_choice
from ..types import AttentionRecord, ForwardCapture
from .registry import register_signal

HeadReduce = Literal["mean", "max", "min", "median", "none"]
QueryPosition = Literal["predicting", "self"]
Normalize = Literal["log_context", "none"]
SinkMode = Literal["include", "exclude"]
_SINK_GUARD = 1e-6


def normalized_entropy(record: AttentionRecord, normalize: Normalize = "log_context",
                       sink: SinkMode = "include") -> torch.Tensor:
    """(B, H, T) per-row entropy after optional sink exclusion and log-context normalization."""
    entropy, n_keys = record.entropy, record.n_keys[:, None, :]
    if sink == "exclude":
        if record.sink_prob is None:
            raise ValueError("sink='exclude' needs the sink probabilities: record with record_sink=True")
        p = record.sink_prob.clamp(0.0, 1.0)
        rest = 1.0 - p
        safe_rest = rest.clamp_min(_SINK_GUARD)
        renorm = (entropy + torch.special.xlogy(p, p) + torch.special.xlogy(rest, rest)) / safe_rest
        entropy = torch.where(rest < _SINK_GUARD, torch.zeros_like(entropy), renorm.clamp_min(0.0))
        n_keys = n_keys - 1
    if normalize == "log_context":
        log_n = torch.log(n_keys.clamp_min(2.0))
        entropy = torch.where(n_keys >= 2, entropy / log_n, torch.zeros_like(entropy))
    return entropy


def reduce_heads(values: torch.Tensor, head_reduce: HeadReduce) -> torch.Tensor:
    """(B, H, T) -> (B, T), or (H, B, T) for 'none'."""
    if head_reduce == "mean":
        return values.mean(1)
    if head_reduce == "max":
        return values.amax(1)
    if head_reduce == "min":
        return values.amin(1)
    if head_reduce == "median":
        return values.median(1).values
    return values.transpose(0, 1)


def align_to_tokens(rows: torch.Tensor, query_position: QueryPosition) -> torch.Tensor:
    """Move per-row values (..., T) to the token they score: token t <- row t-1 for 'predicting'."""
    if query_position == "self":
        return rows
    out = torch.zeros_like(rows)
    out[..., 1:] = rows[..., :-1]
    return out


def rows_to_tokens(capture: ForwardCapture, per_layer: list[torch.Tensor], head_reduce: HeadReduce,
                   query_position: QueryPosition) -> torch.Tensor:
    """Per-layer (B, H, T) row values -> (B, T) token values: reduce heads, mean over layers, move each row's
    value to the token it scores, zero off the response mask."""
    rows = torch.stack([reduce_heads(values, head_reduce) for values in per_layer]).mean(0)
    values = align_to_tokens(rows, query_position)
    mask = capture.batch.response_mask
    return torch.where(mask, values, torch.zeros_like(values)).float()


@register_signal("attention_entropy", requires=("attention",), cost="forward+attention")
def attention_entropy(
    capture: ForwardCapture,
    layers="middle",
    head_reduce: HeadReduce = "mean",
    query_position: QueryPosition = "predicting",
    normalize: Normalize = "log_context",
    sink: SinkMode = "include",
    backend: Backend = "lse",
    precision: Precision = "fp32",
) -> torch.Tensor:
    """Shannon entropy of the attention row that scores each response token (nats, or [0, 1] normalized)."""
    check_choice("head_reduce", head_reduce, HeadReduce, owner="attention_entropy")
    check_choice("query_position", query_position, QueryPosition, owner="attention_entropy")
    check_choice("normalize", normalize, Normalize, owner="attention_entropy")
    check_choice("sink", sink, SinkMode, owner="attention_entropy")
    check_choice("backend", backend, Backend, owner="attention_entropy")
    check_choice("precision", precision, Precision, owner="attention_entropy")
    chosen = resolve_layers(layers, capture.num_layers)
    missing = [layer for layer in chosen if layer not in capture.attention]
    if missing:
        raise ValueError(f"attention_entropy: layers {missing} were not recorded in this forward pass")
    per_layer = [normalized_entropy(capture.attention[layer], normalize, sink) for layer in chosen]
    return rows_to_tokens(capture, per_layer, head_reduce, query_position)
