"""Block attention: block masks with optional block sinks, and the per-token block sensitivity (C9).

Paper: "Towards Generalization of Block Attention via Automatic Segmentation and Block Distillation",
arXiv 2605.15913 (no code found), building on Block-Attention (Sun et al., arXiv 2409.15355, ICLR 2025; code
github.com/TemporaryLoRA/Block-Attention). The input is split into blocks; each non-final block attends only
within itself (causally), so its KV states can be computed once and reused in any context; the final (query)
block attends to everything before it. Block distillation (``block_distill.py``) fine-tunes a block-attention
student toward its full-attention self.

Verified in the Block-Attention code (``src/data/block.py: make_block_attention_for_llama3``): the training mask
is causal inside each non-final block and causal over the whole sequence for the last block, turned into an
additive float mask (0 allowed, ``finfo.min`` forbidden) of shape (1, 1, T, T); training keeps the original
position ids 0..T-1. At inference (``block_generate.py``) each block is encoded alone from position 0, its keys are
un-rotated and re-rotated to their place in the sequence, which for RoPE equals computing the block at its
original positions: our ``positions="original"`` (default). ``positions="local"`` starts every non-final block
right after the global prefix (position 1 after a BOS): the blocks' caches without that re-encoding (ablation).

Our defaults and additions [our default]: tokens with block id -1 are *global* (BOS, chat-template tokens);
with ``global_bos=True`` every block sees the global tokens before it (in the reference code the documents do not
see the system block; a block without the BOS loses its attention sink), and global tokens see only earlier
global tokens so no block leaks into another through them. Block sink tokens (the paper's, exact form unverified)
are ``n_sinks`` copies of a chosen token prepended to every non-final block (``insert_block_sinks``). The block
sensitivity of token t is KL(p_full(.|<t) || p_block(.|<t)) of the distribution predicting t, stored at t (the
alignment contract): 0 for the first block's tokens (under ``global_bos``), large where a token needed context
from another block. It is our default token weight for block distillation.

Cost (``block_sensitivity``, class ``k_passes``): two forwards (full and block) over the decoder, then the LM head
and the float64 KL on ``chunk`` positions at a time: memory O(B*T*d + chunk*V), never (B, T, V) in float64; the
(B, 1, T, T) mask costs B*T*T floats (the sdpa kernel cannot skip masked blocks, so no speed-up is expected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import torch

from ..options import check_choice

Positions = Literal["original", "local"]
POSITIONS = get_args(Positions)
_MASKABLE = ("eager", "sdpa")  # attention implementations that take a custom 4-D float mask


def query_blocks(block_ids: torch.Tensor, attention_mask: torch.Tensor, query_block: int | None = None) -> torch.Tensor:
    """(B,) the query block of each row: ``query_block`` if given (every row must hold it), else the row's last
    (highest) block id among its real tokens."""
    real = attention_mask.bool()
    if query_block is not None:
        missing = [r for r in range(len(block_ids)) if not ((block_ids[r] == query_block) & real[r]).any()]
        if missing:
            raise ValueError(f"rows {missing} have no real token in query_block={query_block}; mark the query tokens "
                             f"with that id or pass query_block=None (the last block of each row)")
        return torch.full((len(block_ids),), int(query_block), dtype=torch.long, device=block_ids.device)
    last = torch.where(real, block_ids, torch.full_like(block_ids, -1)).amax(-1)
    empty = (last < 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no query block (every real token is global, id -1); give at least one "
                         f"token a block id >= 0: the last block of a row is its query block")
    return last


def check_blocks(input_ids: torch.Tensor, attention_mask: torch.Tensor, block_ids: torch.Tensor) -> None:
    """ValueError naming the problem when the three (B, T) tensors do not fit together."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T); got shape {tuple(input_ids.shape)} (add a batch dimension)")
    for name, value in (("attention_mask", attention_mask), ("block_ids", block_ids)):
        if value.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has {tuple(input_ids.shape)}; "
                             f"give one {name.removesuffix('s')} entry per token "
                             f"(segment.token_blocks per row, padded with -1)")
    if block_ids.is_floating_point() or block_ids.dtype == torch.bool:
        raise ValueError(f"block_ids must be integers (-1 global, 0.. blocks); got dtype {block_ids.dtype}")
    if (block_ids < -1).any():
        raise ValueError("block_ids below -1 found; use -1 for global tokens and 0, 1, ... for blocks")


