"""One diagnosis of a generation batch: entropy dynamics and the gradient geometry of token subsets.

A pure function of tensors and two callables, so any trainer can run it: ``logprobs_fn(rows)`` returns the
(b, C) log-probs of those rows with gradient through the current weights, ``params`` are the parameters
whose gradient is measured. Subsets (RL_TOKEN_CREDIT.md §1.7): full, random, anchors, middle, explorers at
``config.ratio`` by attention entropy; only prompt groups with unequal rewards are run (the others have an
exactly zero gradient), one forward per group.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..losses import clipped_surrogate
from ..policies import anchor_explorer_subsets, random_subset
from ..types import PolicyInputs
from .config import DiagnosticsConfig
from .entropy_dynamics import entropy_dynamics
from .gradient_geometry import CountSketch, geometry, group_subset_gradients, informative_groups


def diagnosis_signals(config: DiagnosticsConfig) -> list:
    """The signal specs a diagnosis reads (their labels are the keys of ``inputs.signals``)."""
    return [{"name": "attention_entropy", "layers": config.layers}, "predictive_entropy",
            {"name": "attention_mass", "layers": config.layers, "keys": "prompt"}]


def diagnose(config: DiagnosticsConfig, inputs: PolicyInputs, advantages: torch.Tensor, mask: torch.Tensor,
             logprobs_fn: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor], *,
             old_logprobs: torch.Tensor | None = None, correct: torch.Tensor | None = None,
             epsilon_low: float = 0.2, epsilon_high: float = 0.28) -> dict[str, float]:
    """``diag/...`` metrics of one batch.

    inputs: (B, C) CPU signals of ``diagnosis_signals`` (attention_entropy, predictive_entropy,
    attention_mass), the valid mask and group ids; advantages (B,), mask (B, C) and old_logprobs on the
    model's device; correct: (B,) bool or None.
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
    projector = CountSketch(config.project_dim, config.seed) if config.project_dim else None
    normalizer = float(mask.sum().clamp(min=1))
    grads: dict[str, dict[int, torch.Tensor]] = {k: {} for k in subsets if k != "middle"}
    for group in informative:
        # One forward per prompt group, so each (group, subset) backward runs through that group's rows
        # only (a row's loss depends on its own sequence alone: same gradients, ~B/G times less work).
        rows = (groups == group).nonzero().squeeze(-1).to(mask.device)
        with torch.enable_grad():
            logps = logprobs_fn(rows)
            old = logps.detach() if old_logprobs is None else old_logprobs[rows]
            terms = clipped_surrogate(logps, old, advantages[rows], mask[rows], epsilon_low=epsilon_low,
                                      epsilon_high=epsilon_high).per_token
            computed = {k: v[rows.cpu()].to(terms.device).float() for k, v in subsets.items() if k != "middle"}
            part = group_subset_gradients(terms, normalizer, computed, groups[rows.cpu()].to(terms.device), params,
                                          projector, only=[group])
        for name, per_group in part.items():
            grads[name].update(per_group)
    # g_middle = g_full - g_anchors - g_explorers exactly (one normalizer): one backward saved per group.
    grads["middle"] = {g: grads["full"][g] - grads["anchors"][g] - grads["explorers"][g] for g in grads["full"]}
    counts = {k: int(v.sum()) for k, v in subsets.items()}
    for result in geometry(grads, counts, bootstrap=config.bootstrap, seed=config.seed):
        for key, value in result.to_dict().items():
            if key != "name":
                metrics[f"diag/grad/{result.name}/{key}"] = float(value)
    metrics["diag/informative_groups"] = float(len(informative))
    return metrics
