"""Teacher signals (RL_TOKEN_CREDIT.md §4 HyperEyes, §5 dGRPO, §6 SCOPE; issue 13): a teacher with the student's
vocabulary teacher-forces the student's own response tokens at the same predicting positions (row t - 1 predicts
token t, DESIGN.md's alignment rule), in one no-grad forward.

  teacher_logprobs   log pi_T(y_t | x, y_<t)
  teacher_logratio   log pi_T(y_t) - log pi(y_t), pi the scoring model (in training the rollout policy pi_old):
                     dGRPO form B's dense advantage term over its coefficient
  teacher_kl         KL(pi(.|s_t) || pi_T(.|s_t)) per response token, ``estimator``:
      full        exact over the vocabulary, in position chunks (no (B, C, V) tensor for both models at once)
      topk        on the teacher's top-k support, both distributions renormalized there (SCOPE's code alternative)
      sampled_k1  log pi(y_t) - log pi_T(y_t) at the sampled token (the response token: it was sampled from pi)
      sampled_k3  (r - 1) - log r with r = pi_T(y_t) / pi(y_t): unbiased, >= 0
    The sampled estimators read the two log-probs only; full and topk need both models' final hidden states, which
    ``teacher_scores`` turns into the capture's ``TeacherRecord.kl``.

``reverse_kl`` is also dGRPO form A's loss term (``losses.distill``): there the gradient flows through the student.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.checkpoint import checkpoint

from ..options import check_choice
from ..types import ForwardCapture, TeacherRecord
from .counterfactual import Context, final_hidden, head_logprobs
from .registry import register_signal

KLEstimator = Literal["full", "topk", "sampled_k1", "sampled_k3"]
ESTIMATORS = ("full", "topk", "sampled_k1", "sampled_k3")


def _logits(hidden: torch.Tensor, head: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    out = hidden @ head.t()
    out = out if out.dtype == torch.float64 else out.float()
    return out if temperature == 1.0 else out / temperature


def _check_vocabularies(student_head: torch.Tensor, teacher_head: torch.Tensor) -> None:
    if student_head.shape[0] != teacher_head.shape[0]:
        raise ValueError(f"student and teacher vocabularies differ ({student_head.shape[0]} vs "
                         f"{teacher_head.shape[0]} tokens): on-policy distillation needs one vocabulary")


def reverse_kl(student_hidden: torch.Tensor, student_head: torch.Tensor, teacher_hidden: torch.Tensor,
               teacher_head: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor | None = None, *,
               estimator: KLEstimator = "full", topk: int = 20, chunk: int = 256,
               temperature: float = 1.0) -> torch.Tensor:
    """(B, C) per-token KL(pi_S || pi_T) (module docstring), 0 where ``mask`` is False. ``*_hidden``: (B, C, H) final
    hidden states at the predicting positions; ``*_head``: (V, H) LM-head weights; ``tokens``: (B, C) the sampled
    tokens (needed by the sampled estimators); ``temperature`` divides both models' logits (the rollout's)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
    if estimator.startswith("sampled") and tokens is None:
        raise ValueError(f"estimator {estimator!r} needs the sampled tokens")
    _check_vocabularies(student_head, teacher_head)
    b, c = mask.shape
    flat_mask = mask.reshape(-1).bool()
    s_hidden = student_hidden.reshape(b * c, -1)[flat_mask]
    t_hidden = teacher_hidden.detach().reshape(b * c, -1)[flat_mask]
    t_head = teacher_head.detach()
    ids = tokens.reshape(-1)[flat_mask] if tokens is not None else None

    def piece(s_rows: torch.Tensor, t_rows: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        log_s = torch.log_softmax(_logits(s_rows, student_head, temperature), dim=-1)
        with torch.no_grad():
            log_t = torch.log_softmax(_logits(t_rows, t_head, temperature), dim=-1)
        if estimator == "full":
            return (log_s.exp() * (log_s - log_t)).sum(-1)
        if estimator == "topk":
            support = log_t.topk(min(topk, log_t.size(-1)), dim=-1).indices
            s_k, t_k = log_s.gather(-1, support), log_t.gather(-1, support)
            s_k = s_k - torch.logsumexp(s_k, -1, keepdim=True)
            t_k = t_k - torch.logsumexp(t_k, -1, keepdim=True)
            return (s_k.exp() * (s_k - t_k)).sum(-1)
        log_ratio = log_t.gather(-1, y[:, None])[:, 0] - log_s.gather(-1, y[:, None])[:, 0]  # log pi_T - log pi_S
        return -log_ratio if estimator == "sampled_k1" else log_ratio.exp() - 1 - log_ratio

    # With a gradient, each chunk is recomputed in the backward pass (activation checkpointing): autograd would
    # otherwise keep every chunk's (chunk, V) softmax until the backward, a whole (B, C, V) tensor again (measured on
    # an H200 at 128 x 256 tokens: the step's peak memory 1.33 x the plain step's without, see docs/teacher.md).
    recompute = torch.is_grad_enabled() and (s_hidden.requires_grad or student_head.requires_grad)
    pieces = []
    for start in range(0, s_hidden.size(0), chunk):
        rows = (s_hidden[start:start + chunk], t_hidden[start:start + chunk],
                ids[start:start + chunk] if ids is not None else None)
        pieces.append(checkpoint(piece, *rows, use_reentrant=False) if recompute else piece(*rows))
    values = torch.cat(pieces) if pieces else s_hidden.new_zeros(0)
    out = torch.zeros(b * c, dtype=values.dtype, device=values.device)
    return out.masked_scatter(flat_mask, values).reshape(b, c) if values.numel() else out.reshape(b, c)


class _WeightedVocabularyKL(torch.autograd.Function):
    """sum_i w_i KL_i over (N, H) rows with its gradient formed in the forward pass, chunk by chunk, so that the
    backward only scales it: d KL_i / d z_i = q (log q - log t - KL_i) / temperature on the KL's support (the
    vocabulary, or the teacher's top k with both sides renormalized there), z_i the student's logits. Against
    activation checkpointing this skips the backward's recomputation of both models' logits and softmaxes (two of
    six vocabulary-sized matmuls per token; issue 13's cost target). Saved for the backward: (N, H) and (V, H)."""

    @staticmethod
    def forward(ctx, s_rows, s_head, t_rows, t_head, weights, estimator, topk, chunk, temperature, want_grad):
        exact = torch.promote_types(s_rows.dtype, torch.float32)  # the gradients' accumulation dtype
        grad_rows = torch.zeros_like(s_rows, dtype=exact) if want_grad else None
        grad_head = torch.zeros_like(s_head, dtype=exact) if want_grad else None
        kls = []
        for start in range(0, s_rows.size(0), chunk):
            h, w = s_rows[start:start + chunk], weights[start:start + chunk]
            z_s = _logits(h, s_head, temperature)
            log_t = torch.log_softmax(_logits(t_rows[start:start + chunk], t_head, temperature), dim=-1)
            if estimator == "full":
                support, log_s = None, torch.log_softmax(z_s, dim=-1)
            else:
                support = log_t.topk(min(topk, log_t.size(-1)), dim=-1).indices
                log_s, log_t = z_s.gather(-1, support), log_t.gather(-1, support)
                log_s = log_s - torch.logsumexp(log_s, -1, keepdim=True)
                log_t = log_t - torch.logsumexp(log_t, -1, keepdim=True)
            q, diff = log_s.exp(), log_s - log_t
            kl = (q * diff).sum(-1)
            kls.append(kl)
            if not want_grad:
                continue
            g = q * (diff - kl[:, None]) * (w.to(q.dtype)[:, None] / temperature)  # d (w KL) / d z
            if support is None:
                grad_rows[start:start + chunk] = g.to(s_head.dtype) @ s_head
                grad_head += (g.t().to(h.dtype) @ h).to(grad_head.dtype)
            else:  # the gradient lives on the k support columns only
                grad_rows[start:start + chunk] = torch.einsum("ck,ckh->ch", g, s_head[support].to(g.dtype))
                grad_head.index_add_(0, support.reshape(-1),
                                     (g[..., None] * h.to(g.dtype)[:, None, :]).reshape(-1, h.size(-1)))
        kl = torch.cat(kls) if kls else s_rows.new_zeros(0, dtype=torch.float32)
        ctx.grads = (grad_rows, grad_head)
        ctx.dtypes = (s_rows.dtype, s_head.dtype)
        ctx.mark_non_differentiable(kl)
        return (weights.to(kl.dtype) * kl).sum(), kl

    @staticmethod
    def backward(ctx, grad_total, _grad_kl):
        if ctx.grads is None:
            raise RuntimeError("weighted_reverse_kl keeps its gradient for one backward pass, and it was already used "
                               "(a second backward, retain_graph=True): compute the term again for another backward")
        grad_rows, grad_head = ctx.grads
        ctx.grads = None
        return ((grad_rows * grad_total).to(ctx.dtypes[0]), (grad_head * grad_total).to(ctx.dtypes[1]),
                None, None, None, None, None, None, None, None)


def weighted_reverse_kl(student_hidden: torch.Tensor, student_head: torch.Tensor, teacher_hidden: torch.Tensor,
                        teacher_head: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor,
                        tokens: torch.Tensor | None = None, *, estimator: KLEstimator = "full", topk: int = 20,
                        chunk: int = 256, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of ``weights`` x KL(pi_S || pi_T) over the ``mask``ed tokens, the (B, C) per-token KL detached): what
    ``(weights * reverse_kl(...)).sum()`` gives, value and gradient, for a loss whose per-token coefficients are
    known before the KL (``losses.aggregate_coefficients``). The full and top-k estimators form their gradient in
    the forward pass (``_WeightedVocabularyKL``); the sampled ones read two log-probs and go through
    ``reverse_kl``. ``weights``: (B, C), detached."""
    if estimator not in ("full", "topk") or weights.requires_grad:
        kl = reverse_kl(student_hidden, student_head, teacher_hidden, teacher_head, mask, tokens, estimator=estimator,
                        topk=topk, chunk=chunk, temperature=temperature)
        return (torch.where(mask.bool(), weights, 0.0) * kl).sum(), kl.detach()
    _check_vocabularies(student_head, teacher_head)
    b, c = mask.shape
    flat_mask = mask.reshape(-1).bool()
    want_grad = torch.is_grad_enabled() and (student_hidden.requires_grad or student_head.requires_grad)
    s_rows = student_hidden.reshape(b * c, -1)[flat_mask]
    t_rows = teacher_hidden.detach().reshape(b * c, -1)[flat_mask]
    total, values = _WeightedVocabularyKL.apply(s_rows, student_head, t_rows, teacher_head.detach(),
                                                weights.detach().reshape(-1)[flat_mask], estimator, topk, chunk,
                                                temperature, want_grad)
    out = torch.zeros(b * c, dtype=values.dtype, device=values.device)
    return total, (out.masked_scatter(flat_mask, values) if values.numel() else out).reshape(b, c)


_MAX_LOG_RATIO = 80.0  # k3 stays finite in float32 (e^80 ~ 5.5e34)


def kl_key(estimator: str, topk: int = 20) -> str:
    """The key of a vocabulary KL in ``TeacherRecord.kl``: "full" or "topk:<k>"."""
    return "full" if estimator == "full" else f"topk:{topk}"


def teacher_needs(specs) -> tuple[bool, set[tuple[str, int]]]:
    """(whether any parsed spec needs the teacher, the (estimator, topk) of each vocabulary KL it needs)."""
    needs = any("teacher" in spec.entry.requires for spec in specs)
    kls = {(spec.options.get("estimator", "full"), int(spec.options.get("topk", 20))) for spec in specs
           if spec.entry.name == "teacher_kl" and spec.options.get("estimator", "full") in ("full", "topk")}
    return needs, kls


def check_same_vocabulary(student, teacher) -> None:
    """A ValueError when the two LM heads have different numbers of rows (the tokenizers are compared where they
    are loaded: ``recipes.train.vocabulary_mismatch``)."""
    s, t = student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
    if s != t:
        raise ValueError(f"the teacher's vocabulary has {t} tokens and the scoring model's {s}: teacher signals score "
                         "the student's own token ids, so both need one tokenizer (e.g. two models of one family)")


@torch.no_grad()
def teacher_scores(student, teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int,
                   kls=(), *, temperature: float = 1.0, position_ids: torch.Tensor | None = None,
                   batch_size: int = 8, chunk: int = 256) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The teacher's (B, width) log-probs of the last ``width`` tokens of every row, and for each (estimator, topk)
    in ``kls`` ("full", "topk") the (B, width) KL(pi_student || pi_teacher) of the distributions predicting them;
    on the student's device. The teacher may live on another device: its inputs go there, its hidden states come
    back. ``position_ids``: None lets both models number positions as TRL's scorer does."""
    check_same_vocabulary(student, teacher)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = next(student.parameters()).device
    teacher_device = next(teacher.parameters()).device
    kls = sorted(set(kls))
    t_head = teacher.get_output_embeddings().weight.detach().to(device) if kls else None
    s_head = student.get_output_embeddings().weight.detach()
    modes = [(m, m.training) for m in (student, teacher)]
    for model, _ in modes:
        model.eval()
    logprob_rows, kl_rows = [], {kl_key(*k): [] for k in kls}
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            rows = Context(input_ids, attention_mask.bool(), position_ids).rows(start, start + batch_size,
                                                                                 teacher_device)
            targets = rows.input_ids[:, -width:]
            t_hidden = final_hidden(teacher, rows)[:, -width - 1:-1]  # rows predicting the response tokens
            lp = torch.empty(targets.shape, dtype=torch.float32, device=teacher_device)
            step = max(1, chunk // targets.shape[0])  # columns per LM-head call: ~chunk positions
            for c in range(0, width, step):
                lp[:, c:c + step] = head_logprobs(teacher, t_hidden[:, c:c + step], temperature).gather(
                    -1, targets[:, c:c + step, None]).squeeze(-1)
            logprob_rows.append(lp.to(device))
            if kls:
                t_hidden, targets = t_hidden.to(device), targets.to(device)
                s_hidden = final_hidden(student, rows.rows(0, len(targets), device))[:, -width - 1:-1]
                everywhere = torch.ones(targets.shape, dtype=torch.bool, device=device)
                for estimator, topk in kls:
                    kl_rows[kl_key(estimator, topk)].append(reverse_kl(
                        s_hidden, s_head, t_hidden, t_head, everywhere, estimator=estimator, topk=topk, chunk=chunk,
                        temperature=temperature).float().clamp_min(0.0))
    finally:
        for model, mode in modes:
            model.train(mode)
    return torch.cat(logprob_rows), {key: torch.cat(values) for key, values in kl_rows.items()}


def _teacher_record(capture: ForwardCapture, owner: str) -> TeacherRecord:
    if capture.teacher is None:
        raise ValueError(f"{owner} needs a teacher: in training add teacher: {{model: SPEC}} to the config (coef: 0 "
                         "uses it for signals only); offline, compute_signals(..., teacher=model)")
    return capture.teacher


def _student_logprobs(capture: ForwardCapture, owner: str) -> torch.Tensor:
    if capture.logprobs is None:
        raise ValueError(f"{owner} needs the logits pass of the scoring forward")
    return capture.logprobs


@register_signal("teacher_logprobs", requires=("teacher",), cost="teacher")
def teacher_logprobs(capture: ForwardCapture) -> torch.Tensor:
    """log pi_T(y_t | x, y_<t): the teacher's log-prob of each response token at its predicting position."""
    record = _teacher_record(capture, "teacher_logprobs")
    return torch.where(capture.batch.response_mask, record.logprobs.float(), 0.0)


@register_signal("teacher_logratio", requires=("teacher", "logits"), cost="teacher")
def teacher_logratio(capture: ForwardCapture) -> torch.Tensor:
    """log pi_T(y_t) - log pi(y_t) per response token (pi: the scoring model, in training the rollout policy):
    dGRPO form B's dense term; > 0 where the teacher likes the token more than the student did."""
    record = _teacher_record(capture, "teacher_logratio")
    student = _student_logprobs(capture, "teacher_logratio")
    return torch.where(capture.batch.response_mask, (record.logprobs.double() - student.double()).float(), 0.0)


@register_signal("teacher_kl", requires=("teacher", "logits"), cost="teacher")
def teacher_kl(capture: ForwardCapture, estimator: KLEstimator = "full", topk: int = 20) -> torch.Tensor:
    """KL(pi(.|s_t) || pi_T(.|s_t)) per response token, >= 0 except sampled_k1 (estimators: full, topk,
    sampled_k1, sampled_k3 at the response token)."""
    check_choice("estimator", estimator, KLEstimator, owner="teacher_kl")
    if topk < 1:
        raise ValueError(f"teacher_kl: topk must be >= 1, got {topk}")
    record = _teacher_record(capture, "teacher_kl")
    mask = capture.batch.response_mask
    if estimator in ("full", "topk"):
        key = kl_key(estimator, topk)
        if key not in record.kl:
            raise ValueError(f"teacher_kl estimator={estimator!r}: the capture holds no {key!r} KL (computed by "
                             "teacher_scores(..., kls=[(estimator, topk)]))")
        return torch.where(mask, record.kl[key].float(), 0.0)
    log_ratio = (record.logprobs.double() - _student_logprobs(capture, "teacher_kl").double()).clamp(
        -_MAX_LOG_RATIO, _MAX_LOG_RATIO)  # log pi_T - log pi
    values = -log_ratio if estimator == "sampled_k1" else (torch.expm1(log_ratio) - log_ratio).clamp_min(0.0)
    return torch.where(mask, values.float(), 0.0)
