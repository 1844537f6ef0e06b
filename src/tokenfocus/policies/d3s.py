"""D3S dynamic dual-level down-sampling (RL_TOKEN_CREDIT.md §10).

Paper: "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for Efficient Policy
Optimization", arXiv 2509.22115 (ICLR 2026).

Sample level: keep the N rollouts whose advantages have the largest variance. The maximizing subset of a
fixed size is the j smallest plus the N - j largest values for some j, so sort once and scan j (exact,
O(G log G)); ties by index. Per group (scope="group"), or pooled over the batch without renormalizing
(cross_group=True, the D3S default; zero-advantage groups then drop out).
Token level: key = |A| * H (H = predictive entropy by default), keep the top K% of valid tokens of the
scope. Schedule: [N(p), K(p)] = (1 - p) [N_init, K_init] + p [N_final, K_final]; defaults K 0.2 -> 1.0,
N 0.5 G -> G [our default; the paper's values were not recovered].
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..types import PolicyInputs, PolicyOutput
from .registry import register_policy
from .scope import ceil_count, check_ratio, select_exact, unit_ids


def max_variance_subset(values: torch.Tensor, n: int) -> torch.Tensor:
    """Bool (G,): the size-n subset of ``values`` with the largest (population) variance; ties by index."""
    g = values.numel()
    n = max(0, min(n, g))
    chosen = torch.zeros(g, dtype=torch.bool, device=values.device)
    if n == 0:
        return chosen
    order = torch.argsort(values.double(), stable=True)
    ordered = values.double()[order]
    best, best_j = -1.0, 0
    for j in range(n + 1):  # j smallest + (n - j) largest
        subset = torch.cat([ordered[:j], ordered[g - (n - j):]])
        variance = float(subset.var(unbiased=False)) if subset.numel() else 0.0
        if variance > best + 1e-12:
            best, best_j = variance, j
    chosen[order[:best_j]] = True
    chosen[order[g - (n - best_j):]] = True
    return chosen


def _row_advantages(inputs: PolicyInputs) -> torch.Tensor:
    if inputs.advantages is None:
        raise ValueError("d3s policies need advantages (one per row, or per token)")
    a = inputs.advantages
    if a.dim() == 2:  # per-token advantages: the row's value is its mean over valid tokens
        a = (a * inputs.mask).sum(-1) / inputs.mask.sum(-1).clamp(min=1)
    return a


def kept_rollouts(
    inputs: PolicyInputs,
    n_init: float = 0.5,
    n_final: float = 1.0,
    cross_group: bool = True,
) -> tuple[torch.Tensor, float]:
    """(B,) bool rows kept at the rollout level and the fraction N(p): from the advantages alone (no signal)."""
    check_ratio(n_init)
    check_ratio(n_final)
    fraction = (1 - inputs.progress) * n_init + inputs.progress * n_final
    advantages = _row_advantages(inputs)
    keep = torch.zeros_like(advantages, dtype=torch.bool)
    units = unit_ids(inputs, "batch" if cross_group else "group")
    for unit in units.unique().tolist():
        rows = (units == unit).nonzero().flatten()
        keep[rows] = max_variance_subset(advantages[rows], ceil_count(fraction, rows.numel()))
    return keep, fraction


ROLLOUT_OPTIONS = ("n_init", "n_final", "cross_group")


def has_rows_before_forward(spec) -> bool:
    """Whether a parsed policy ``spec`` decides rows from the advantages alone (``rows_before_forward``)."""
    return spec.entry.name in ("d3s", "d3s_samples")


def rows_before_forward(spec, inputs: PolicyInputs) -> torch.Tensor | None:
    """(B,) bool: the only rows a parsed policy ``spec`` can give weight, decided from the advantages before any
    forward (D3S's rollout level; ``inputs.signals`` may be empty); None when the policy has no such stage. A trainer
    may then skip the other rows' forward and backward: their weights are zero, so the loss is the same."""
    if not has_rows_before_forward(spec):
        return None
    return kept_rollouts(inputs, **{k: v for k, v in spec.options.items() if k in ROLLOUT_OPTIONS})[0]


@register_policy("d3s_samples")
def d3s_samples(
    inputs: PolicyInputs,
    n_init: float = 0.5,
    n_final: float = 1.0,
    cross_group: bool = True,
) -> PolicyOutput:
    """Keep the rollouts that maximize advantage variance (fraction N(p) of each group, or of the batch)."""
    keep, fraction = kept_rollouts(inputs, n_init, n_final, cross_group)
    weights = (inputs.mask & keep[:, None]).float()
    return PolicyOutput(weights, {"sample_fraction": float(keep.double().mean()), "n_fraction": fraction})


@register_policy("d3s_tokens")
def d3s_tokens(
    inputs: PolicyInputs,
    signal: str = "predictive_entropy",
    k_init: float = 0.2,
    k_final: float = 1.0,
    scope: str = "batch",
    seed: int = 0,
) -> PolicyOutput:
    """Top K(p) of valid tokens by |A| * signal (predictive entropy, or attention entropy as a variant)."""
    advantages = inputs.advantages
    if advantages is None:
        raise ValueError("d3s_tokens needs advantages (one per row, or per token)")
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(inputs.mask)
    ratio = (1 - inputs.progress) * k_init + inputs.progress * k_final
    key = advantages.abs().double() * inputs.signal(signal).double()
    selected = select_exact(key, inputs, ratio, "high", scope, seed)
    return PolicyOutput(selected.float(), {"k_fraction": ratio})


@register_policy("d3s")
def d3s(
    inputs: PolicyInputs,
    signal: str = "predictive_entropy",
    n_init: float = 0.5,
    n_final: float = 1.0,
    cross_group: bool = True,
    k_init: float = 0.2,
    k_final: float = 1.0,
    scope: str = "batch",
    seed: int = 0,
) -> PolicyOutput:
    """Dual level (D3S): max-variance rollouts first, then the top K(p) tokens by |A| * signal among them."""
    samples = d3s_samples(inputs, n_init, n_final, cross_group)
    kept_rows = samples.weights.sum(-1) > 0
    restricted = replace(inputs, mask=inputs.mask & kept_rows[:, None])
    tokens = d3s_tokens(restricted, signal, k_init, k_final, scope, seed)
    return PolicyOutput(tokens.weights, {**samples.stats, **tokens.stats})
