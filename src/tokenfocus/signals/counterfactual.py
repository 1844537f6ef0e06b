"""Counterfactual signals: how a response token's probability changes when part of the prompt is hidden or changed.

    full context ──────────► log pi(y_t | x, y_<t)        (the scoring forward: the trainer's or the engine's)
    counterfactual context ► log pi(y_t | x~, y_<t)       (one extra no-grad forward of the same response)

Counterfactual contexts (``counterfactual`` option; each needs a role marked in the prompt, ``tasks.spans``):
  * ``evidence_masked``: the ``evidence`` tokens hidden through the attention mask, every position id unchanged
    (PGPO's blind forward, Video-KTR's visual mask; RL_TOKEN_CREDIT.md §2, §3);
  * ``steps_shuffled``: the prompt's ordered ``steps`` permuted (one permutation per prompt, never the identity)
    and re-tokenized (Video-KTR's temporal shuffle, §3).

Signals:
  * ``context_dependency`` (PGPO's token visual dependency, on text): S_t = KL(pi(.|x, y_<t) || pi(.|x~, y_<t)).
    ``estimator="k3"`` (default): with log r = log pi~(y_t) - log pi(y_t), k3 = r - 1 - log r >= 0, whose
    expectation over y_t ~ pi is the KL (one extra forward). ``"full_kl"``: exact over the vocabulary, chunked
    over positions (two extra forwards: the full context's distributions are recomputed beside the other's).
  * ``token_attribution`` (Video-KTR): d_t = log pi(y_t | x) - log pi(y_t | x~), signed (the reference code) or
    ``signed=False`` for |d_t|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ..options import check_choice
from ..types import ForwardCapture
from .registry import register_signal

Counterfactual = Literal["evidence_masked", "steps_shuffled"]
COUNTERFACTUALS = get_args(Counterfactual)
# The prompt role each counterfactual needs marked.
ROLE_OF = {"evidence_masked": "evidence", "steps_shuffled": "steps"}
Estimator = Literal["k3", "full_kl"]
_MAX_LOG_RATIO = 80.0  # k3 stays finite in float32 (e^80 ~ 5.5e34)


@dataclass(frozen=True)
class Context:
    """One forward's input: (B, T) ids and bool attention mask, and (B, T) position ids or None (the model's
    default: 0..T-1 per row, as TRL's scorer calls it)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None = None

    def rows(self, start: int, stop: int, device) -> "Context":
        pos = None if self.position_ids is None else self.position_ids[start:stop].to(device)
        return Context(self.input_ids[start:stop].to(device), self.attention_mask[start:stop].to(device), pos)


