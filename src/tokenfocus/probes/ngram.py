"""N-gram heads: per-head n-gram-match attention scores, the parameter-free NgramHead, and a tiny model trained
on in-context DFA languages (PRUNING_TOKENIZERS_MECHANISMS.md C5).

Paper: Akyurek et al., "In-Context Language Learning: Architectures and Algorithms", arXiv 2401.12973 (ICML 2024);
code github berlino/seq_icl. Transformers beat RNNs/SSMs at learning a language in context because they build
*n-gram heads*: query i attends to the earlier positions j whose n preceding tokens equal the n tokens ending at i,
i.e. to the token *after* each earlier occurrence of the current n-gram (n = 1 is the induction head).

Verified in ``src/models/sequence/rnn/ngram.py`` (``induction_head``, ``Ngram``): the match mask is
``tokens[j-n:j] == tokens[i-n+1:i+1]`` with j strictly before i (their causal mask has diagonal=-1, applied after
the shift), the head output is the uniform average of the matched positions' hidden states (0 where none), and
the layer is ``y = t0(head(x)) + t1(x)`` with two biased ``nn.Linear(d, d)``. ``self_match=True`` also admits
j = i (possible only inside a run of n+1 equal tokens). The DFA task and the in-context n-gram baseline are in
``dfa.py``; the accuracy is the paper's ``train.py::_get_dfa_accuracy``: the greedy next symbol is correct iff the
DFA accepts the current string extended by it; separators are not predicted, and position 0 is not scored.

Our additions and defaults:
- ``head_ngram_scores``: per (layer, head, n) the mean over eligible queries (>= 1 target) of the attention mass
  on the targets, next to the chance baseline mean(|targets_i| / n_visible_i) that uniform causal attention
  would score, and optionally the Pearson correlation of each row with the uniform-over-targets ideal (0 for a
  constant row). Padding: padded positions never match (they get distinct negative ids).
- ``train_icl_model``: a from-scratch llama (``build_tiny_llama``) trained with AdamW on fresh random DFAs every
  step (the paper uses a fixed set of 5000 DFAs and 200 epochs), a smaller task distribution so that it learns
  on one CPU thread in minutes, and linear warm-up then constant lr (the paper: cosine, lr 5e-4, wd 0.1).

Cost: ``head_ngram_scores`` is one eager forward with ``output_attentions`` (L x B x H x T x T floats) plus
O(N B T^2) for the target masks, hence the T <= 512 limit. ``NgramHead`` is O(n B T^2 + B T^2 d).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

# The in-context tasks and the tiny trained model live in icl.py; re-exported here, where callers import them from.
from .icl import (  # noqa: F401
    SEP,
    DfaBatch,
    IclAccuracy,
    TrainLog,
    dfa_token_sequences,
    icl_accuracy,
    symbol_token_ids,
    train_icl_model,
    walk_token_sequences,
)

MAX_TOKENS = 512


def ngram_targets(tokens: torch.Tensor, n: int, *, self_match: bool = False) -> torch.Tensor:
    """(T,) or (B, T) ids -> (T, T) / (B, T, T) bool: [i, j] is True iff tokens[j-n:j] == tokens[i-n+1:i+1] and
    j < i (j <= i with ``self_match``); attention goes to the token after the match."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: the n-gram length must be an int >= 1 (n=1 is the induction-head pattern)")
    if tokens.dim() not in (1, 2) or tokens.shape[-1] == 0 or tokens.is_floating_point():
        raise ValueError(f"tokens must be a non-empty (T,) or (B, T) integer tensor, got {tuple(tokens.shape)} "
                         f"{tokens.dtype}")
    ids = tokens if tokens.dim() == 2 else tokens[None]
    t = ids.shape[-1]
    equal = ids[:, :, None] == ids[:, None, :]  # (B, T, T): x_i == x_j
    match = torch.ones_like(equal)
    for k in range(n):  # match[i, j] &= x_{i-k} == x_{j-1-k}; out-of-range positions never match
        shifted = torch.zeros_like(equal)
        shifted[:, k:, k + 1:] = equal[:, : t - k, : t - k - 1]
        match &= shifted
    match &= torch.ones(t, t, dtype=torch.bool, device=ids.device).tril(0 if self_match else -1)
    return match if tokens.dim() == 2 else match[0]


# --------------------------------------------------------------------------------------------------------------
# Per-head scores


