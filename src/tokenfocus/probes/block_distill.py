"""Block distillation: fine-tune a block-attention student toward a frozen full-attention teacher (C9).

Paper: "Towards Generalization of Block Attention via Automatic Segmentation and Block Distillation",
arXiv 2605.15913 (no code found). Split from ``block_attention.py`` along the measure / train seam.

The paper's three ingredients [from abstract; exact forms unverified], and what we do:

1. block sink tokens prepended to each block: ``sink_id`` (``n_sinks`` copies per non-final block, through
   ``insert_block_sinks``); the student's distribution predicting token t comes from the position just before t
   in its own sequence (a sink for a block's first token);
2. block dropout: with probability ``block_dropout`` each non-final block is merged with the block before it
   (one draw per boundary per step), so the student also sees coarser segmentations [our default form];
3. token-level loss weighting: weight_t proportional to the teacher's block sensitivity KL(p_full || p_block) at
   t, computed once per batch at the start and normalized to mean one over the trained tokens [our default].

Loss per step = sum_t w_t * KL(p_teacher_full(.|<t) || p_student_block(.|<t)) / (number of trained tokens), over
the query block's tokens (``tokens="query"``, default) or every predicted token (``"all"``). Plain torch AdamW, no
trainer. The log holds the held-out mean KL (unweighted, over the same tokens) before and after.

Cost per step: one no-grad teacher forward and one student forward + backward with (B, T, V) float32 logits;
the weights cost one ``block_sensitivity`` per batch, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import torch

from ..options import check_choice
from .block_attention import (
    block_hidden,
    block_sensitivity,
    check_blocks,
    chunked_kl,
    head_logits,
    insert_block_sinks,
    next_token_valid,
    predicting,
    query_blocks,
)

Weighting = Literal["kl", "uniform"]
Tokens = Literal["query", "all"]
_KEYS = ("input_ids", "attention_mask", "block_ids")


@dataclass
class BlockDistillLog:
    """What a ``block_distill`` run did: its settings, the loss per step, and the held-out mean KL(teacher full
    || student block) before and after."""

    settings: dict
    losses: list[float] = field(default_factory=list)
    held_out_before: float = float("nan")
    held_out_after: float = float("nan")

    def to_json(self) -> dict:
        return {"settings": self.settings, "losses": [round(v, 6) for v in self.losses],
                "held_out_before": round(self.held_out_before, 6), "held_out_after": round(self.held_out_after, 6)}


def merge_blocks(block_ids: torch.Tensor, attention_mask: torch.Tensor, p: float,
                 generator: torch.Generator | None = None, query_block: int | None = None) -> torch.Tensor:
    """Block dropout: each non-final block (after the row's first) takes the id of the block before it with
    probability ``p``; the query block and global tokens keep theirs."""
    query = query_blocks(block_ids, attention_mask, query_block)
    out = block_ids.clone()
    for r in range(len(block_ids)):
        real = attention_mask[r].bool()
        order = [b for b in dict.fromkeys(block_ids[r][real].tolist()) if b >= 0 and b != int(query[r])]
        target = {order[0]: order[0]} if order else {}
        for before, b in pairwise(order):
            merge = torch.rand((), generator=generator).item() < p
            target[b] = target[before] if merge else b
        for b, new in target.items():
            out[r][block_ids[r] == b] = new
    return out


def trained_tokens(batch: Mapping[str, torch.Tensor], tokens: str, query_block: int | None = None) -> torch.Tensor:
    """(B, T) bool: the tokens whose prediction is distilled (query block tokens, or every predicted token)."""
    valid = next_token_valid(batch["attention_mask"])
    if tokens == "all":
        return valid
    query = query_blocks(batch["block_ids"], batch["attention_mask"].bool(), query_block)
    return valid & (batch["block_ids"] == query[:, None])


def _student_hidden(student, batch, block_ids, sink_id, n_sinks, options):
    """(B, T, d) student hidden states predicting each original token t under block attention (with sinks)."""
    if sink_id is None:
        return predicting(block_hidden(student, batch["input_ids"], batch["attention_mask"], block_ids, **options))
    sinks = insert_block_sinks(batch["input_ids"], block_ids, sink_id, n_sinks,
                               attention_mask=batch["attention_mask"], query_block=options.get("query_block"))
    hidden = block_hidden(student, sinks.input_ids, sinks.attention_mask, sinks.block_ids, **options)
    return predicting(hidden, sinks.index.to(hidden.device))


@torch.no_grad()
def held_out_kl(student, teacher, batches: Sequence[Mapping[str, torch.Tensor]], *, tokens: str = "query",
                sink_id: int | None = None, n_sinks: int = 1, chunk: int = 256, **options) -> float:
    """Mean over the trained tokens of all ``batches`` of KL(p_teacher_full || p_student_block) (exact)."""
    total, count = 0.0, 0
    was_training = student.training
    student.eval()
    try:
        for batch in batches:
            keep = trained_tokens(batch, tokens, options.get("query_block"))
            full = predicting(block_hidden(teacher, batch["input_ids"], batch["attention_mask"]))
            blocked = _student_hidden(student, batch, batch["block_ids"], sink_id, n_sinks, options)
            kl = chunked_kl(teacher, full, student, blocked, keep, chunk)
            total, count = total + float(kl.sum()), count + int(keep.sum())
    finally:
        student.train(was_training)
    return total / max(count, 1)


def block_distill(student, teacher, batches: Sequence[Mapping[str, torch.Tensor]], *, steps: int, lr: float = 1e-4,
                  weighting: str = "kl", tokens: str = "query", held_out: Sequence[Mapping] | None = None,
                  block_dropout: float = 0.0, sink_id: int | None = None, n_sinks: int = 1,
                  query_block: int | None = None, global_bos: bool = True, positions: str = "original",
                  weight_decay: float = 0.0, max_grad_norm: float | None = 1.0, seed: int = 0,
                  chunk: int = 256) -> BlockDistillLog:
    """Fine-tune ``student`` in place for ``steps`` AdamW steps over ``batches`` (cycled; each a mapping with
    (B, T) ``input_ids``, ``attention_mask`` and ``block_ids``) toward the frozen ``teacher`` under full
    attention (module docstring). ``held_out`` (default: ``batches``) measures the KL before and after."""
    check_choice("weighting", weighting, Weighting, owner="block_distill")
    check_choice("tokens", tokens, Tokens, owner="block_distill")
    if student is teacher:
        raise ValueError("block_distill needs a separate student; pass copy.deepcopy(teacher) as the student")
    if steps < 0 or not 0.0 <= block_dropout <= 1.0:
        raise ValueError(f"need steps >= 0 and 0 <= block_dropout <= 1; got steps={steps}, block_dropout={block_dropout}")
    batches = list(batches)
    if not batches:
        raise ValueError("block_distill needs at least one batch of input_ids, attention_mask and block_ids")
    for i, batch in enumerate(batches):
        missing = [k for k in _KEYS if k not in batch]
        if missing:
            raise ValueError(f"batch {i} lacks {missing}; each batch is a mapping with keys {list(_KEYS)}")
        check_blocks(batch["input_ids"], batch["attention_mask"], batch["block_ids"])
    held_out = batches if held_out is None else list(held_out)
    options = {"query_block": query_block, "global_bos": global_bos, "positions": positions}
    sinks = {"sink_id": sink_id, "n_sinks": n_sinks}
    log = BlockDistillLog(settings={"steps": steps, "lr": lr, "weighting": weighting, "tokens": tokens,
                                    "block_dropout": block_dropout, **sinks, **options, "seed": seed})
    teacher.eval()  # frozen: only ever run under no_grad
    log.held_out_before = held_out_kl(student, teacher, held_out, tokens=tokens, chunk=chunk, **sinks, **options)
    weights = [_token_weights(teacher, batch, weighting, tokens, chunk, options) for batch in batches]
    counts = [max(int(trained_tokens(batch, tokens, query_block).sum()), 1) for batch in batches]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    was_training = student.training
    student.train()
    try:
        for step in range(steps):
            batch, w = batches[step % len(batches)], weights[step % len(batches)]
            block_ids = batch["block_ids"]
            if block_dropout > 0:
                block_ids = merge_blocks(block_ids, batch["attention_mask"], block_dropout, generator, query_block)
            with torch.no_grad():
                logp = torch.log_softmax(head_logits(teacher, predicting(
                    block_hidden(teacher, batch["input_ids"], batch["attention_mask"]))), -1)  # (B, T, V)
            logq = torch.log_softmax(head_logits(student, _student_hidden(student, batch, block_ids, sink_id,
                                                                          n_sinks, options)), -1)  # (B, T, V)
            per_token = (logp.exp() * (logp - logq)).sum(-1)  # (B, T)
            w = w.to(per_token.device)
            loss = (w * per_token).sum() / counts[step % len(batches)]  # weights have mean one on these tokens
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
            optimizer.step()
            log.losses.append(float(loss.detach()))
    finally:
        student.train(was_training)
    log.held_out_after = held_out_kl(student, teacher, held_out, tokens=tokens, chunk=chunk, **sinks, **options)
    return log


def _token_weights(teacher, batch, weighting: str, tokens: str, chunk: int, options: dict) -> torch.Tensor:
    """(B, T) loss weights, 0 off the trained tokens and mean one on them: uniform, or the teacher's own block
    sensitivity (falls back to uniform when it is 0 everywhere)."""
    keep = trained_tokens(batch, tokens, options["query_block"]).float()
    if weighting == "uniform":
        return keep
    kl = block_sensitivity(teacher, batch["input_ids"], batch["attention_mask"], batch["block_ids"], chunk=chunk,
                           **options) * keep
    mean = kl.sum() / keep.sum().clamp_min(1)
    return kl / mean if mean > 0 else keep
