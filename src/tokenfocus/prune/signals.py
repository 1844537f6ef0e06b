"""Pruning signals beyond TransPrune's (PRUNING_TOKENIZERS_MECHANISMS.md §A2, A3, A5), each a function of a model
and one prompt:

    information_map(runner, ids, layout, gold, layers, window)   A3: I[K, w] = p(gold | context window w kept from
        layer K on) - p(gold | no context from layer K on); O(layers x windows) forwards
    information_horizon(info, tol)       the first layer from which the map stays flat (every row's spread across
        windows below tol x the map's largest spread): beyond it, which tokens are kept hardly matters
    zeroth_order_sensitivity(g, x, m, h)  A2: mean_j ||g(x + h u_j) - g(x - h u_j)|| / 2h with the same random unit
        directions for every token; two batched passes of g, no backprop
    embedding_lens(vectors, embeddings, k)  A5: the k nearest vocabulary rows (cosine) of each input vector
    find_attractors(neighbours, share)   A5: the vocabulary ids nearest to more than ``share`` of the inputs
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .layout import TokenLayout
from .runner import LayerRunner

COST = {"information_map": "O(T)_passes", "zeroth_order_sensitivity": "k_passes", "embedding_lens": "one_pass",
        "transprune": "one_pass"}  # the cost classes of §0.2


def _gold_probability(runner: LayerRunner, ids, embeds, drops, gold: int) -> float:
    out = runner.run(ids, embeds, drops=drops, logits="last")
    return float(torch.softmax(out.logits[0, -1].float(), -1)[gold])


@torch.no_grad()
def information_map(runner: LayerRunner, layout: TokenLayout, gold: int, layers: list[int], window: int,
                    input_ids=None, inputs_embeds=None) -> dict:
    """The ablation-information map of one prompt: rows = ``layers`` K, columns = windows of ``window`` consecutive
    context positions; I[K, w] = p(gold | only window w of the context kept from layer K on) - p(gold | none of it
    kept). ``gold``: the answer's first token id, read at the last position. Returns {"info", "layers",
    "windows", "p_full", "p_none"}."""
    context = layout.require_pruneable("the information map")
    if window < 1:
        raise ValueError(f"window must be >= 1 context tokens, got {window}")
    for layer in layers:
        runner.check_layer(layer, "information-map layer")
    windows = [context[i:i + window] for i in range(0, len(context), window)]
    fixed = [p for p in range(len(layout)) if p not in set(context)]
    p_full = _gold_probability(runner, input_ids, inputs_embeds, None, gold)
    info = torch.zeros(len(layers), len(windows), dtype=torch.float64)
    p_none = []
    for row, layer in enumerate(layers):
        none = _gold_probability(runner, input_ids, inputs_embeds, {layer: fixed}, gold)
        p_none.append(none)
        for col, kept in enumerate(windows):
            info[row, col] = _gold_probability(runner, input_ids, inputs_embeds,
                                               {layer: sorted(fixed + kept)}, gold) - none
    return {"info": info, "layers": list(layers), "windows": windows, "p_full": p_full, "p_none": p_none}


def information_horizon(info: torch.Tensor, layers: list[int], tol: float = 0.1) -> int | None:
    """The first layer K from which every later row of the map is flat: its spread across windows (max - min) at
    most ``tol`` x the largest spread of any row [our default rule for "uniform, then vanishing"]. None: no
    such layer (the last row still tells windows apart)."""
    spread = (info.max(dim=1).values - info.min(dim=1).values).double()
    top = float(spread.max())
    if top == 0.0:
        return layers[0]
    flat = (spread <= tol * top).tolist()
    for index in range(len(layers)):
        if all(flat[index:]):
            return layers[index]
    return None


@torch.no_grad()
def zeroth_order_sensitivity(g: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, m: int = 64,
                             h: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """ZOO-Prune's sensitivity of each row of ``x`` (N, d) through the token-wise map ``g``: a central-difference
    estimate of ||J_g(x_i) u|| averaged over ``m`` random unit directions u, the same for every row. Warns when it
    is constant across rows (a linear g: then it carries no signal)."""
    if x.ndim != 2:
        raise ValueError(f"x must be (tokens, dim), got {tuple(x.shape)}")
    directions = torch.randn(m, x.shape[1], generator=generator, dtype=x.dtype).to(x.device)
    directions = directions / directions.norm(dim=1, keepdim=True)
    plus = g((x[:, None, :] + h * directions[None]).reshape(-1, x.shape[1]))
    minus = g((x[:, None, :] - h * directions[None]).reshape(-1, x.shape[1]))
    values = ((plus - minus).reshape(x.shape[0], m, -1).norm(dim=-1) / (2 * h)).mean(dim=1)
    if x.shape[0] > 1 and float(values.std()) <= 1e-3 * float(values.abs().mean() + 1e-12):  # rounding noise only
        warnings.warn("zeroth-order sensitivity is the same for every token: the map g looks linear (an embedding "
                      "lookup or a projection), so it cannot rank tokens; use a non-linear token-wise map (e.g. "
                      "layer 0's pre-norm -> MLP on text, the GELU projector of a vision-language model)",
                      stacklevel=2)
    return values


def text_map(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The non-linear token-wise map ZOO-Prune's sensitivity uses on text [spec default]: layer 0's pre-norm then
    its MLP, applied to embedding vectors."""
    from ..capture import find_decoder_layers

    layer = find_decoder_layers(model)[0]
    return lambda x: layer.mlp(layer.post_attention_layernorm(x))


@torch.no_grad()
def embedding_lens(vectors: torch.Tensor, embeddings: torch.Tensor, k: int = 3) -> torch.Tensor:
    """EmbedLens: the ids of the ``k`` vocabulary rows nearest (cosine) to each vector, (N, k), nearest first."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    rows = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return (unit @ rows.T).topk(k, dim=-1).indices


def find_attractors(neighbours: torch.Tensor, share: float = 0.10) -> list[int]:
    """Vocabulary ids that are the nearest neighbour of more than ``share`` of the inputs (a calibration set's
    lens, (N, k)): EmbedLens' sink and dead ids, found instead of hard-coded [our default rule]."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    nearest = neighbours[:, 0]
    ids, counts = nearest.unique(return_counts=True)
    return sorted(int(i) for i, c in zip(ids, counts) if c > share * len(nearest))


def lens_categories(neighbours: torch.Tensor, positions: list[int], attractors: list[int]) -> dict[int, str]:
    """{position: "dead" when its top-k neighbours include an attractor, else "alive"} (EmbedLens' partition; the
    automatic rule cannot tell a sink attractor from a dead one, so both read "dead" and are dropped alike)."""
    marked = set(attractors)
    return {p: "dead" if marked & set(map(int, row)) else "alive" for p, row in zip(positions, neighbours.tolist())}