@dataclass
class NgramScores:
    """mass: (L, H, N) mean attention on the n-gram targets over eligible queries; baseline: (N,) the same for
    uniform causal attention; correlation: (L, H, N) mean Pearson r with the ideal rows, or None; eligible: (N,)
    number of eligible queries; top[n]: the ``top_k`` heads by mass as (name "L{l}.H{h}", mass)."""

    n_values: tuple[int, ...]
    mass: torch.Tensor
    baseline: torch.Tensor
    correlation: torch.Tensor | None
    eligible: list[int]
    top: dict[int, list[tuple[str, float]]] = field(default_factory=dict)

    def best(self, n: int) -> tuple[int, int, float]:
        """(layer, head, mass) of the head with the most mass on the n-gram targets."""
        flat = self.mass[:, :, self.n_values.index(n)]
        index = int(flat.argmax())
        return index // flat.shape[1], index % flat.shape[1], float(flat.max())

    def to_json(self) -> dict:
        def head(name: str, mass: float, k: int) -> dict:
            layer, h = (int(part[1:]) for part in name.split("."))
            row = {"head": name, "mass": round(mass, 4)}
            if self.correlation is not None:
                row["correlation"] = round(float(self.correlation[layer, h, k]), 4)
            return row

        return {
            "n_values": list(self.n_values),
            "baseline": {str(n): round(float(b), 4) for n, b in zip(self.n_values, self.baseline)},
            "eligible": {str(n): e for n, e in zip(self.n_values, self.eligible)},
            "top": {str(n): [head(name, m, k) for name, m in self.top[n]] for k, n in enumerate(self.n_values)},
            "mass": [[[round(float(v), 4) for v in h] for h in layer] for layer in self.mass],
            "correlation": None if self.correlation is None else
            [[[round(float(v), 4) for v in h] for h in layer] for layer in self.correlation],
        }


