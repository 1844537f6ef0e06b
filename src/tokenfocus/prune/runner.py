"""``LayerRunner``: a decoder run layer by layer (embed -> layers -> final norm -> head), so that tokens can be
dropped between layers (PRUNING_TOKENIZERS_MECHANISMS.md §0.6; TransPrune, the information horizon, EmbedLens).

The layers are the model's own modules, called as the model calls them: forward hooks (``capture``) see the same
tensors. After a drop the causal mask is rebuilt with transformers' ``create_causal_mask`` and the rotary
embeddings are recomputed for the kept tokens' positions:

- ``positions="keep"``: every token keeps its original position (a dropped token leaves a gap);
- ``positions="renumber"``: the kept tokens are renumbered 0..n-1 (TransPrune's ``transprune_rank_drop``).

A drop may also merge: ``Merge(keep, into={p: [q, ...]})`` keeps ``keep`` and replaces the hidden state of each
kept ``p`` by the mean of its own and those of the dropped ``q``s (token merging; the merged token keeps p's
position).

Unpruned, the runner equals ``model.forward`` (tested to 1e-5). A drop before layer L: the first L layers saw
every token, the rest see only the kept ones. Rows of a batch share one prompt layout (no padding): the drops
are the same for every row.

    runner = LayerRunner(model)
    out = runner.run(input_ids, drops={2: keep_positions}, positions="keep")
    out.logits[:, -1]          # the next-token logits at the last kept position
    out.kept                   # the original positions still there after the last drop
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..capture import find_decoder_layers

POSITIONS = ("keep", "renumber")


@dataclass
class RunState:
    """What a drop callable sees before layer ``layer``: the hidden states (B, n, d), the original positions of
    the n tokens (``kept``) and their position ids (1, n)."""

    layer: int
    hidden: torch.Tensor
    kept: list[int]
    position_ids: torch.Tensor


@dataclass
class Merge:
    """A drop that merges: keep ``keep`` (original positions); each kept position p in ``into`` takes the mean of
    its hidden state and those of ``into[p]`` (dropped positions, each merged into one token at most)."""

    keep: list[int]
    into: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class RunnerOutput:
    logits: torch.Tensor | None  # (B, n, V) or (B, 1, V) with logits="last"; None with logits=None
    hidden: torch.Tensor  # after the final norm (B, n, d)
    kept: list[int]  # original positions of the n final tokens
    position_ids: torch.Tensor
    history: dict[int, list[int]] = field(default_factory=dict)  # layer -> the original positions kept before it


def _decoder(model: nn.Module) -> nn.Module:
    """The module holding the layers, the final norm and the rotary embedding (LlamaModel and its kin)."""
    layers = find_decoder_layers(model)
    for module in model.modules():
        if getattr(module, "layers", None) is layers:
            missing = [name for name in ("norm", "rotary_emb") if not hasattr(module, name)]
            if missing:
                raise ValueError(f"LayerRunner needs a decoder with {missing} ({type(module).__name__} lacks them); "
                                 "it supports rotary decoder-only models (llama, qwen2/3, mistral, LLaVA's language "
                                 "model)")
            return module
    raise ValueError(f"no module of {type(model).__name__} owns its decoder layers")


class LayerRunner:
    def __init__(self, model: nn.Module):
        self.model = model
        self.decoder = _decoder(model)
        self.layers = find_decoder_layers(model)
        self.head = model.get_output_embeddings()
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (LM head); LayerRunner needs a "
                             "causal LM")
        self.config = getattr(self.decoder, "config", None) or model.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def check_layer(self, layer: int, what: str = "pruning layer") -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"{what} {layer!r} is outside the model's layers 0..{self.num_layers - 1}; a drop "
                             "before layer L means layers L.. see only the kept tokens")

    def _positions(self, kept: list[int], mode: str, device) -> torch.Tensor:
        values = kept if mode == "keep" else range(len(kept))
        return torch.tensor(list(values), device=device).unsqueeze(0)

    def run(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None, *,
            drops: dict[int, list[int] | Merge | Callable[[RunState], list[int] | Merge]] | None = None,
            positions: str = "keep",
            logits: str | list[int] | None = "all", protected: tuple[int, ...] = (0,)) -> RunnerOutput:
        """Run the decoder; ``drops``: {layer L: the original positions to keep before layer L (or a ``Merge``),
        or a callable of the ``RunState`` returning them}. ``protected`` positions (the sink) must be kept. ``logits``: "all",
        "last", None, or a list of original positions (the head runs on those only; ``logits[:, i]`` is the i-th)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {positions!r}")
        if not (logits in ("all", "last", None) or isinstance(logits, list)):
            raise ValueError(f"logits must be 'all', 'last', None or a list of positions, got {logits!r}")
        drops = dict(drops or {})
        for layer in drops:
            self.check_layer(layer)
        from transformers.masking_utils import create_causal_mask

        hidden = self.model.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        kept = list(range(hidden.shape[1]))
        position_ids = self._positions(kept, positions, hidden.device)
        history: dict[int, list[int]] = {}

        def prepare(h, pos):
            # No position ids for the mask: transformers reads gaps in them as packed sequences (a block-diagonal
            # mask); the kept tokens of one prompt are one sequence, whatever their positions.
            mask = create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=None, cache=None)
            return mask, self.decoder.rotary_emb(h, position_ids=pos)

        mask, rotary = prepare(hidden, position_ids)
        for index, layer in enumerate(self.layers):
            if index in drops:
                spec = drops[index]
                keep = spec(RunState(index, hidden, list(kept), position_ids)) if callable(spec) else spec
                if isinstance(keep, Merge):
                    hidden = self._merge(hidden, kept, keep, index)
                    keep = keep.keep
                hidden, kept = self._drop(hidden, kept, keep, protected, index)
                history[index] = list(kept)
                position_ids = self._positions(kept, positions, hidden.device)
                mask, rotary = prepare(hidden, position_ids)
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids,
                           cache=None, use_cache=False)
            if isinstance(hidden, tuple):  # older transformers return (hidden, ...)
                hidden = hidden[0]
        hidden = self.decoder.norm(hidden)
        if isinstance(logits, list):
            where = {p: i for i, p in enumerate(kept)}
            gone = [p for p in logits if p not in where]
            if gone:
                raise ValueError(f"logits asked at positions {gone} that were dropped")
            out = self.head(hidden[:, [where[p] for p in logits]])
        else:
            out = None if logits is None else self.head(hidden if logits == "all" else hidden[:, -1:])
        return RunnerOutput(out, hidden, kept, position_ids, history)

    @staticmethod
    def _merge(hidden: torch.Tensor, kept: list[int], merge: Merge, layer: int) -> torch.Tensor:
        """``hidden`` with each merge target's row replaced by the mean of its group (the drop follows)."""
        where = {p: i for i, p in enumerate(kept)}
        keep = {int(p) for p in merge.keep}
        seen: set[int] = set()
        problems = []
        for target, members in merge.into.items():
            members = [int(q) for q in members]
            if target not in keep:
                problems.append(f"merge target {target} is not kept")
            absent = [q for q in [target, *members] if q not in where]
            if absent:
                problems.append(f"positions {absent} were already dropped (or never existed)")
            twice = [q for q in members if q in keep or q in seen]
            if twice:
                problems.append(f"positions {twice} merged into {target} are kept or merged twice")
            seen.update(members)
        if problems:
            raise ValueError(f"layer {layer}: bad merge: " + "; ".join(problems) + "; merge dropped positions into "
                             "kept ones, each once")
        merged = hidden.clone()
        for target, members in merge.into.items():
            if members:
                rows = torch.tensor([where[target], *(where[int(q)] for q in members)], device=hidden.device)
                merged[:, where[target]] = hidden.index_select(1, rows).mean(dim=1)
        return merged

    @staticmethod
    def _drop(hidden: torch.Tensor, kept: list[int], keep, protected, layer: int) -> tuple[torch.Tensor, list[int]]:
        keep = sorted({int(p) for p in keep})
        where = {p: i for i, p in enumerate(kept)}
        gone = [p for p in keep if p not in where]
        if gone:
            raise ValueError(f"layer {layer}: positions {gone[:8]} were already dropped (or never existed); keep a "
                             f"subset of the {len(kept)} positions still there")
        lost = [p for p in protected if p in where and p not in keep]
        if lost:
            raise ValueError(f"layer {layer}: protected position(s) {lost} (the sink) cannot be dropped")
        if not keep:
            raise ValueError(f"layer {layer}: a drop must keep at least one token")
        index = torch.tensor([where[p] for p in keep], device=hidden.device)
        return hidden.index_select(1, index), keep
