"""Explainability-guided token compression (arXiv 2506.01097; PRUNING_TOKENIZERS_MECHANISMS.md §A4, details
unverified -- re-derived here, our default):

- Relevance: Chefer-style gradient-weighted attention rollout. With eager attention, A_l the (H, T, T)
  probabilities of layer l and dA_l the gradient of the target log p(gold | ...) with respect to them,
  ``R <- R + mean_h((dA_l * A_l)^+) @ R`` from R = I, layer by layer; a token's relevance is the row of the
  position that predicts the answer, restricted to the context and normalized to sum 1 (``needs_grad``: one
  forward and one backward).
- Predictor: a small conv net that maps layer-0 attention features of the context tokens to their relevance, so
  that pruning at the input needs no backward. Features per context token: the attention it receives from the
  query rows, from every row, and from the last row (layer 0, mean over heads). A 1-D conv over text positions,
  a 2-D conv over the 4 x 4 patch grid of the mini-VLM; trained by mean squared error on per-example z-scored
  relevance.
"""

from __future__ import annotations

import torch
from torch import nn

from .layout import TokenLayout


def relevance(model, layout: TokenLayout, target_position: int, gold: int, input_ids=None,
              inputs_embeds=None) -> torch.Tensor:
    """(T,) relevance of each position for log p(gold) predicted at ``target_position`` (0 outside the context;
    sums to 1 over it). Needs eager attention (the probabilities must be in the graph)."""
    if model.config._attn_implementation != "eager":
        raise ValueError("relevance needs attention probabilities in the graph: load the model with "
                         "attn_implementation='eager' (model.set_attn_implementation('eager'))")
    context = layout.require_pruneable("relevance")
    with torch.enable_grad():
        out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, output_attentions=True)
        attentions = out.attentions
        for attention in attentions:
            attention.retain_grad()
        target = torch.log_softmax(out.logits[0, target_position].float(), -1)[gold]
        model.zero_grad(set_to_none=True)
        target.backward()
    length = attentions[0].shape[-1]
    rollout = torch.eye(length, dtype=torch.float64)
    for attention in attentions:
        weighted = (attention.grad[0] * attention[0]).clamp_min(0).mean(0).detach().double()
        rollout = rollout + weighted @ rollout
    row = rollout[target_position]
    values = torch.zeros(length, dtype=torch.float64)
    values[context] = row[context] / row[context].sum().clamp_min(1e-12)
    return values


@torch.no_grad()
def attention_features(model, layout: TokenLayout, input_ids=None, inputs_embeds=None) -> torch.Tensor:
    """(n_context, 3) layer-0 features of the context tokens: the attention each receives from the query rows, from
    every row, and from the last row (mean over heads)."""
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, output_attentions=True)
    first = out.attentions[0][0].mean(0).float()  # (T, T)
    context = layout.pruneable
    query = layout.positions("query") or [first.shape[0] - 1]
    return torch.stack([first[query][:, context].mean(0), first[:, context].mean(0), first[-1, context]], dim=1)


class RelevancePredictor(nn.Module):
    """features (B, n, 3) -> scores (B, n): a 1-D conv over positions, or 2-D over a ``grid`` x ``grid`` patch grid."""

    def __init__(self, grid: int | None = None, width: int = 16):
        super().__init__()
        self.grid = grid
        conv = nn.Conv2d if grid else nn.Conv1d
        self.net = nn.Sequential(conv(3, width, 3, padding=1), nn.ReLU(), conv(width, width, 3, padding=1), nn.ReLU(),
                                 conv(width, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.transpose(1, 2)  # (B, 3, n)
        if self.grid:
            x = x.reshape(x.shape[0], 3, self.grid, self.grid)
        return self.net(x).reshape(features.shape[0], -1)


def _zscore(values: torch.Tensor) -> torch.Tensor:
    return (values - values.mean()) / values.std().clamp_min(1e-8)


def train_predictor(pairs: list[tuple[torch.Tensor, torch.Tensor]], grid: int | None = None, steps: int = 300,
                    lr: float = 1e-2, seed: int = 0) -> tuple[RelevancePredictor, dict]:
    """Fit the predictor on (features (n, 3), relevance of the context (n,)) pairs, one example at a time (the
    context length varies on text); returns it and its training loss before and after."""
    torch.manual_seed(seed)
    predictor = RelevancePredictor(grid)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr)
    data = [((f - f.mean(0)) / f.std(0).clamp_min(1e-8), _zscore(r.float())) for f, r in pairs]

    def loss_of() -> torch.Tensor:
        return torch.stack([((predictor(f[None])[0] - r) ** 2).mean() for f, r in data]).mean()

    with torch.no_grad():
        before = float(loss_of())
    for _ in range(steps):
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss_of())
    return predictor.eval(), {"loss_before": before, "loss_after": after, "examples": len(pairs), "steps": steps}


@torch.no_grad()
def predict(predictor: RelevancePredictor, features: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """(T,) predicted relevance scores (context positions; 0 elsewhere) for ``topk``."""
    normed = (features - features.mean(0)) / features.std(0).clamp_min(1e-8)
    scores = torch.zeros(len(layout), dtype=torch.float64)
    scores[layout.pruneable] = predictor(normed[None])[0].double()
    return scores