def mask_positions(attention_mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The attention mask with the ``hidden`` (B, T) bool positions switched off (their position ids do not move:
    pass the full context's position ids with it)."""
    if hidden.shape != attention_mask.shape:
        raise ValueError(f"marks of shape {tuple(hidden.shape)} do not fit the attention mask "
                         f"{tuple(attention_mask.shape)}")
    return attention_mask.bool() & ~hidden.bool()


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that follow the attention mask (left padding does not shift positions), as HF generate."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def final_hidden(model, context: Context) -> torch.Tensor:
    return model.get_decoder()(input_ids=context.input_ids, attention_mask=context.attention_mask.long(),
                               position_ids=context.position_ids, use_cache=False).last_hidden_state


def head_logprobs(model, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden).float()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.log_softmax(logits / temperature, dim=-1)


@torch.no_grad()
def counterfactual_scores(model, full: Context, counterfactual: Context, width: int, *, exact_kl: bool = False,
                          temperature: float = 1.0, batch_size: int = 8, chunk_size: int = 256):
    """Score the last ``width`` tokens of every row (the completion, the same tokens in both contexts) under
    ``counterfactual``: (B, width) log-probs at each token's own column, and with ``exact_kl`` the (B, width) exact
    KL(pi(.|full) || pi(.|counterfactual)) of the distributions predicting them (one more forward, over ``full``).

    The two contexts may differ in width (a re-tokenized prompt): rows align on their last ``width`` columns.
    No (B, T, V) tensor: the LM head runs on ``chunk_size`` positions at a time."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if full.input_ids.shape[0] != counterfactual.input_ids.shape[0]:
        raise ValueError("the full and counterfactual contexts must hold the same rows")
    if not torch.equal(full.input_ids[:, -width:], counterfactual.input_ids[:, -width:]):
        raise ValueError("the counterfactual context must end with the same completion tokens as the full one")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logprob_rows, kl_rows = [], []
    try:
        for start in range(0, full.input_ids.shape[0], batch_size):
            cf = counterfactual.rows(start, start + batch_size, device)
            targets = cf.input_ids[:, -width:]
            hidden_cf = final_hidden(model, cf)[:, -width - 1:-1]  # rows predicting the completion tokens
            hidden_full = final_hidden(model, full.rows(start, start + batch_size, device))[:, -width - 1:-1] \
                if exact_kl else None
            lp = torch.empty(targets.shape, dtype=torch.float32, device=device)
            kl = torch.empty_like(lp) if exact_kl else None
            step = max(1, chunk_size // targets.shape[0])  # columns per LM-head call: ~chunk_size positions
            for c in range(0, width, step):
                stop = min(width, c + step)
                logp_cf = head_logprobs(model, hidden_cf[:, c:stop], temperature)
                lp[:, c:stop] = logp_cf.gather(-1, targets[:, c:stop, None]).squeeze(-1)
                if exact_kl:
                    logp_full = head_logprobs(model, hidden_full[:, c:stop], temperature)
                    p = logp_full.exp()
                    kl[:, c:stop] = torch.where(p > 0, p * (logp_full - logp_cf), torch.zeros_like(p)).sum(-1)
            logprob_rows.append(lp.cpu())
            if exact_kl:
                kl_rows.append(kl.clamp_min(0.0).cpu())
    finally:
        model.train(was_training)
    return torch.cat(logprob_rows), (torch.cat(kl_rows) if exact_kl else None)


def _record(capture: ForwardCapture, counterfactual: str, owner: str):
    check_choice("counterfactual", counterfactual, Counterfactual, owner=owner)
    if capture.logprobs is None:
        raise ValueError(f"{owner} needs the logits pass of the scoring forward")
    record = capture.counterfactual.get(counterfactual)
    if record is None:
        raise ValueError(f"{owner}: no {counterfactual!r} forward in this capture; it needs the prompt's "
                         f"{ROLE_OF[counterfactual]!r} marks (a task that marks them, or compute_signals(..., marks=...))")
    return record


@register_signal("context_dependency", requires=("logits", "counterfactual"), cost="forward+counterfactual")
def context_dependency(capture: ForwardCapture, estimator: Estimator = "k3",
                       counterfactual: Counterfactual = "evidence_masked") -> torch.Tensor:
    """KL(pi(.|full prompt) || pi(.|prompt with the evidence hidden)) per response token (PGPO), >= 0."""
    check_choice("estimator", estimator, Estimator, owner="context_dependency")
    record = _record(capture, counterfactual, "context_dependency")
    mask = capture.batch.response_mask
    if estimator == "full_kl":
        if record.kl is None:
            raise ValueError("context_dependency estimator='full_kl' needs the exact KL of the counterfactual forward")
        values = record.kl
    else:
        log_ratio = (record.logprobs.double() - capture.logprobs.double()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        values = (torch.expm1(log_ratio) - log_ratio).clamp_min(0.0)
    return torch.where(mask, values.float(), torch.zeros_like(capture.logprobs))


@register_signal("token_attribution", requires=("logits", "counterfactual"), cost="forward+counterfactual")
def token_attribution(capture: ForwardCapture, counterfactual: Counterfactual = "evidence_masked",
                      signed: bool = True) -> torch.Tensor:
    """log pi(y_t | full prompt) - log pi(y_t | counterfactual prompt) per response token (Video-KTR), or its
    absolute value with ``signed=False``. Positive: the hidden part made the token likelier."""
    record = _record(capture, counterfactual, "token_attribution")
    mask = capture.batch.response_mask
    values = capture.logprobs - record.logprobs
    if not signed:
        values = values.abs()
    return torch.where(mask, values, torch.zeros_like(values))


def counterfactual_needs(specs) -> dict[str, bool]:
    """{counterfactual kind: whether its exact KL is needed} for parsed signal ``specs``."""
    needs: dict[str, bool] = {}
    for spec in specs:
        if "counterfactual" not in spec.entry.requires:
            continue
        options = {**spec.entry.options(), **spec.options}
        kind = options["counterfactual"]
        check_choice("counterfactual", kind, Counterfactual, owner=spec.name)
        needs[kind] = needs.get(kind, False) or options.get("estimator") == "full_kl"
    return needs


def required_roles(specs) -> dict[str, list[str]]:
    """{prompt role: labels of the signals that need it marked} for parsed signal ``specs``: counterfactual
    signals need their context's role; attention mass on ``keys="marked"`` keys needs the evidence."""
    roles: dict[str, list[str]] = {}
    for spec in specs:
        options = {**spec.entry.options(), **spec.options}
        if "counterfactual" in spec.entry.requires:
            roles.setdefault(ROLE_OF[options["counterfactual"]], []).append(spec.label)
        if "key_mass" in spec.entry.requires and options.get("keys") == "marked":
            roles.setdefault("evidence", []).append(spec.label)
    return roles
