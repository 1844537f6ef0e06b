"""Fidelity of a pruned run against the unpruned one (PRUNING_TOKENIZERS_MECHANISMS.md §0.3): on the gold answer
scored after the prompt, teacher-forced.

    logp          log p(gold answer tokens | prompt)                     (sum over the answer's tokens)
    retention     exp(logp_pruned - logp_full): the share of the gold answer's probability kept
    kl_first      KL(p_full || p_pruned) of the next-token distribution at the first answer position
    exact         every answer token is the argmax (what greedy decoding would emit): exact-match accuracy
    evidence      the share of the gold evidence positions still there after the last drop (facts)
    flops         the run's FLOPs relative to the unpruned run (per-token linear cost + the attention's n^2 term)
"""

from __future__ import annotations

import torch

from .runner import LayerRunner, RunnerOutput
from .testbeds import Encoded


@torch.no_grad()
def answer_scores(runner: LayerRunner, encoded: Encoded, drops=None, positions: str = "keep") -> dict:
    """{"logp", "exact", "first" (log-probs at the first answer position), "out"} of one run."""
    return scores_of(runner.run(**encoded.inputs(), drops=drops, positions=positions, logits=predicting(encoded)),
                     encoded, selected=True)


def predicting(encoded: Encoded) -> list[int]:
    """The positions whose next-token logits score the answer (each answer position minus one)."""
    return [p - 1 for p in encoded.answer_positions]


def scores_of(out: RunnerOutput, encoded: Encoded, selected: bool = False) -> dict:
    """``answer_scores`` of a run already made: with all positions' logits, or (``selected``) with the logits of
    ``predicting(encoded)`` only, in that order."""
    where = {p: i for i, p in enumerate(out.kept)}
    missing = [p for p in predicting(encoded) if p not in where]
    if missing:
        raise ValueError(f"positions {missing} predicting the answer were dropped; only the context may be pruned")
    logits = out.logits[0] if selected else out.logits[0, [where[p] for p in predicting(encoded)]]
    rows = torch.log_softmax(logits.float(), -1)
    gold = torch.tensor(encoded.answer_ids)
    picked = rows.gather(1, gold[:, None])[:, 0]
    return {"logp": float(picked.sum()), "exact": bool((rows.argmax(-1) == gold).all()), "first": rows[0],
            "out": out}


def relative_flops(config, length: int, history: dict[int, list[int]], layers: int) -> float:
    """FLOPs of a run whose layer l sees n_l tokens, relative to all layers seeing ``length``: per layer
    2 x (its weights) x n (projections and MLP) + 4 x d x n^2 (QK^T and AV)."""
    d, inter = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    head = getattr(config, "head_dim", None) or d // heads
    weights = d * head * (heads * 2 + kv * 2) + 3 * d * inter
    counts, n = [], length
    for layer in range(layers):
        n = len(history[layer]) if layer in history else n
        counts.append(n)
    cost = lambda n: 2 * weights * n + 4 * d * n * n
    return sum(cost(n) for n in counts) / (layers * cost(length))


def fidelity(full: dict, pruned: dict, encoded: Encoded, config, layers: int) -> dict:
    """The metrics of one pruned run against the unpruned run ``full`` (both from ``answer_scores``)."""
    kl = float(torch.sum(full["first"].exp() * (full["first"] - pruned["first"])))
    kept = set(pruned["out"].kept)
    evidence = [p for p in encoded.evidence]
    return {"logp": pruned["logp"], "delta_logp": pruned["logp"] - full["logp"], "full_exact": full["exact"],
            "retention": float(torch.tensor(pruned["logp"] - full["logp"]).exp()),
            "kl_first": max(kl, 0.0), "exact": pruned["exact"],
            "evidence": sum(p in kept for p in evidence) / len(evidence) if evidence else None,
            "flops": relative_flops(config, encoded.ids.shape[1], pruned["out"].history, layers),
            "kept_context": sum(1 for p in pruned["out"].kept if encoded.layout.roles[p] == "context")}
