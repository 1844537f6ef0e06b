"""Function tokens: the frequency partition, the 4-way loss decomposition, and steering (C1).

Paper: "Memory Retrieval and Consolidation in Large Language Models through Function Tokens", arXiv 2510.08203
(ByteDance Seed; no code found; the details below are from a full-text copy [secondary]).

- **Partition** [paper]: sort the vocabulary by frequency on a reference text collection and take the most
  frequent tokens until they cover ``coverage`` = 40 % of all token occurrences: the *function tokens*; every
  other token is a *content token*. Document coverage (the share of documents containing the token) is also
  reported. Our collection [our default]: GSM8K plus the package's generated task texts.
- **Loss decomposition** [paper, measured there during pre-training]: each next-token loss
  ``-log p(x_t | x_<t)`` is filed under (type of x_{t-1}) -> (type of x_t): F->F, F->C, C->F, C->C. The paper finds
  F->C the largest and dominating optimization. One forward; the loss of token t is stored at t (alignment
  contract) and its pair read from t-1 and t.
- **Steering** [our default, a reduced form]: the paper adds SAE feature directions at the prompt's *final
  function token*. We add a mean-difference direction (mean layer-l output of concept-A prompts minus concept-B
  prompts, at each prompt's last token) times ``alpha`` at one position of a neutral prompt -- its last function
  token, or its last content token -- and measure the shift of the next-token log-odds of concept-A words
  against concept-B words at the end of the prompt.

Cost: the partition is a tokenizer pass; the decomposition one forward (LM head in position chunks); steering one
forward per prompt and placement.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..capture import capture, find_decoder_layers
from ..signals._vocab import chunked_logprobs_entropy
from ..signals.function_token import FunctionPartition

PAIRS = ("F->F", "F->C", "C->F", "C->C")


def function_partition(tokenizer, texts: Sequence[str], coverage: float = 0.4) -> FunctionPartition:
    """The most frequent tokens of ``texts`` (no special tokens added) covering ``coverage`` of all occurrences."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage is a share of token occurrences in (0, 1), got {coverage} (the paper: 0.4)")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("the text collection is empty; pass at least one non-empty text")
    counts: Counter = Counter()
    in_docs: Counter = Counter()
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts.update(ids)
        in_docs.update(set(ids))
    total = sum(counts.values())
    ids, share, covered = [], [], 0
    for token, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if covered >= coverage * total:
            break
        ids.append(int(token))
        share.append(count / total)
        covered += count
    documents = [in_docs[t] / len(texts) for t in ids]
    return FunctionPartition(ids, share, documents, covered / total, total, len(texts), len(tokenizer),
                             getattr(tokenizer, "name_or_path", ""))


@dataclass
class LossDecomposition:
    """Mean next-token loss (nats) and counts per (previous type) -> (next type) pair, and each pair's share of
    the summed loss."""

    mean: dict[str, float]
    count: dict[str, int]
    share: dict[str, float]

    def to_json(self) -> dict:
        return {"mean": {k: round(v, 4) for k, v in self.mean.items()}, "count": self.count,
                "share": {k: round(v, 4) for k, v in self.share.items()}}


def pair_labels(is_function: torch.Tensor) -> torch.Tensor:
    """(B, T) bool function tags -> (B, T) long pair index of token t (0 F->F, 1 F->C, 2 C->F, 3 C->C) from the
    types of t-1 and t; column 0 gets -1 (no previous token)."""
    prev, cur = is_function[:, :-1], is_function[:, 1:]
    index = (~prev).long() * 2 + (~cur).long()
    return torch.cat([torch.full_like(index[:, :1], -1), index], dim=1)


