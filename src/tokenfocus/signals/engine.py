"""Scoring: one no-grad forward per row chunk that captures exactly what the requested signals need.

    batch + specs ──► forward (attention-entropy recorder on the needed layers; chunked LM head if needed)
                  ──► ForwardCapture ──► each signal fn ──► {label: (B, T) float32}

Signals are computed in eval mode (no dropout) under ``torch.no_grad``: they are detached by construction.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from tqdm.auto import tqdm

from ..capture.entropy_attention import record_attention_entropy, resolve_layers
from ..capture.hooks import find_decoder_layers
from ..types import AttentionRecord, ForwardCapture, TokenBatch
from ._vocab import chunked_logprobs_entropy
from .registry import SignalSpec, evaluate, parse_signal_specs


def _attention_plan(specs: list[SignalSpec], num_layers: int) -> tuple[list[int], bool, str, str]:
    """Union of the layers to record; sink probabilities, the exact backend or fp32 if any spec asks."""
    layers: set[int] = set()
    record_sink, backend, precision = False, "lse", "model"
    for spec in specs:
        if "attention" not in spec.entry.requires:
            continue
        defaults = spec.entry.options()
        options = {**defaults, **spec.options}
        layers.update(resolve_layers(options["layers"], num_layers))
        record_sink |= options.get("sink") == "exclude"
        if options.get("backend") == "chunked":
            backend = "chunked"
        if options.get("precision") == "fp32":
            precision = "fp32"
    return sorted(layers), record_sink, backend, precision


@torch.no_grad()
def forward_capture(
    model,
    batch: TokenBatch,
    *,
    attention_layers: list[int] | None = None,
    record_sink: bool = False,
    backend: str = "lse",
    precision: str = "fp32",
    logits: bool = False,
    temperature: float = 1.0,
    batch_size: int = 8,
    head_chunk_size: int = 256,
    progress: bool = False,
) -> ForwardCapture:
    """Run the model over ``batch`` in row chunks and return what was captured."""
    num_layers = len(find_decoder_layers(model))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    logprob_parts, entropy_parts = [], []
    recording = (
        record_attention_entropy(
            model, attention_layers, backend=backend, record_sink=record_sink, precision=precision
        )
        if attention_layers
        else nullcontext(None)
    )
    try:
        with recording as recorder:
            starts = range(0, batch.shape[0], batch_size)
            for start in tqdm(starts, desc="scoring", disable=not progress, leave=False):
                chunk = batch.rows(start, start + batch_size).to(device)
                if not logits and recorder is None:
                    continue
                position_ids = (chunk.attention_mask.long().cumsum(-1) - 1).clamp_min(0)
                hidden = decoder(
                    input_ids=chunk.input_ids,
                    attention_mask=chunk.attention_mask.long(),
                    position_ids=position_ids,
                    use_cache=False,
                ).last_hidden_state
                if logits:
                    lp, ent = chunked_logprobs_entropy(
                        hidden, head, chunk.input_ids, chunk_size=head_chunk_size,
                        temperature=temperature, final_softcap=softcap,
                    )
                    logprob_parts.append(lp.cpu())
                    entropy_parts.append(ent.cpu())
    finally:
        model.train(was_training)
    attention: dict[int, AttentionRecord] = {}
    if recorder is not None:
        attention = {
            layer: AttentionRecord(r.entropy.cpu(), r.n_keys.cpu(), None if r.sink_prob is None else r.sink_prob.cpu())
            for layer, r in recorder.result().items()
        }
    return ForwardCapture(
        batch=batch,
        num_layers=num_layers,
        attention=attention,
        logprobs=torch.cat(logprob_parts) if logprob_parts else None,
        predictive_entropy=torch.cat(entropy_parts) if entropy_parts else None,
    )


def compute_signals(
    model,
    batch: TokenBatch,
    specs,
    *,
    temperature: float = 1.0,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Compute the requested signals on ``batch``: {label: (B, T) float32 on the CPU}.

    specs: names or dicts (see ``registry.parse_signal_spec``); validated before any forward runs.
    Position ids follow the attention mask (left padding does not shift positions), as in HF generate.
    """
    parsed = parse_signal_specs(specs)
    num_layers = len(find_decoder_layers(model))
    layers, record_sink, backend, precision = _attention_plan(parsed, num_layers)
    needs_logits = any("logits" in spec.entry.requires for spec in parsed)
    capture = forward_capture(
        model, batch.to("cpu"), attention_layers=layers, record_sink=record_sink, backend=backend,
        precision=precision, logits=needs_logits, temperature=temperature, batch_size=batch_size, progress=progress,
    )
    return {spec.label: evaluate(spec, capture) for spec in parsed}
