"""Scoring: one no-grad forward per row chunk that captures exactly what the requested signals need.

    batch + specs ──► forward (attention-entropy recorder on the needed layers; chunked LM head if needed)
                  ──► (counterfactual forwards; the teacher's forward) ──► ForwardCapture
                  ──► each signal fn ──► {label: (B, T) float32}

Signals are computed in eval mode (no dropout) under ``torch.no_grad``: they are detached by construction.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from tqdm.auto import tqdm

from ..capture.hooks import find_decoder_layers
from ..types import AttentionRecord, CounterfactualRecord, ForwardCapture, TeacherRecord, TokenBatch
from ._vocab import chunked_logprobs_entropy
from .counterfactual import Context, counterfactual_needs, counterfactual_scores, mask_positions, positions_from_mask
from .plan import AttentionPlan, attention_plan
from .registry import evaluate, parse_signal_specs
from .teacher import check_same_vocabulary, teacher_needs, teacher_scores


@torch.no_grad()
def forward_capture(
    model,
    batch: TokenBatch,
    *,
    plan: AttentionPlan | None = None,
    logits: bool = False,
    temperature: float = 1.0,
    batch_size: int = 8,
    head_chunk_size: int = 256,
    progress: bool = False,
    key_marks: torch.Tensor | None = None,
) -> ForwardCapture:
    """Run the model over ``batch`` in row chunks and return what was captured.

    plan: the attention to record (``signals.attention_plan``); None records no attention.
    key_marks: optional (B, T) bool keys; each recorded layer then also records every row's attention mass
    on them (``AttentionRecord.key_mass``), consumed row chunk by row chunk in call order.
    """
    if key_marks is not None and (plan is None or not plan.layers):
        raise ValueError("key_marks needs attention layers: the mass is recorded by the attention recorder")
    num_layers = len(find_decoder_layers(model))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    logprob_parts, entropy_parts = [], []
    recording = nullcontext(None) if plan is None else plan.recorder(model, key_marks=key_marks)
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
            layer: AttentionRecord(r.entropy.cpu(), r.n_keys.cpu(), *(None if v is None else v.cpu()
                                                                      for v in (r.sink_prob, r.key_mass, r.received)))
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
    marks: dict[str, torch.Tensor] | None = None,
    contexts: dict[str, Context] | None = None,
    teacher=None,
) -> dict[str, torch.Tensor]:
    """Compute the requested signals on ``batch``: {label: (B, T) float32 on the CPU}.

    specs: names or dicts (see ``registry.parse_signal_spec``); validated before any forward runs.
    key_marks: (B, T) bool keys for ``attention_mass`` with ``keys="marked"`` (default: ``marks["evidence"]``).
    marks: prompt role -> (B, T) bool tokens (``tasks.spans.token_marks``); counterfactual signals hide the
        ``evidence`` ones (``evidence_masked``).
    contexts: counterfactual kind -> its ``Context`` when the caller builds it (``steps_shuffled``: the re-tokenized
        prompt, each row ending with the same response in the same last columns as ``batch``).
    teacher: a model with ``model``'s vocabulary for the teacher signals (``signals.teacher``), on any device.
    Position ids follow the attention mask (left padding does not shift positions), as in HF generate; a
    counterfactual that hides tokens keeps every position id.
    """
    parsed = parse_signal_specs(specs)
    num_layers = len(find_decoder_layers(model))
    plan = attention_plan(parsed, num_layers)
    needs_logits = any("logits" in spec.entry.requires for spec in parsed)
    batch = batch.to("cpu")
    marks = {role: m.cpu().bool() for role, m in (marks or {}).items()}
    if key_marks is None and plan.keys == "marked" and "evidence" in marks:
        key_marks = marks["evidence"]
    counterfactual_contexts = _counterfactual_contexts(batch, counterfactual_needs(parsed), marks, contexts or {})
    needs_teacher, teacher_kls = teacher_needs(parsed)
    if needs_teacher:
        if teacher is None:
            names = [spec.label for spec in parsed if "teacher" in spec.entry.requires]
            raise ValueError(f"signals {names} need a teacher: compute_signals(..., teacher=model), a model with the "
                             "scoring model's tokenizer")
        check_same_vocabulary(model, teacher)
    marked = plan.key_marks(batch, None if key_marks is None else key_marks.cpu())
    capture = forward_capture(
        model, batch, plan=plan, logits=needs_logits, temperature=temperature, batch_size=batch_size,
        progress=progress, key_marks=marked,
    )
    full = Context(batch.input_ids, batch.attention_mask, positions_from_mask(batch.attention_mask))
    width = _response_width(batch)
    for kind, (context, exact) in counterfactual_contexts.items():
        logprobs, kl = counterfactual_scores(model, full, context, width, exact_kl=exact, temperature=temperature,
                                             batch_size=batch_size)
        capture.counterfactual[kind] = CounterfactualRecord(_token_layout(logprobs, batch), _token_layout(kl, batch))
    if needs_teacher:
        logprobs, kls = teacher_scores(model, teacher, full.input_ids.to(_device(model)), full.attention_mask.to(
            _device(model)), width, teacher_kls, temperature=temperature, position_ids=full.position_ids.to(
            _device(model)), batch_size=batch_size)
        capture.teacher = TeacherRecord(_token_layout(logprobs.cpu(), batch),
                                        {key: _token_layout(v.cpu(), batch) for key, v in kls.items()})
    return {spec.label: evaluate(spec, capture) for spec in parsed}


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _response_width(batch: TokenBatch) -> int:
    """Columns from the earliest response token to the end: every row's response lies in them."""
    if not batch.response_mask.any():
        return 1
    first = batch.response_mask.long().argmax(-1)[batch.response_mask.any(-1)]
    return max(1, batch.shape[1] - int(first.min()))


def _token_layout(values: torch.Tensor | None, batch: TokenBatch) -> torch.Tensor | None:
    if values is None:
        return None
    out = torch.zeros(batch.shape, dtype=torch.float32)
    out[:, batch.shape[1] - values.shape[1]:] = values
    return torch.where(batch.response_mask, out, torch.zeros_like(out))


def _counterfactual_contexts(batch: TokenBatch, needs: dict[str, bool], marks: dict[str, torch.Tensor],
                             given: dict[str, Context]) -> dict[str, tuple[Context, bool]]:
    """The counterfactual context of each needed kind, checked before any forward runs."""
    out = {}
    for kind, exact in needs.items():
        if kind in given:
            out[kind] = (given[kind], exact)
        elif kind == "evidence_masked":
            if "evidence" not in marks:
                raise ValueError("context_dependency / token_attribution on 'evidence_masked' need the prompt's evidence "
                                 "tokens: compute_signals(..., marks={'evidence': (B, T) bool})")
            evidence = marks["evidence"]
            if evidence.shape != batch.shape:
                raise ValueError(f"marks['evidence'] has shape {tuple(evidence.shape)}, the batch {batch.shape}")
            if (evidence & batch.response_mask).any():
                raise ValueError("marks['evidence'] marks response tokens; evidence lies in the prompt")
            out[kind] = (Context(batch.input_ids, mask_positions(batch.attention_mask, evidence),
                                 positions_from_mask(batch.attention_mask)), exact)
        else:
            raise ValueError(f"signals on {kind!r} need its context: compute_signals(..., contexts={{{kind!r}: "
                             "Context(...)}}) with the re-tokenized prompt")
    return out