def head_ngram_scores(
    model: nn.Module, input_ids: torch.Tensor, n_values: Sequence[int] = (1, 2, 3),
    attention_mask: torch.Tensor | None = None, *, top_k: int = 5, correlation: bool = True,
    self_match: bool = False,
) -> NgramScores:
    """Score every head's attention against the n-gram targets of ``input_ids`` (B, T) (module docstring).

    Confound: on blocks of one length P repeated, "attend P - 1 back" hits every target by position alone (a tiny
    llama trained on period-16 repeats learns exactly that head); score several periods, or DFA sequences."""
    n_values = tuple(n_values)
    if not n_values or any(not isinstance(n, int) or n < 1 for n in n_values):
        raise ValueError(f"n_values={n_values!r}: give one or more ints >= 1, e.g. (1, 2, 3)")
    if input_ids.dim() != 2 or input_ids.numel() == 0 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be (B, T) with B >= 1 and T >= 2, got {tuple(input_ids.shape)}")
    if input_ids.shape[1] > MAX_TOKENS:
        raise ValueError(f"T={input_ids.shape[1]} > {MAX_TOKENS}: this probe materializes T x T attention per layer; "
                         "score shorter sequences (e.g. repeated_random_tokens(..., length=64, repeats=2))")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    t = input_ids.shape[1]
    positions = torch.arange(t, device=input_ids.device)
    keyed = torch.where(mask, input_ids, -1 - positions)  # padding gets distinct negative ids: it never matches
    targets = torch.stack([ngram_targets(keyed, n, self_match=self_match) for n in n_values])  # (N, B, T, T)
    eligible = targets.any(-1)  # (N, B, T)
    counts = eligible.sum((1, 2))
    if (counts == 0).any():
        missing = [n for n, c in zip(n_values, counts) if c == 0]
        raise ValueError(f"no query has an n-gram match for n={missing}: the sequences never repeat an n-gram; use "
                         "repeated sequences (repeated_random_tokens) or drop those n")
    visible = mask[:, None, :] & torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()  # (B, T, T)
    chance = targets.sum(-1) / visible.sum(-1).clamp_min(1)  # (N, B, T)
    baseline = (chance * eligible).sum((1, 2)) / counts

    attentions = _eager_attentions(model, input_ids, mask)
    ideal = targets.double() / targets.sum(-1, keepdim=True).clamp_min(1)  # (N, B, T, T) uniform over targets
    mass, corr = [], []
    for attn in attentions:
        probs = attn.double()  # (B, H, T, T)
        rows = torch.einsum("bhij,nbij->nbhi", probs, targets.double())  # (N, B, H, T)
        mass.append((rows * eligible[:, :, None]).sum((1, 3)) / counts[:, None])  # (N, H)
        if correlation:
            r = _row_pearson(probs[None], ideal[:, :, None], visible[None, :, None])  # (N, B, H, T)
            corr.append((r * eligible[:, :, None]).sum((1, 3)) / counts[:, None])
    mass_t = torch.stack(mass).permute(0, 2, 1).float()  # (L, H, N)
    corr_t = torch.stack(corr).permute(0, 2, 1).float() if correlation else None
    top = {}
    for k, n in enumerate(n_values):
        order = mass_t[:, :, k].flatten().argsort(descending=True)[:top_k]
        heads = mass_t.shape[1]
        top[n] = [(f"L{int(i) // heads}.H{int(i) % heads}", float(mass_t[int(i) // heads, int(i) % heads, k]))
                  for i in order]
    return NgramScores(n_values, mass_t, baseline.float(), corr_t, [int(c) for c in counts], top)


def _eager_attentions(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One forward under eager attention (restored afterwards) -> per layer (B, H, T, T) probabilities."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)  # left padding keeps RoPE positions right
            out = model(input_ids=input_ids, attention_mask=mask.long(), position_ids=position_ids,
                        output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    return out.attentions


def _row_pearson(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Pearson r along the last dim over the ``keep`` entries; 0 where either side is constant."""
    keep = keep.double()
    m = keep.sum(-1, keepdim=True).clamp_min(1)
    dx = (x - (x * keep).sum(-1, keepdim=True) / m) * keep
    dy = (y - (y * keep).sum(-1, keepdim=True) / m) * keep
    denom = ((dx * dx).sum(-1) * (dy * dy).sum(-1)).sqrt()
    return torch.where(denom > 1e-12, (dx * dy).sum(-1) / denom.clamp_min(1e-12), torch.zeros_like(denom))


# --------------------------------------------------------------------------------------------------------------
# Probe sequences


def repeated_random_tokens(
    vocab_ids: int | Sequence[int] | torch.Tensor, length: int, repeats: int, seed: int, *, batch: int = 1,
    bos_id: int | None = None,
) -> torch.Tensor:
    """(batch, [1 +] length * repeats) ids: per row a block of ``length`` distinct ids drawn from ``vocab_ids``
    (an int k means 0..k-1), repeated ``repeats`` times, after ``bos_id`` when given (the classic induction probe)."""
    pool = torch.arange(vocab_ids) if isinstance(vocab_ids, int) else torch.as_tensor(vocab_ids).flatten().long()
    if length < 1 or repeats < 1 or batch < 1 or len(pool) < length:
        raise ValueError(f"need length, repeats, batch >= 1 and at least `length` candidate ids; got length={length}, "
                         f"repeats={repeats}, batch={batch}, {len(pool)} ids")
    g = torch.Generator().manual_seed(seed)
    blocks = torch.stack([pool[torch.randperm(len(pool), generator=g)[:length]] for _ in range(batch)])  # (B, length)
    ids = blocks.repeat(1, repeats)
    if bos_id is not None:
        ids = torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long), ids], dim=1)
    return ids


# --------------------------------------------------------------------------------------------------------------
# The parameter-free n-gram head and layer


class NgramHead(nn.Module):
    """output_i = mean of x_j over the ``ngram_targets`` j of position i (0 where none); no parameters."""

    def __init__(self, n: int, self_match: bool = False):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}: the n-gram length must be an int >= 1")
        self.n, self.self_match = n, self_match

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or tokens.shape != x.shape[:2]:
            raise ValueError(f"x must be (B, T, d) and tokens (B, T); got {tuple(x.shape)} and {tuple(tokens.shape)}")
        targets = ngram_targets(tokens, self.n, self_match=self.self_match).to(x.dtype)  # (B, T, T)
        weights = targets / targets.sum(-1, keepdim=True).clamp_min(1)
        return weights @ x  # (B, T, d)


class NgramLayer(nn.Module):
    """y = W0 ngram_head(x) + W1 x (seq_icl's ``Ngram``: two biased d x d linears)."""

    def __init__(self, d: int, n: int = 1, self_match: bool = False):
        super().__init__()
        self.head = NgramHead(n, self_match)
        self.w0, self.w1 = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.w0(self.head(x, tokens)) + self.w1(x)
