"""Scoped forward hooks on the real Hugging Face module tree, under canonical names.

Canonical names (decoder-only models):
    embed                   output of the input embedding              (B, T, d)
    layers.{i}.attn_in      input of layer i's attention block, after its pre-norm (B, T, d)
    layers.{i}.attn         output of layer i's attention block        (B, T, d)   (before the residual add)
    layers.{i}.mlp_in       input of layer i's MLP block, after its pre-norm       (B, T, d)
    layers.{i}.mlp          output of layer i's MLP block              (B, T, d)
    layers.{i}.resid_post   output of decoder layer i (residual stream) (B, T, d)
    final_norm              the final norm, i.e. what the LM head reads (B, T, d)

Each captured point takes a reducer ``fn(tensor) -> tensor`` that runs inside the hook, so only the reduced
value is kept (pass ``None`` to keep the tensor itself, detached; ``detach=False`` keeps it in the autograd graph,
for a loss on hidden states such as the sink decorrelation term). Values are appended per call: a forward run
in several row chunks yields a list in call order. Hooks are always removed on exit, also on exceptions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

Reducer = Callable[[torch.Tensor], torch.Tensor]

_LAYER_POINT = re.compile(r"layers\.(\d+)\.(attn_in|attn|mlp_in|mlp|resid_post)")
# the pre-norms whose outputs are the sub-layer inputs (TransPrune's x), by architecture family
_PRE_NORMS = {"attn_in": ("input_layernorm", "ln_1", "attention_norm"),
              "mlp_in": ("post_attention_layernorm", "ln_2", "ffn_norm")}


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers: the language model's (``get_decoder().layers``) when the model names its
    decoder -- a LLaVA-family model also holds vision-encoder layers with a ``self_attn`` -- else the first
    ModuleList whose blocks carry a ``self_attn``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
        return layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and hasattr(module[0], "self_attn"):
            return module
    raise ValueError(
        f"Could not find decoder layers with a `self_attn` block in {type(model).__name__}; tokenfocus captures "
        "support Hugging Face decoder-only models (llama, qwen2/3, mistral, gemma, phi3, ...)"
    )


def _final_norm(model: nn.Module) -> nn.Module:
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    norm = getattr(base, "norm", None) or getattr(base, "final_layernorm", None)
    if norm is None:
        raise ValueError(f"{type(base).__name__} has no `norm` / `final_layernorm` module to hook")
    return norm


def resolve_point(model: nn.Module, name: str) -> nn.Module:
    """Map a canonical point name to the module whose output it is."""
    if name == "embed":
        return model.get_input_embeddings()
    if name == "final_norm":
        return _final_norm(model)
    match = _LAYER_POINT.fullmatch(name)
    if match is None:
        raise ValueError(
            f"Unknown capture point {name!r}. Valid: embed, final_norm, layers.{{i}}.attn_in, layers.{{i}}.attn, "
            "layers.{i}.mlp_in, layers.{i}.mlp, layers.{i}.resid_post"
        )
    layers = find_decoder_layers(model)
    index, part = int(match.group(1)), match.group(2)
    if index >= len(layers):
        raise ValueError(f"Capture point {name!r}: the model has {len(layers)} layers (0..{len(layers) - 1})")
    layer = layers[index]
    if part in _PRE_NORMS:
        norm = next((getattr(layer, n) for n in _PRE_NORMS[part] if hasattr(layer, n)), None)
        if norm is None:
            raise ValueError(f"Capture point {name!r}: {type(layer).__name__} has none of the pre-norms "
                             f"{list(_PRE_NORMS[part])} (a post-norm architecture has no sub-layer input after a norm)")
        return norm
    return {"attn": layer.self_attn, "mlp": layer.mlp, "resid_post": layer}[part]


def layer_output_points(model: nn.Module, *, last: bool = True) -> dict[str, None]:
    """{"layers.{i}.resid_post": None} for every decoder layer (all but the last when ``last`` is False: the sink
    decorrelation term's layers l = 1..L-1)."""
    count = len(find_decoder_layers(model))
    return {f"layers.{i}.resid_post": None for i in range(count if last else count - 1)}


class Capture:
    """Values captured by ``capture(...)``: ``cap[name]`` is the list of per-call reduced tensors."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = defaultdict(list)

    def __getitem__(self, name: str) -> list[torch.Tensor]:
        return self.values[name]


@contextmanager
def capture(model: nn.Module, points: dict[str, Reducer | None], *, detach: bool = True) -> Iterator[Capture]:
    """Record the outputs of the named points for every forward inside the block.

    detach=False keeps the (un-reduced) tensors attached to the graph, so a loss can backpropagate through them;
    reducers still run without grad. Gradient-checkpoint recomputation re-runs the hooks inside backward: those
    calls are not recorded (the forward's tensors are the ones the loss used)."""
    result = Capture()
    handles = []

    def make_hook(name: str, reducer: Reducer | None):
        def hook(_module, _inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if not detach and reducer is None:
                if torch._C._current_graph_task_id() == -1:  # not a checkpoint recompute inside backward
                    result.values[name].append(tensor)
                return
            with torch.no_grad():
                value = tensor.detach() if reducer is None else reducer(tensor.detach())
            result.values[name].append(value)

        return hook

    try:
        for name, reducer in points.items():
            handles.append(resolve_point(model, name).register_forward_hook(make_hook(name, reducer)))
        yield result
    finally:
        for handle in handles:
            handle.remove()
