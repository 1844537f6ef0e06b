"""Tokenizer transfer baselines (B7): move a model onto a new vocabulary by initializing the new embeddings.

Paper: *Zero-Shot Tokenizer Transfer*, arXiv 2405.07883. Its hypernetwork is out of reach here (hub weights,
large-scale training); its baselines are not, and they are what this module implements:

- ``mean`` (FVT): each new token's embedding is the mean of the old embeddings of its pieces under the old
  tokenizer (a token the old vocabulary also has keeps its embedding exactly);
- ``focus`` (FOCUS-like similarity init) [our default form]: tokens both vocabularies share keep their old
  embeddings; every other token is a sparsemax-weighted combination of shared tokens' embeddings, weighted by
  cosine similarity in an auxiliary space (the FVT vectors; FOCUS proper uses fastText vectors trained on
  target text);
- ``random``: Gaussian with the old embeddings' per-dimension mean and standard deviation.

Quality is held-out bits per byte, which compares models across vocabularies (per token it would not).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from .vocab import VocabTrie

Init = Literal["mean", "focus", "random"]


def _old_pieces(old: VocabTrie, data: bytes) -> list[int] | None:
    """The old tokenizer's ids for ``data``: its canonical encoding, or byte by byte if it is not text; None
    when the old vocabulary cannot spell it (a byte it lacks)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    ids = old.encode(text) if text else []
    if ids and all(old.token_bytes[i] is not None for i in ids) and old.decode_bytes(ids) == data:
        return ids
    pieces = []
    for b in data:  # a byte-level vocabulary has every single byte
        found = old.ids_of(bytes([b]))
        if not found:
            return None
        pieces.append(found[0])
    return pieces


def _sparsemax(scores: torch.Tensor) -> torch.Tensor:
    """Sparsemax over the last dimension (Martins & Astudillo 2016): a projection onto the simplex."""
    z, _ = torch.sort(scores, dim=-1, descending=True)
    k = torch.arange(1, scores.shape[-1] + 1, device=scores.device, dtype=scores.dtype)
    cumulative = z.cumsum(-1)
    support = (1 + k * z) > cumulative
    k_max = support.sum(-1, keepdim=True)
    tau = (cumulative.gather(-1, k_max - 1) - 1) / k_max
    return torch.clamp(scores - tau, min=0)


@torch.no_grad()
def init_embeddings(old_embeddings: torch.Tensor, old: VocabTrie, new: VocabTrie, method: Init = "mean", *,
                    seed: int = 0, focus_temperature: float = 0.1, focus_candidates: int = 64) -> torch.Tensor:
    """(V_new, d) input embeddings for the new vocabulary from the old (V_old, d) matrix.

    Special tokens are matched by their text (``<|im_end|>`` keeps its embedding); an unmatched one, and a token
    the old vocabulary cannot spell, gets the mean old embedding.
    """
    if method not in ("mean", "focus", "random"):
        raise ValueError(f"unknown init {method!r}; choose mean, focus or random")
    emb = old_embeddings.detach().float()
    v_new, d = len(new), emb.shape[1]
    old_special = {old.tokenizer.convert_ids_to_tokens(i): i for i, b in enumerate(old.token_bytes) if b is None}
    new_tokens = new.tokenizer.convert_ids_to_tokens(list(range(v_new)))
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        out = emb.mean(0) + emb.std(0) * torch.randn(v_new, d, generator=gen)
    else:
        out = torch.empty(v_new, d)
        for i, data in enumerate(new.token_bytes):  # a token the old vocabulary cannot spell: the mean embedding
            pieces = _old_pieces(old, data) if data is not None else None
            out[i] = emb[pieces].mean(0) if pieces else emb.mean(0)
    for i, data in enumerate(new.token_bytes):  # specials by name; identical byte strings keep their vector
        if data is None:
            out[i] = emb[old_special[new_tokens[i]]] if new_tokens[i] in old_special else emb.mean(0)
        elif method != "random" and old.ids_of(data):
            out[i] = emb[old.ids_of(data)[0]]
    if method == "focus":
        shared = [i for i, b in enumerate(new.token_bytes) if b is not None and old.ids_of(b)]
        other = [i for i, b in enumerate(new.token_bytes) if b is not None and not old.ids_of(b)]
        if shared and other:
            anchors = torch.nn.functional.normalize(out[shared], dim=-1)  # (S, d): aux space = FVT vectors
            anchor_emb = emb[[old.ids_of(new.token_bytes[i])[0] for i in shared]]
            for lo in range(0, len(other), 1024):
                rows = other[lo:lo + 1024]
                sim = torch.nn.functional.normalize(out[rows], dim=-1) @ anchors.T  # (R, S)
                top = sim.topk(min(focus_candidates, len(shared)), dim=-1)
                weights = _sparsemax(top.values / focus_temperature)  # (R, k), rows sum to 1
                out[rows] = torch.einsum("rk,rkd->rd", weights, anchor_emb[top.indices])
    return out


