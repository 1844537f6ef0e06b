"""TransPrune (arXiv 2507.20630; PRUNING_TOKENIZERS_MECHANISMS.md §A1): Token Transition Variation plus
Instruction-Guided Attention, pruned progressively through ``LayerRunner``.

As the reference code (``liaolea/TransPrune`` f4cb73b, ``modeling_llama_transprune.py``) computes them:

- TTV of one sub-layer (attention, MLP) of one layer: x its input after the pre-norm, y its output before the
  residual add; ``ttv(i) = ||y_i|| / ||x_i|| * softmax_i(1 - cos(x_i, y_i))``, the softmax over every position of the
  sequence (the code's ``exp / exp.sum()``; batch size 1 there, per row here). A layer's TTV is the sum over its two
  sub-layers; at a pruning layer, the TTVs of the accumulating layers run so far are summed over the context
  positions still there and normalized to sum 1 over them.
- IGA at a drop before layer L: layer L's own pre-norm, q and k projections and RoPE on the hidden states entering
  it; softmax(QK^T / sqrt(d)) over all keys (causal), averaged over heads, restricted to the context columns,
  averaged over the query rows (every position after the context), normalized to sum 1.
- score = TTV + IGA (unweighted); keep the top ``ratio x`` (the ORIGINAL context size) at each pruning layer, in
  position order; positions are renumbered 0..n-1 (the code compacts them).

Layers here are 0-based and a drop happens *before* a layer: the script's accumulating layers [7..12] and pruning
after layers [7, 9, 12] (1-based) are ``accumulate=range(6, 12)`` and ``prune_layers=[7, 9, 12]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..capture import capture, find_decoder_layers
from .layout import TokenLayout
from .policies import progressive
from .runner import LayerRunner, RunState


def transition_variation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, T) TTV of one sub-layer from its input after the pre-norm ``x`` and output before the residual ``y``."""
    x, y = x.float(), y.float()
    ratio = y.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)
    change = 1.0 - F.cosine_similarity(x, y, dim=-1)
    return ratio * torch.softmax(change, dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def instruction_attention(runner: LayerRunner, state: RunState, layout: TokenLayout) -> torch.Tensor:
    """(T,) IGA of the positions still there before layer ``state.layer``: attention from the rows after the
    context to the context columns, averaged over heads and rows, sum 1 over the context (0 elsewhere)."""
    layer = runner.layers[state.layer]
    attention = layer.self_attn
    hidden = layer.input_layernorm.forward(state.hidden[:1])  # .forward: no capture hook records this extra call
    batch, length, _ = hidden.shape
    head = attention.head_dim
    q = attention.q_proj(hidden).view(batch, length, -1, head).transpose(1, 2)
    k = attention.k_proj(hidden).view(batch, length, -1, head).transpose(1, 2)
    if hasattr(attention, "q_norm"):  # qwen3-style per-head norms before RoPE
        q, k = attention.q_norm(q), attention.k_norm(k)
    cos, sin = runner.decoder.rotary_emb(hidden, position_ids=state.position_ids)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query heads
    context = layout.positions("context")
    rows = list(range(max(context) + 1, length)) if context else []
    scores = torch.zeros(length, dtype=torch.float32, device=hidden.device)
    if not rows or not context:
        return scores
    logits = (q[:, :, rows].float() @ k.float().transpose(-1, -2)) * attention.scaling
    causal = torch.arange(length, device=hidden.device)[None, :] > torch.tensor(rows, device=hidden.device)[:, None]
    probs = torch.softmax(logits.masked_fill(causal, float("-inf")), dim=-1)  # (1, H, rows, T)
    mass = probs.mean(dim=1)[0][:, context].mean(dim=0)
    scores[context] = mass / (mass.sum() + 1e-8)
    return scores


@dataclass
class TransPrune:
    """The progressive TransPrune schedule on one prompt. ``with TransPrune(...).run(ids) as out`` is not needed:
    ``run`` wires the hooks, the runner and the drops and returns the runner's output; ``scores`` keeps, per
    pruning layer, the TTV, IGA and combined scores by original position (for the report's token view)."""

    model: torch.nn.Module
    layout: TokenLayout
    accumulate: list[int] = field(default_factory=lambda: list(range(6, 12)))
    prune_layers: list[int] = field(default_factory=lambda: [7, 9, 12])
    ratios: list[float] = field(default_factory=lambda: [0.875, 0.625, 0.125])
    use_ttv: bool = True
    use_iga: bool = True

    def __post_init__(self):
        self.runner = LayerRunner(self.model)
        for layer in [*self.accumulate, *self.prune_layers]:
            self.runner.check_layer(layer, "TransPrune layer")
        if not (self.use_ttv or self.use_iga):
            raise ValueError("TransPrune needs TTV, IGA or both (use_ttv / use_iga)")
        self.layout.require_pruneable("TransPrune")
        self.scores: dict[int, dict[str, dict[int, float]]] = {}

    def run(self, input_ids=None, inputs_embeds=None, logits: str | list[int] | None = "last",
            positions: str = "renumber"):
        points = {f"layers.{i}.{part}": None for i in self.accumulate for part in ("attn_in", "attn", "mlp_in", "mlp")}
        seen: dict[int, list[int]] = {}  # layer -> the original positions it saw
        current = {"kept": None}

        def note(module, args, index):
            seen[index] = list(current["kept"] or range(args[0].shape[1]))

        handles = [find_decoder_layers(self.model)[i].register_forward_pre_hook(
            lambda module, args, i=i: note(module, args, i)) for i in self.accumulate]

        def score(state: RunState, layout: TokenLayout) -> torch.Tensor:
            total = torch.zeros(len(state.kept), dtype=torch.float64)
            where = {p: i for i, p in enumerate(state.kept)}
            context = layout.positions("context")
            ttv = torch.zeros(len(state.kept), dtype=torch.float64)
            if self.use_ttv:
                for index in [i for i in self.accumulate if i < state.layer]:
                    value = sum(transition_variation(got[f"layers.{index}.{a}"][0], got[f"layers.{index}.{b}"][0])[0]
                                for a, b in (("attn_in", "attn"), ("mlp_in", "mlp")))
                    for position, v in zip(seen[index], value.tolist()):
                        if position in where:
                            ttv[where[position]] += v
                mass = ttv[context].sum()
                ttv = torch.where(torch.isin(torch.arange(len(ttv)), torch.tensor(context)), ttv, 0.0)
                ttv = ttv / (mass + 1e-8)
                total += ttv
            iga = instruction_attention(self.runner, state, layout).double() if self.use_iga else torch.zeros_like(total)
            total += iga
            self.scores[state.layer] = {name: {state.kept[i]: float(v[i]) for i in context}
                                        for name, v in (("ttv", ttv), ("iga", iga), ("score", total))}
            return total

        drops = progressive(self.layout, self.prune_layers, self.ratios, score)

        def tracked(drop):
            def run_drop(state):
                kept = drop(state)
                current["kept"] = kept
                return kept

            return run_drop

        try:
            with capture(self.model, points) as got:
                return self.runner.run(input_ids, inputs_embeds, drops={k: tracked(v) for k, v in drops.items()},
                                       positions=positions, logits=logits)
        finally:
            for handle in handles:
                handle.remove()
