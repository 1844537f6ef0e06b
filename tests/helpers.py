"""Helpers for tests: tiny random llama models and padded batches built in the test."""

from __future__ import annotations

import torch

from tokenfocus.models import build_tiny_llama


def tiny(attn: str = "sdpa", **options):
    model, tokenizer = build_tiny_llama(**{"layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2, **options})
    model.set_attn_implementation(attn)
    model.eval()
    return model, tokenizer


def padded_batch(lengths, width, side="left", vocab=90, seed=0):
    """Random ids with per-row real lengths, padded on the given side; returns (ids, bool mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for r, n in enumerate(lengths):
        if side == "left":
            mask[r, width - n :] = True
        else:
            mask[r, :n] = True
    ids = ids.masked_fill(~mask, 2)
    return ids, mask