def transfer_model(model, old_tokenizer, new_tokenizer, method: Init = "mean", *, seed: int = 0):
    """A copy of ``model`` on ``new_tokenizer``'s vocabulary; input and output embeddings both initialized by
    ``method`` (tied models stay tied; an untied head is initialized the same way from the old head)."""
    import copy

    old, new = VocabTrie.from_tokenizer(old_tokenizer), VocabTrie.from_tokenizer(new_tokenizer)
    moved = copy.deepcopy(model)
    inputs = init_embeddings(model.get_input_embeddings().weight, old, new, method, seed=seed)
    tied = getattr(model.config, "tie_word_embeddings", False)
    head = None if tied else init_embeddings(model.get_output_embeddings().weight, old, new, method, seed=seed + 1)
    moved.resize_token_embeddings(len(new_tokenizer))
    moved.get_input_embeddings().weight.data.copy_(inputs.to(moved.dtype))
    if head is not None:
        moved.get_output_embeddings().weight.data.copy_(head.to(moved.dtype))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(moved.config, name, getattr(new_tokenizer, name))
        if getattr(moved, "generation_config", None) is not None:
            setattr(moved.generation_config, name, getattr(new_tokenizer, name))
    return moved


def _documents(tokenizer, texts: Sequence[str], max_tokens: int, device):
    """``(rows, ids, mask)``: each text as [start] + its tokens (cut to ``max_tokens``), right-padded with the
    start token; the start token is BOS, else EOS."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    rows = [[start] + tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens - 1] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [start] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return rows, ids, mask


@torch.no_grad()
def bits_per_byte(model, tokenizer, texts: Sequence[str], *, batch_size: int = 8, max_tokens: int = 512
                  ) -> list[float]:
    """Per-document bits per byte: -log2 P(document tokens | start token) / UTF-8 bytes of the document."""
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(texts), batch_size):
        rows, ids, mask = _documents(tokenizer, texts[lo:lo + batch_size], max_tokens, device)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        token_lp = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]  # row t-1 predicts t
        for row, nats in zip(rows, (-token_lp.sum(-1)).tolist()):  # the bytes the (possibly cut) tokens spell
            covered = tokenizer.decode(row[1:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            out.append(nats / math.log(2) / max(len(covered.encode("utf-8")), 1))
    return out


def continue_training(model, tokenizer, texts: Sequence[str], *, steps: int, batch_size: int = 4,
                      max_tokens: int = 128, learning_rate: float = 1e-4, seed: int = 0,
                      train_only_embeddings: bool = False) -> list[float]:
    """A few AdamW steps of next-token loss on ``texts`` (cycled); returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    params = ([model.get_input_embeddings().weight] if train_only_embeddings else list(model.parameters()))
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for _ in range(steps):
        pick = torch.randint(len(texts), (batch_size,), generator=gen).tolist()
        _, ids, mask = _documents(tokenizer, [texts[i] for i in pick], max_tokens, device)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def small_lm(tokenizer, *, layers: int = 4, hidden: int = 128, heads: int = 4, seed: int = 0):
    """A small random llama on ``tokenizer``'s vocabulary (tied embeddings), to be trained from scratch, e.g.
    as the second member of a byte-level ensemble across vocabularies."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()