def block_allowed(block_ids: torch.Tensor, attention_mask: torch.Tensor, *, query_block: int | None = None,
                  global_bos: bool = True) -> torch.Tensor:
    """(B, T, T) bool: may query i attend to key j (module docstring for the rule). A padded query row keeps
    its own diagonal so that the softmax has a key (its output is never read)."""
    if attention_mask.shape != block_ids.shape or block_ids.dim() != 2:
        raise ValueError(f"block_ids {tuple(block_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must "
                         f"both be (B, T): one block id and one mask entry per token")
    check_blocks(block_ids, attention_mask, block_ids)
    real = attention_mask.bool()
    query = query_blocks(block_ids, real, query_block)
    t = block_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=block_ids.device).tril()  # (T, T)
    row = block_ids[:, :, None]  # (B, T, 1) query i
    key = block_ids[:, None, :]  # (B, 1, T) key j
    same_block = (row == key) & (row >= 0)
    row_query = row == query[:, None, None]
    key_global = (key == -1) & ((row == -1) | global_bos)
    allowed = causal & real[:, None, :] & (row_query | same_block | key_global)  # (B, T, T)
    padded_row = ~real[:, :, None] & torch.eye(t, dtype=torch.bool, device=block_ids.device)
    return allowed | padded_row


def block_mask(block_ids: torch.Tensor, attention_mask: torch.Tensor, *, query_block: int | None = None,
               global_bos: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, T, T) additive mask for an HF decoder (0 allowed, ``finfo(dtype).min`` forbidden). transformers
    (5.x ``masking_utils._preprocess_mask_arguments``) passes any 4-D mask to the attention unchanged; eager adds
    it to the scores and sdpa takes it as ``attn_mask``, so ``dtype`` must be the model's dtype."""
    allowed = block_allowed(block_ids, attention_mask, query_block=query_block, global_bos=global_bos)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]  # (B, 1, T, T)


def block_position_ids(block_ids: torch.Tensor, attention_mask: torch.Tensor, *, positions: str = "original",
                       query_block: int | None = None) -> torch.Tensor:
    """(B, T) position ids. ``original``: the full sequence's (cumulative count of real tokens - 1, so left
    padding shifts nothing). ``local``: a non-final block token sits at (global tokens before it) + (its rank in
    its block), i.e. block positions restart after the global prefix; global and query tokens keep theirs."""
    check_choice("positions", positions, Positions, owner="block attention")
    real = attention_mask.bool()
    original = (real.long().cumsum(-1) - 1).clamp_min(0)
    if positions == "original":
        return original
    query = query_blocks(block_ids, real, query_block)
    t = block_ids.shape[-1]
    earlier = torch.ones(t, t, dtype=torch.bool, device=block_ids.device).tril(-1) & real[:, None, :]  # (B, T, T) j < i
    rank = (earlier & (block_ids[:, :, None] == block_ids[:, None, :])).sum(-1)
    globals_before = (earlier & (block_ids[:, None, :] == -1)).sum(-1)
    local = (block_ids >= 0) & (block_ids != query[:, None]) & real
    return torch.where(local, globals_before + rank, original)


