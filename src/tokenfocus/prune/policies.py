"""Pruning policies: which positions of the pruneable segment to keep at a budget (PRUNING_TOKENIZERS_MECHANISMS.md
§0.6). Every policy returns the sorted original positions kept: all positions outside the pruneable segment (the
sink, protected positions, the query, the template) plus the chosen pruneable ones.

    keep_count(layout, budget)                 budget = the kept fraction of the pruneable segment, in (0, 1]
    topk(layout, scores, budget)               the highest scores (TransPrune, relevance, information)
    random_keep(layout, budget, generator)     the baseline every result is reported beside, at the same budget
    divprune(layout, features, budget)         max-min diversity of the features (cosine distance)
    sads(layout, features, sensitivity, budget)   ZOO-Prune: max-min distance x normalized sensitivity
    drop_categories(layout, categories)        EmbedLens: drop sink / dead tokens, keep alive ones
    progressive(layers, ratios, score_fn)      {layer: callable}: a drop schedule for LayerRunner
    random_beyond(layers, ratios, horizon, early)   a method before the information horizon, random from it on
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch

from .layout import TokenLayout


def check_budget(budget: float) -> None:
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0 < budget <= 1:
        raise ValueError(f"a budget is the kept fraction of the pruneable segment, in (0, 1]; got {budget!r}")


def keep_count(layout: TokenLayout, budget: float) -> int:
    """How many pruneable positions a budget keeps: round(budget x n), at least one."""
    check_budget(budget)
    n = len(layout.require_pruneable())
    return max(1, min(n, round(budget * n)))


def _with_fixed(layout: TokenLayout, chosen) -> list[int]:
    pruneable = set(layout.pruneable)
    return sorted({p for p in range(len(layout)) if p not in pruneable} | {int(p) for p in chosen})


def _scores_of(layout: TokenLayout, scores: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    candidates = layout.require_pruneable()
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if scores.numel() != len(layout):
        raise ValueError(f"scores cover {scores.numel()} positions, the layout {len(layout)}; score every position "
                         "(positions outside the pruneable segment are ignored)")
    return candidates, scores[candidates]


def topk(layout: TokenLayout, scores, budget: float) -> list[int]:
    """The pruneable positions with the highest scores (ties: the earlier position), plus every fixed position."""
    candidates, values = _scores_of(layout, scores)
    count = keep_count(layout, budget)
    order = sorted(range(len(candidates)), key=lambda i: (-float(values[i]), candidates[i]))
    return _with_fixed(layout, [candidates[i] for i in order[:count]])


def random_keep(layout: TokenLayout, budget: float, generator: torch.Generator | None = None) -> list[int]:
    """Uniformly random pruneable positions at the budget (the baseline of every comparison, after A3)."""
    candidates = layout.require_pruneable()
    count = keep_count(layout, budget)
    picked = torch.randperm(len(candidates), generator=generator)[:count].tolist()
    return _with_fixed(layout, [candidates[i] for i in picked])


def _distances(layout: TokenLayout, features: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    candidates = layout.require_pruneable()
    features = torch.as_tensor(features, dtype=torch.float64)
    if features.ndim != 2 or features.shape[0] != len(layout):
        raise ValueError(f"features must be (positions, dim) with {len(layout)} positions, got {tuple(features.shape)}")
    normed = torch.nn.functional.normalize(features[candidates], dim=-1)
    return candidates, 1.0 - normed @ normed.T  # cosine distance between candidates


def _greedy_max_min(distance: torch.Tensor, weight: torch.Tensor, first: int, count: int) -> list[int]:
    chosen = [first]
    nearest = distance[first].clone()  # each candidate's distance to the chosen set
    for _ in range(count - 1):
        value = nearest * weight
        value[chosen] = -float("inf")
        pick = int(torch.argmax(value))
        chosen.append(pick)
        nearest = torch.minimum(nearest, distance[pick])
    return chosen


def divprune(layout: TokenLayout, features, budget: float) -> list[int]:
    """DivPrune: greedy max-min diversity over the candidates' features (cosine distance). First pick: the most
    isolated candidate (largest distance to its nearest other one) [our default]; then each pick maximizes its
    distance to the nearest chosen one."""
    candidates, distance = _distances(layout, features)
    count = keep_count(layout, budget)
    others = distance + torch.eye(len(candidates), dtype=distance.dtype) * 4.0  # a candidate is not its own neighbour
    first = int(torch.argmax(others.min(dim=1).values)) if len(candidates) > 1 else 0
    chosen = _greedy_max_min(distance, torch.ones(len(candidates), dtype=distance.dtype), first, count)
    return _with_fixed(layout, [candidates[i] for i in chosen])


def sads(layout: TokenLayout, features, sensitivity, budget: float) -> list[int]:
    """ZOO-Prune's Sensitivity-Aware Diverse Selection: sensitivity min-max normalized to [0, 1]; first pick its
    argmax; each next pick maximizes (distance to the nearest chosen one) x its normalized sensitivity."""
    candidates, distance = _distances(layout, features)
    _, s = _scores_of(layout, sensitivity)
    span = float(s.max() - s.min())
    s = (s - s.min()) / span if span > 0 else torch.ones_like(s)
    chosen = _greedy_max_min(distance, s, int(torch.argmax(s)), keep_count(layout, budget))
    return _with_fixed(layout, [candidates[i] for i in chosen])


def drop_categories(layout: TokenLayout, categories: dict[int, str], drop=("sink", "dead")) -> list[int]:
    """EmbedLens: drop the pruneable positions whose category is in ``drop`` (the sink position itself is kept)."""
    candidates = layout.require_pruneable()
    return _with_fixed(layout, [p for p in candidates if categories.get(p, "alive") not in drop])


def _schedule(layout: TokenLayout, layers: list[int], ratios: list[float],
              choose: Callable[[object, TokenLayout, float, int], list[int]]) -> dict[int, Callable]:
    """{layer: drop(state)}: before each of ``layers`` keep ``ratios[i]`` of the ORIGINAL pruneable segment, chosen
    by ``choose(state, current layout, fraction of what remains, layer)`` (positions of the current layout)."""
    if len(layers) != len(ratios) or not layers:
        raise ValueError(f"a pruning schedule needs one ratio per layer; got layers {layers} and ratios {ratios}")
    if list(layers) != sorted(set(layers)):
        raise ValueError(f"pruning layers must increase, got {layers}")
    for ratio in ratios:
        check_budget(ratio)
    if any(b > a for a, b in pairwise(ratios)):
        raise ValueError(f"progressive ratios keep fewer tokens layer after layer; got {ratios}")
    total = len(layout.require_pruneable())

    def step(layer, ratio):
        def drop(state):
            current = layout.kept(state.kept)
            remaining = len(current.pruneable)
            if not remaining:
                return list(state.kept)
            fraction = min(1.0, max(1, round(ratio * total)) / remaining)
            return [state.kept[i] for i in choose(state, current, fraction, layer)]

        return drop

    return {layer: step(layer, ratio) for layer, ratio in zip(layers, ratios)}


def progressive(layout: TokenLayout, layers: list[int], ratios: list[float],
                score_fn: Callable[[object, TokenLayout], torch.Tensor]) -> dict[int, Callable]:
    """A LayerRunner drop schedule: before each of ``layers``, keep ``ratios[i]`` of the ORIGINAL pruneable segment
    (TransPrune's image_token_ratio_list), chosen by ``score_fn(state, current layout)`` (scores of the positions
    still there) with ``topk``. Ratios must not increase."""
    return _schedule(layout, layers, ratios,
                     lambda state, current, fraction, layer: topk(current, score_fn(state, current), fraction))


def random_beyond(layout: TokenLayout, layers: list[int], ratios: list[float], horizon: int,
                  early: Callable[[object, TokenLayout, float], list[int]],
                  generator: torch.Generator | None = None) -> dict[int, Callable]:
    """The information horizon's recipe (arXiv 2512.07580, A3): a drop schedule that prunes with a method before
    layer ``horizon`` and randomly from it on ("DivPrune + random"). ``early(state, current layout, fraction)``
    returns the kept positions of the current layout, e.g. ``lambda s, c, f: divprune(c, s.hidden[0], f)``; the
    random drops draw from ``generator``. Ratios as in ``progressive`` (of the original segment, not increasing)."""
    def choose(state, current, fraction, layer):
        if layer < horizon:
            return early(state, current, fraction)
        return random_keep(current, fraction, generator)

    return _schedule(layout, layers, ratios, choose)
