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
from ..types import AttentionRecord, ForwardCapture, TokenBatch, prompt_keys
from ._vocab import chunked_logprobs_entropy
from .registry import SignalSpec, evaluate, parse_signal_specs


def needs_key_mass(specs: list[SignalSpec]) -> bool:
    return any("key_mass" in spec.entry.requires for spec in specs)


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


def _key_marks(specs: list[SignalSpec], batch: TokenBatch, key_marks: torch.Tensor | None) -> torch.Tensor | None:
    """The (B, T) keys whose attention mass the specs need: the prompt, or the caller's ``key_marks``."""
    wanted = {({**spec.entry.options(), **spec.options}).get("keys") for spec in specs
              if "key_mass" in spec.entry.requires}
    if not wanted:
        return None
    if len(wanted) > 1:
        raise ValueError(f"one scoring pass records one set of marked keys, but the signals ask for {sorted(wanted)}; "
                         "compute them in separate calls")
    (keys,) = wanted
    if keys == "prompt":
        return prompt_keys(batch)
    if keys == "marked":
        if key_marks is None:
            raise ValueError("keys='marked' needs compute_signals(..., key_marks=(B, T) bool tensor) marking the keys "
                             "(e.g. an evidence span)")
        if key_marks.shape != batch.input_ids.shape or key_marks.dtype != torch.bool:
            raise ValueError(f"key_marks must be a bool tensor of shape {tuple(batch.input_ids.shape)}, "
                             f"got {key_marks.dtype} {tuple(key_marks.shape)}")
        return key_marks & batch.attention_mask
    raise ValueError(f"keys={keys!r} is not one of ('prompt', 'marked')")


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
    key_marks: torch.Tensor | None = None,
) -> ForwardCapture:
    """Run the model over ``batch`` in row chunks and return what was captured.

    key_marks: optional (B, T) bool keys; each recorded layer then also records every row's attention mass
    on them (``AttentionRecord.key_mass``).
    """
    if key_marks is not None and not attention_layers:
        raise ValueError("key_marks needs attention_layers: the mass is recorded by the attention recorder")
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
            if key_marks is not None:
                recorder.key_marks = key_marks  # consumed row chunk by row chunk, in call order
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
            layer: AttentionRecord(r.entropy.cpu(), r.n_keys.cpu(), None if r.sink_prob is None else r.sink_prob.cpu(),
                                   None if r.key_mass is None else r.key_mass.cpu())
            for layer, r in recorder.result().items()
        }
    return ForwardCapture(
        batch=batch,
        num_layers=num_layers,
        attention=attention,
        logprobs=torch.cat(logprob_parts) if logprob_parts else None,
        predictive_entropy=torch.cat(entropy_parts) if entropy_parts else None,
        key_marks=None if key_marks is None else key_marks.cpu(),
    )


def compute_signals(
    model,
    batch: TokenBatch,
    specs,
    *,
    temperature: float = 1.0,
    batch_size: int = 8,
    progress: bool = False,
    key_marks: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Compute the requested signals on ``batch``: {label: (B, T) float32 on the CPU}.

    specs: names or dicts (see ``registry.parse_signal_spec``); validated before any forward runs.
    key_marks: (B, T) bool keys for ``attention_mass`` with ``keys="marked"`` (e.g. an evidence span).
    Position ids follow the attention mask (left padding does not shift positions), as in HF generate.
    """
    parsed = parse_signal_specs(specs)
    num_layers = len(find_decoder_layers(model))
    layers, record_sink, backend, precision = _attention_plan(parsed, num_layers)
    needs_logits = any("logits" in spec.entry.requires for spec in parsed)
    batch = batch.to("cpu")
    marks = _key_marks(parsed, batch, None if key_marks is None else key_marks.cpu())
    capture = forward_capture(
        model, batch, attention_layers=layers, record_sink=record_sink, backend=backend,
        precision=precision, logits=needs_logits, temperature=temperature, batch_size=batch_size, progress=progress,
        key_marks=marks,
    )
    return {spec.label: evaluate(spec, capture) for spec in parsed}