class BlockSinks(NamedTuple):
    """A batch with block sink tokens inserted: (B, T') ids, block ids (-1 at padding) and bool mask, and the
    (B, T) ``index`` of each original token's new position (-1 at the original padding)."""

    input_ids: torch.Tensor
    block_ids: torch.Tensor
    attention_mask: torch.Tensor
    index: torch.Tensor

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Per-token values of the new sequence (B, T', ...) back at the original positions (B, T, ...); 0 at
        the original padding."""
        index = self.index.clamp_min(0)
        index = index.reshape(*index.shape, *([1] * (values.dim() - 2))).expand(*index.shape, *values.shape[2:])
        out = values.gather(1, index)
        keep = (self.index >= 0).reshape(*self.index.shape, *([1] * (values.dim() - 2)))
        return torch.where(keep, out, torch.zeros_like(out))


def insert_block_sinks(input_ids: torch.Tensor, block_ids: torch.Tensor, sink_id: int, n_sinks: int = 1, *,
                       attention_mask: torch.Tensor | None = None, query_block: int | None = None) -> BlockSinks:
    """Prepend ``n_sinks`` copies of ``sink_id`` to every run of a non-final block (a sink belongs to its block,
    so the block's tokens attend to it). Rows are re-padded on the side the input was padded (left when some
    row starts with padding and every row ends with a real token)."""
    if n_sinks < 1:
        raise ValueError(f"n_sinks must be >= 1 (the number of sink tokens per block); got {n_sinks}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    check_blocks(input_ids, mask, block_ids)
    query = query_blocks(block_ids, mask, query_block).tolist()
    rows, index = [], torch.full(input_ids.shape, -1, dtype=torch.long)
    for r in range(len(input_ids)):
        ids, blocks, previous = [], [], None
        for t in mask[r].nonzero().flatten().tolist():
            b = int(block_ids[r, t])
            if b >= 0 and b != query[r] and b != previous:
                ids += [sink_id] * n_sinks
                blocks += [b] * n_sinks
            index[r, t] = len(ids)
            ids.append(int(input_ids[r, t]))
            blocks.append(b)
            previous = b
        rows.append((ids, blocks))
    width = max(len(ids) for ids, _ in rows)
    left = bool((~mask[:, 0]).any() and mask[:, -1].all())
    pad_id = int(input_ids[~mask][0]) if (~mask).any() else sink_id
    new_ids = torch.full((len(rows), width), pad_id, dtype=input_ids.dtype)
    new_blocks = torch.full((len(rows), width), -1, dtype=torch.long)
    new_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (ids, blocks) in enumerate(rows):
        cols = slice(width - len(ids), width) if left else slice(0, len(ids))
        new_ids[r, cols], new_blocks[r, cols], new_mask[r, cols] = torch.tensor(ids), torch.tensor(blocks), True
        if left:
            index[r] = torch.where(index[r] >= 0, index[r] + width - len(ids), index[r])
    device = input_ids.device
    return BlockSinks(new_ids.to(device), new_blocks.to(device), new_mask.to(device), index.to(device))


def _check_model(model) -> None:
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in _MASKABLE:
        raise ValueError(f"block attention needs a custom 4-D float mask, which attn_implementation="
                         f"{implementation!r} does not take; call model.set_attn_implementation('sdpa') (or 'eager')")


def block_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, block_ids: torch.Tensor | None = None,
                 *, query_block: int | None = None, global_bos: bool = True, positions: str = "original") -> torch.Tensor:
    """(B, T, d) last hidden states under block attention (``block_ids=None``: plain full attention with the same
    padding-aware position ids). Gradients flow if enabled by the caller."""
    _check_model(model)
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device).bool()
    if block_ids is None:
        mask, position_ids = attention_mask.long(), (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    else:
        block_ids = block_ids.to(device)
        check_blocks(input_ids, attention_mask, block_ids)
        mask = block_mask(block_ids, attention_mask, query_block=query_block, global_bos=global_bos, dtype=model.dtype)
        position_ids = block_position_ids(block_ids, attention_mask, positions=positions, query_block=query_block)
    out = model.get_decoder()(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def head_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on hidden states (with the final logit soft-capping of models that have one), in float32."""
    logits = model.get_output_embeddings()(hidden).float()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return logits if softcap is None else softcap * torch.tanh(logits / softcap)


def predicting(hidden: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, d) the hidden state that predicts token t at row t (row 0 is a copy of row 0 and is never used):
    position t-1, or with sinks the position just before token t's new ``index`` (maybe a sink)."""
    if index is None:
        return torch.cat([hidden[:, :1], hidden[:, :-1]], 1)
    before = (index - 1).clamp_min(0)
    return hidden.gather(1, before[..., None].expand(*before.shape, hidden.shape[-1]))


def next_token_valid(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: token t is real and predicted from a real position t-1 (False at index 0 and padding)."""
    real = attention_mask.bool()
    return torch.cat([torch.zeros_like(real[:, :1]), real[:, 1:] & real[:, :-1]], 1)


@torch.no_grad()
def chunked_kl(model_p, hidden_p: torch.Tensor, model_q, hidden_q: torch.Tensor, valid: torch.Tensor,
               chunk: int = 256) -> torch.Tensor:
    """(B, T) float32 exact KL(p || q) of the next-token distributions from two (B, T, d) hidden states through
    each model's LM head, in float64 on ``chunk`` positions at a time; 0 where ``valid`` is False."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (positions per LM-head call); got {chunk}")
    out = torch.zeros(valid.shape, dtype=torch.float64, device=hidden_p.device)
    step = max(1, chunk // hidden_p.shape[0])  # columns per call: about `chunk` positions over the batch
    for c in range(0, valid.shape[1], step):
        logp = torch.log_softmax(head_logits(model_p, hidden_p[:, c:c + step]).double(), -1)  # (B, c, V)
        logq = torch.log_softmax(head_logits(model_q, hidden_q[:, c:c + step]).double(), -1)
        out[:, c:c + step] = (logp.exp() * (logp - logq)).sum(-1)
    return torch.where(valid.to(out.device), out.clamp_min(0.0), torch.zeros_like(out)).float()


@torch.no_grad()
def block_sensitivity(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, block_ids: torch.Tensor, *,
                      chunk: int = 256, query_block: int | None = None, global_bos: bool = True,
                      positions: str = "original") -> torch.Tensor:
    """(B, T) float32: at index t, KL(p_full(.|<t) || p_block(.|<t)) of the distribution predicting token t (0 at
    index 0 and padding). Two forwards (full and block attention) and a chunked float64 KL."""
    attention_mask = attention_mask.bool()
    check_blocks(input_ids, attention_mask, block_ids)
    was_training = model.training
    model.eval()
    try:
        full = predicting(block_hidden(model, input_ids, attention_mask))
        blocked = predicting(block_hidden(model, input_ids, attention_mask, block_ids, query_block=query_block,
                                          global_bos=global_bos, positions=positions))
        return chunked_kl(model, full, model, blocked, next_token_valid(attention_mask), chunk).cpu()
    finally:
        model.train(was_training)


def token_kinds(block_ids: torch.Tensor, attention_mask: torch.Tensor, query_block: int | None = None) -> list[list[str]]:
    """Per token: ``global`` (-1), ``first`` (the row's first context block), ``context`` (a later non-final
    block), ``query`` or ``pad``."""
    real = attention_mask.bool()
    query = query_blocks(block_ids, real, query_block)
    kinds = []
    for r in range(len(block_ids)):
        context = block_ids[r][real[r] & (block_ids[r] >= 0) & (block_ids[r] != query[r])]
        first = int(context[0]) if len(context) else None
        names = {-1: "global", int(query[r]): "query", first: "first"}
        kinds.append([names.get(int(b), "context") if m else "pad" for b, m in zip(block_ids[r], real[r])])
    return kinds


@dataclass
class BlockSensitivity:
    """Per-token block sensitivity and its summaries.

    values:      (B, T) float32 KL(p_full || p_block) predicting token t, at t.
    counted:     (B, T) bool where a value is defined (real token predicted from a real position).
    block_means: per row, block id -> mean KL over its counted tokens (-1 = global tokens).
    kind_means:  kind (``global``, ``first``, ``context``, ``query``) -> mean KL over all rows' counted tokens.
    top:         the ``top_k`` tokens losing most: row, index, block, kind, token text, KL.
    """

    values: torch.Tensor
    counted: torch.Tensor
    block_means: list[dict[int, float]]
    kind_means: dict[str, float]
    top: list[dict] = field(default_factory=list)

    @classmethod
    def summarize(cls, values: torch.Tensor, block_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                  input_ids: torch.Tensor | None = None, tokenizer=None, top_k: int = 10,
                  query_block: int | None = None) -> BlockSensitivity:
        values, block_ids = values.float().cpu(), block_ids.cpu()
        counted = next_token_valid(attention_mask.cpu())
        kinds = token_kinds(block_ids, attention_mask.cpu(), query_block)
        block_means = []
        for r in range(len(values)):
            ids = block_ids[r][counted[r]]
            row = values[r][counted[r]]
            block_means.append({int(b): float(row[ids == b].mean()) for b in ids.unique().tolist()})
        by_kind: dict[str, list[float]] = {}
        for r, t in counted.nonzero().tolist():
            by_kind.setdefault(kinds[r][t], []).append(float(values[r, t]))
        kind_means = {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}
        flat = torch.where(counted, values, torch.full_like(values, -1.0)).flatten()
        top = []
        for i in flat.topk(min(top_k, int(counted.sum()))).indices.tolist():
            r, t = divmod(i, values.shape[1])
            token = None
            if input_ids is not None and tokenizer is not None:
                token = tokenizer.decode([int(input_ids[r, t])])
            top.append({"row": r, "index": t, "block": int(block_ids[r, t]), "kind": kinds[r][t], "token": token,
                        "kl": float(values[r, t])})
        return cls(values, counted, block_means, kind_means, top)

    def to_json(self) -> dict:
        return {
            "kind_means": {k: round(v, 6) for k, v in self.kind_means.items()},
            "block_means": [{str(b): round(v, 6) for b, v in row.items()} for row in self.block_means],
            "top": [{**item, "kl": round(item["kl"], 6)} for item in self.top],
            "values": [[round(float(v), 6) for v in row[keep]] for row, keep in zip(self.values, self.counted)],
        }


def probe_block_sensitivity(model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            block_ids: torch.Tensor, *, top_k: int = 10, query_block: int | None = None,
                            **options) -> BlockSensitivity:
    """``block_sensitivity`` then its summary (per-block and per-kind means, the top-k tokens with their text);
    ``options`` go to ``block_sensitivity`` (chunk, global_bos, positions)."""
    values = block_sensitivity(model, input_ids, attention_mask, block_ids, query_block=query_block, **options)
    return BlockSensitivity.summarize(values, block_ids, attention_mask, input_ids=input_ids, tokenizer=tokenizer,
                                      top_k=top_k, query_block=query_block)

