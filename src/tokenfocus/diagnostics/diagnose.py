"""One diagnosis of a generation batch: entropy dynamics and the gradient geometry of token subsets.

A pure function of tensors and callables, so any trainer can run it: ``logprobs_fn(rows)`` returns the (b, C)
log-probs of those rows with gradient through the current weights, ``params`` are the parameters whose gradient
is measured, ``logit_norm_fn(rows)`` (optional, no grad) the (b, C) ‖e_y − p‖ of ``token_proxy``. Subsets
(RL_TOKEN_CREDIT.md §1.5, §1.7): full, random, anchors, middle, explorers at ``config.ratio`` by attention
entropy, and (``config.matched``) random controls of anchors and explorers matched on relative position (C1) and
on predictive entropy (C5). Only prompt groups with unequal rewards are run (the others have an exactly zero
gradient), one forward per group and one backward per (group, subset); the middle by subtraction.

Per subset S, besides ``geometry``'s metrics: ``token_grad_proxy``, the mean over S's tokens of |A|·‖e_y − p‖
(the per-token gradient norm in logit space at ratio 1), and ``shared_prefix_fraction``, the share of S's tokens in
a prefix shared by the whole prompt group (their gradients cancel within a subset holding every copy).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..losses import clipped_surrogate
from ..policies import anchor_explorer_subsets, random_subset
from ..types import PolicyInputs
from .config import DiagnosticsConfig
from .controls import group_shared_prefix, matched_random, position_bins, quantile_bins
from .entropy_dynamics import entropy_dynamics
from .gradient_geometry import CountSketch, geometry, group_subset_gradients, informative_groups


def diagnosis_signals(config: DiagnosticsConfig) -> list:
    """The signal specs a diagnosis reads (their labels are the keys of ``inputs.signals``)."""
    return [{"name": "attention_entropy", "layers": config.layers}, "predictive_entropy",
            {"name": "attention_mass", "layers": config.layers, "keys": "prompt"}]


def matched_controls(subsets: dict[str, torch.Tensor], universe: torch.Tensor, inputs: PolicyInputs,
                     config: DiagnosticsConfig) -> dict[str, torch.Tensor]:
    """``<anchors|explorers>_position_matched`` (relative-position bins, C1) and ``..._pred_entropy_matched``
    (predictive-entropy quantile bins over ``universe``, C5): random subsets of ``universe`` of the same size."""
    by = {"position_matched": position_bins(inputs.mask, config.bins),
          "pred_entropy_matched": quantile_bins(inputs.signal("predictive_entropy"), universe, config.bins)}
    out = {}
    for i, name in enumerate(("anchors", "explorers")):
        for j, (control, bins) in enumerate(by.items()):
            out[f"{name}_{control}"] = matched_random(subsets[name], universe, bins, seed=config.seed + 1009 * (
                1 + 2 * i + j), step=inputs.step, run_seed=inputs.seed)
    return out


def _mean(values: torch.Tensor, subset: torch.Tensor) -> float:
    return float(values[subset].double().mean()) if subset.any() else float("nan")


def diagnose(config: DiagnosticsConfig, inputs: PolicyInputs, advantages: torch.Tensor, mask: torch.Tensor,
             logprobs_fn: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor], *,
             old_logprobs: torch.Tensor | None = None, correct: torch.Tensor | None = None,
             completion_ids: torch.Tensor | None = None,
             logit_norm_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
             epsilon_low: float = 0.2, epsilon_high: float = 0.28) -> dict[str, float]:
    """``diag/...`` metrics of one batch.

    inputs: (B, C) CPU signals of ``diagnosis_signals`` (attention_entropy, predictive_entropy,
    attention_mass), the valid mask and group ids; advantages (B,), mask (B, C) and old_logprobs on the
    model's device; correct: (B,) bool or None; completion_ids: (B, C) (for the shared prefixes; needed by
    ``config.unshared``); logit_norm_fn: rows -> (b, C) ‖e_y − p‖ (for ``token_grad_proxy``).
    """
    groups = inputs.group_ids
    sets = anchor_explorer_subsets(inputs, "attention_entropy", config.ratio, seed=config.seed)
    anchors, explorers = sets["anchors"], sets["explorers"]
    subsets = {"full": inputs.mask, "random": random_subset(inputs, config.ratio, seed=config.seed),
               "anchors": anchors, "middle": sets["middle"], "explorers": explorers}
    predictive = anchor_explorer_subsets(inputs, "predictive_entropy", config.ratio, seed=config.seed)
    metrics = entropy_dynamics(
        inputs.signals["attention_entropy"], inputs.mask, anchors, explorers, inputs.signals["predictive_entropy"],
        correct, predictive["anchors"], predictive["explorers"], mass=inputs.signals["attention_mass"])
    informative = informative_groups(advantages, groups)
    keep = torch.isin(groups, torch.tensor(informative, dtype=groups.dtype))[:, None]
    subsets = {k: v & keep for k, v in subsets.items()}
    universe = inputs.mask & keep
    if config.matched:
        subsets.update(matched_controls(subsets, universe, inputs, config))
    shared = None if completion_ids is None else group_shared_prefix(completion_ids.cpu(), inputs.mask, groups)
    # g_middle = g_full - g_anchors - g_explorers exactly (one normalizer): one backward saved per group.
    derived = {"middle": ("full", "anchors", "explorers")}
    if config.unshared:
        if shared is None:
            raise ValueError("config.unshared needs completion_ids (the shared prefixes are found from the tokens)")
        subsets.update({f"{k}_unshared": v & ~shared for k, v in list(subsets.items())})
        derived["middle_unshared"] = ("full_unshared", "anchors_unshared", "explorers_unshared")
    projector = CountSketch(config.project_dim, config.seed) if config.project_dim else None
    normalizer = float(mask.sum().clamp(min=1))
    grads: dict[str, dict[int, torch.Tensor]] = {k: {} for k in subsets if k not in derived}
    logit_norm = torch.zeros(inputs.mask.shape) if logit_norm_fn is not None and config.token_proxy else None
    for group in informative:
        # One forward per prompt group, so each (group, subset) backward runs through that group's rows
        # only (a row's loss depends on its own sequence alone: same gradients, ~B/G times less work).
        rows = (groups == group).nonzero().squeeze(-1).to(mask.device)
        if logit_norm is not None:
            logit_norm[rows.cpu()] = logit_norm_fn(rows).float().cpu()
        with torch.enable_grad():
            logps = logprobs_fn(rows)
            old = logps.detach() if old_logprobs is None else old_logprobs[rows]
            terms = clipped_surrogate(logps, old, advantages[rows], mask[rows], epsilon_low=epsilon_low,
                                      epsilon_high=epsilon_high).per_token
            computed = {k: v[rows.cpu()].to(terms.device).float() for k, v in subsets.items() if k in grads}
            part = group_subset_gradients(terms, normalizer, computed, groups[rows.cpu()].to(terms.device), params,
                                          projector, only=[group])
        for name, per_group in part.items():
            grads[name].update(per_group)
    for name, (whole, *parts) in derived.items():
        grads[name] = {g: grads[whole][g] - sum(grads[p][g] for p in parts) for g in grads[whole]}
    grads = {k: grads[k] for k in subsets}  # report in the subsets' order
    counts = {k: int(v.sum()) for k, v in subsets.items()}
    for result in geometry(grads, counts, bootstrap=config.bootstrap, seed=config.seed):
        for key, value in result.to_dict().items():
            if key != "name":
                metrics[f"diag/grad/{result.name}/{key}"] = float(value)
    if logit_norm is not None:
        magnitude = advantages.detach().float().cpu().abs()
        proxy = (magnitude[:, None] if magnitude.dim() == 1 else magnitude) * logit_norm * inputs.mask
        for name, subset in subsets.items():
            metrics[f"diag/grad/{name}/token_grad_proxy"] = _mean(proxy, subset)
    if shared is not None:
        for name, subset in subsets.items():
            if not name.endswith("_unshared"):  # 0 by construction there
                metrics[f"diag/grad/{name}/shared_prefix_fraction"] = _mean(shared.float(), subset)
    metrics["diag/informative_groups"] = float(len(informative))
    return metrics