@torch.no_grad()
def token_losses(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 batch_size: int = 4) -> torch.Tensor:
    """(B, T) next-token loss -log p(x_t | x_<t) at t's own index (0 at column 0 and padding), right padding."""
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    parts = []
    for start in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[start:start + batch_size].to(device)
        mask = attention_mask[start:start + batch_size].to(device)
        hidden = decoder(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state
        logprobs, _ = chunked_logprobs_entropy(hidden, head, ids)
        parts.append(-logprobs.cpu())
    losses = torch.cat(parts)
    valid = attention_mask.bool().clone()
    valid[:, 0] = False
    valid[:, 1:] &= attention_mask[:, :-1].bool()  # the previous token must be real too
    return torch.where(valid, losses, torch.zeros_like(losses))


def loss_decomposition(losses: torch.Tensor, is_function: torch.Tensor, valid: torch.Tensor) -> LossDecomposition:
    """File each valid token's loss under its pair; ``valid`` (B, T) marks the scored tokens (t >= 1, real)."""
    labels = pair_labels(is_function)
    valid = valid.bool() & (labels >= 0)
    total = float(losses[valid].double().sum()) or 1.0
    mean, count, share = {}, {}, {}
    for index, name in enumerate(PAIRS):
        chosen = valid & (labels == index)
        count[name] = int(chosen.sum())
        mean[name] = float(losses[chosen].double().mean()) if count[name] else 0.0
        share[name] = float(losses[chosen].double().sum()) / total
    return LossDecomposition(mean, count, share)


@contextmanager
def steer(model: nn.Module, layer: int, direction: torch.Tensor, positions: torch.Tensor,
          alpha: float = 1.0) -> Iterator[None]:
    """Add ``alpha * direction`` (d,) to layer ``layer``'s output at ``positions`` (B,) (one per row) in every
    full-sequence forward inside the block. The hook is removed on exit."""
    block = find_decoder_layers(model)[layer]
    rows = torch.arange(positions.shape[0])

    def hook(_module, _inputs, output):
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        tensor = tensor.clone()
        tensor[rows, positions] += alpha * direction.to(tensor.dtype).to(tensor.device)
        return (tensor, *output[1:]) if isinstance(output, (tuple, list)) else tensor

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def last_token_states(model: nn.Module, tokenizer, prompts: Sequence[str], layer: int) -> torch.Tensor:
    """(N, d) layer ``layer`` output at each prompt's last token (one prompt per forward: no padding)."""
    name = f"layers.{layer}.resid_post"
    states = []
    device = next(model.parameters()).device
    with torch.no_grad(), capture(model, {name: lambda h: h[:, -1]}) as cap:
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
            model.get_decoder()(input_ids=ids, use_cache=False)
    states = torch.cat(cap[name]).float().cpu()
    return states


def last_of_type(is_function: torch.Tensor, function: bool) -> int:
    """Index of the last function (or content) token of a 1-D tag row, -1 if there is none."""
    hits = (is_function if function else ~is_function).nonzero()
    return int(hits[-1]) if hits.numel() else -1


@dataclass
class SteeringResult:
    """Per placement, the mean shift (over neutral prompts) of the log-odds of concept-A vs concept-B words at the
    next token, with the per-prompt shifts kept for paired comparisons."""

    layer: int
    alphas: list[float]
    shifts: dict[str, dict[float, list[float]]]  # placement -> alpha -> per-prompt shift
    positions: dict[str, list[int]]
    skipped: list[str]

    def to_json(self) -> dict:
        return {"layer": self.layer, "alphas": self.alphas, "positions": self.positions, "skipped": self.skipped,
                "mean_shift": {p: {str(a): round(sum(v) / len(v), 4) for a, v in by.items()}
                               for p, by in self.shifts.items()},
                "shifts": {p: {str(a): [round(x, 4) for x in v] for a, v in by.items()}
                           for p, by in self.shifts.items()}}


def word_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """First token of each word (with a leading space), deduplicated."""
    ids = []
    for word in words:
        encoded = tokenizer(" " + word.strip(), add_special_tokens=False).input_ids
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    if not ids:
        raise ValueError("no target word encodes to a token; pass non-empty words")
    return ids


def log_odds(logits: torch.Tensor, a_ids: list[int], b_ids: list[int]) -> float:
    """log sum_{w in A} p(w) - log sum_{w in B} p(w) of one next-token distribution."""
    logp = torch.log_softmax(logits.float(), -1)
    return float(torch.logsumexp(logp[a_ids], 0) - torch.logsumexp(logp[b_ids], 0))


def steering(model: nn.Module, tokenizer, partition: FunctionPartition, *, concept_a: Sequence[str],
             concept_b: Sequence[str], neutral: Sequence[str], words_a: Sequence[str], words_b: Sequence[str],
             layer: int | None = None, alphas: Sequence[float] = (1.0, 2.0, 4.0)) -> SteeringResult:
    """Mean-difference steering at each neutral prompt's last function token vs its last content token."""
    if not (concept_a and concept_b and neutral):
        raise ValueError("steering needs concept_a, concept_b and neutral prompts (non-empty lists)")
    layers = len(find_decoder_layers(model))
    layer = layers // 2 if layer is None else layer
    if not 0 <= layer < layers:
        raise ValueError(f"layer {layer} is out of range for a {layers}-layer model")
    direction = (last_token_states(model, tokenizer, concept_a, layer).mean(0)
                 - last_token_states(model, tokenizer, concept_b, layer).mean(0))
    a_ids, b_ids = word_ids(tokenizer, words_a), word_ids(tokenizer, words_b)
    device = next(model.parameters()).device
    shifts: dict[str, dict[float, list[float]]] = {"function": {a: [] for a in alphas},
                                                     "content": {a: [] for a in alphas}}
    positions: dict[str, list[int]] = {"function": [], "content": []}
    skipped = []
    for prompt in neutral:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        tags = partition.mask(ids[0].cpu())
        where = {"function": last_of_type(tags, True), "content": last_of_type(tags, False)}
        if min(where.values()) < 0:
            skipped.append(prompt)
            continue
        with torch.no_grad():
            base = log_odds(model(input_ids=ids).logits[0, -1], a_ids, b_ids)
            for placement, position in where.items():
                positions[placement].append(position)
                for alpha in alphas:
                    with steer(model, layer, direction, torch.tensor([position]), alpha):
                        moved = log_odds(model(input_ids=ids).logits[0, -1], a_ids, b_ids)
                    shifts[placement][alpha].append(moved - base)
    if not positions["function"]:
        raise ValueError("no neutral prompt has both a function and a content token; pass longer prompts")
    return SteeringResult(layer, list(alphas), shifts, positions, skipped)
