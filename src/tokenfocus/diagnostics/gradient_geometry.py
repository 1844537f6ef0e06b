"""Gradient geometry of token subsets (RL_TOKEN_CREDIT.md §1.7; "Not All Tokens Learn Alike", arXiv 2605.07660).

For subsets S of the valid tokens (full, random, anchors, middle, explorers, controls), g_S = ∇θ L_S where
L_S = Σ_{t∈S} ℓ_t / Z with the *same* all-token normalizer Z for every subset, so gradients add over a
partition: g_anchors + g_middle + g_explorers = g_full. Reported per subset:

    norm ‖g_S‖ (and per selected token ‖g_S‖ / N_S);  alignment cos(g_S, g_full);
    projection share ⟨g_S, g_full⟩ / ‖g_full‖² (sums to 1 over a partition);
    split-half volatility 1 − cos(g_S^A, g_S^B) over a random split of prompt groups;
    bootstrap spread: mean ± std of cos(g_S, g_full) over groups resampled with replacement.

Because L_S is linear in the per-token terms with a fixed Z, g_S is the sum of its per-group gradients:
one backward per (group, subset) gives every batch-level, half and bootstrap quantity by summation.
Parameters: all trainable except the input embedding / tied LM head by default; gradients may be
count-sketch projected to ``project_dim`` (a seeded sign and bucket per coordinate, generated per tensor,
never one matrix) — inner products and norms are preserved in expectation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class SubsetGeometry:
    name: str
    n_tokens: int
    norm: float
    norm_per_token: float
    cos_full: float
    projection_share: float
    split_half_volatility: float
    bootstrap_cos_mean: float
    bootstrap_cos_std: float

    def to_dict(self) -> dict:
        return asdict(self)


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-30) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=eps))


def trainable_parameters(model, exclude_embeddings: bool = True) -> list[tuple[str, torch.nn.Parameter]]:
    embedding = model.get_input_embeddings().weight
    return [(n, p) for n, p in model.named_parameters()
            if p.requires_grad and not (exclude_embeddings and p is embedding)]


class CountSketch:
    """Seeded count-sketch projection of a list of tensors to ``dim`` coordinates (linear in the input)."""

    def __init__(self, dim: int, seed: int = 0):
        self.dim = dim
        self.seed = seed
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _plan(self, index: int, numel: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (index, numel)
        if key not in self._cache:
            g = torch.Generator().manual_seed(self.seed * 100_003 + index)
            buckets = torch.randint(0, self.dim, (numel,), generator=g)
            signs = torch.randint(0, 2, (numel,), generator=g).float() * 2 - 1
            self._cache[key] = (buckets.to(device), signs.to(device))
        return self._cache[key]

    def __call__(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(self.dim, dtype=torch.float64, device=tensors[0].device)
        for i, tensor in enumerate(tensors):
            flat = tensor.reshape(-1)
            buckets, signs = self._plan(i, flat.numel(), flat.device)
            out.index_add_(0, buckets, (flat.double() * signs))
        return out


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def informative_groups(advantages: torch.Tensor, group_ids: torch.Tensor) -> list[int]:
    """Prompt groups with at least one non-zero advantage (the others give an exactly zero policy gradient)."""
    nonzero = advantages.detach().reshape(len(group_ids), -1).abs().amax(-1) > 0
    return sorted(int(g) for g in group_ids[nonzero.to(group_ids.device)].unique().tolist())


def group_subset_gradients(per_token_loss: torch.Tensor, normalizer: float, subsets: dict[str, torch.Tensor],
                           group_ids: torch.Tensor, params: list[torch.Tensor],
                           projector: CountSketch | None = None,
                           only: list[int] | None = None) -> dict[str, dict[int, torch.Tensor]]:
    """Per (subset, group): the gradient vector of Σ_{t ∈ S ∩ group} ℓ_t / normalizer.

    per_token_loss: (B, T) with grad; subsets: name -> (B, T) 0/1 (or weights) masks, already zero off the
    valid tokens; group_ids: (B,); only: restrict to these groups (e.g. ``informative_groups``). One
    backward per (subset, group) through a shared graph.
    """
    out: dict[str, dict[int, torch.Tensor]] = {name: {} for name in subsets}
    groups = group_ids.unique().tolist() if only is None else list(only)
    jobs = [(name, g) for name in subsets for g in groups]
    for i, (name, group) in enumerate(jobs):
        rows = (group_ids == group).to(per_token_loss.device)
        weights = subsets[name] * rows[:, None]
        loss = (per_token_loss * weights.to(per_token_loss.dtype)).sum() / normalizer
        grads = torch.autograd.grad(loss, params, retain_graph=i < len(jobs) - 1, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        out[name][group] = projector(grads) if projector is not None else flatten(grads)
    return out


def geometry(group_grads: dict[str, dict[int, torch.Tensor]], counts: dict[str, int], full: str = "full",
             bootstrap: int = 8, seed: int = 0) -> list[SubsetGeometry]:
    """Subset metrics from per-group gradients (see the module docstring)."""
    groups = sorted(next(iter(group_grads.values())))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(groups), generator=g).tolist()
    half_a = [groups[i] for i in order[: len(groups) // 2]]
    half_b = [groups[i] for i in order[len(groups) // 2:]]
    resamples = [torch.randint(0, len(groups), (len(groups),), generator=g).tolist() for _ in range(bootstrap)]

    def total(name, members):
        return sum((group_grads[name][m] for m in members), torch.zeros_like(group_grads[name][groups[0]]))

    g_full = total(full, groups)
    full_sq = float(g_full @ g_full)
    results = []
    for name in group_grads:
        g_s = total(name, groups)
        norm = float(g_s.norm())
        volatility = 1.0 - cosine(total(name, half_a), total(name, half_b)) if half_a and half_b else float("nan")
        boot = [cosine(total(name, [groups[i] for i in r]), total(full, [groups[i] for i in r])) for r in resamples]
        boot_t = torch.tensor(boot, dtype=torch.float64) if boot else torch.tensor([float("nan")])
        results.append(SubsetGeometry(
            name=name, n_tokens=counts[name], norm=norm, norm_per_token=norm / max(1, counts[name]),
            cos_full=cosine(g_s, g_full), projection_share=float(g_s @ g_full) / full_sq if full_sq > 0 else 0.0,
            split_half_volatility=volatility, bootstrap_cos_mean=float(boot_t.mean()),
            bootstrap_cos_std=float(boot_t.std(unbiased=False)) if len(boot) > 1 else 0.0,
        ))
    return results
