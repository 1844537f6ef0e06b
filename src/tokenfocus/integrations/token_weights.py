"""How per-token weights enter a trainer's loss: the piece every tokenfocus trainer (GRPO now; DPO, SFT and
distillation next) shares, framework glue only.

    forward captures ──► signals_from_forward ──► {label: (B, C)} ──► weights ──► (B_local, C) detached
                         (completion layout)                          (policy on the whole batch
                                                                       gathered across processes)

Selection runs on the whole generation batch gathered across processes (groups may straddle ranks; each
row carries its group id), each rank keeps its rows; the policy's stats and signal statistics on the
selected / unselected tokens come back for logging.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..policies import apply_policy, parse_policy_spec, rows_before_forward, weight_histogram
from ..policies.d3s import has_rows_before_forward
from ..signals import attention_plan, counterfactual_needs, parse_signal_specs, required_roles
from ..signals.registry import evaluate
from ..signals.teacher import kl_key, teacher_needs
from ..types import (AttentionRecord, CounterfactualRecord, ForwardCapture, PolicyInputs, TeacherRecord, TokenBatch,
                     prompt_keys)


def gather_padded(accelerator, tensor: torch.Tensor, pad_value=0) -> torch.Tensor:
    """Gather (B_local, C_local) tensors of every process into (B_total, C_max), padding dim 1."""
    padded = accelerator.pad_across_processes(tensor, dim=1, pad_index=pad_value)
    return accelerator.gather(padded)


def local_rows(accelerator, batch_local: int) -> slice:
    start = accelerator.process_index * batch_local
    return slice(start, start + batch_local)


def signal_summary(values: torch.Tensor, mask: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean and quantiles of a signal over the tokens of ``mask``."""
    selected = values[mask].double()
    if selected.numel() == 0:
        return {}
    q = torch.quantile(selected, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {f"{prefix}/mean": float(selected.mean()), f"{prefix}/q10": float(q[0]), f"{prefix}/q50": float(q[1]),
            f"{prefix}/q90": float(q[2])}


def to_token_layout(values: torch.Tensor, shape, width: int) -> torch.Tensor:
    """(B, C) completion-layout values -> (B, T) token layout (the last C columns), same token index."""
    out = torch.zeros(shape, dtype=torch.float32, device=values.device)
    out[:, shape[1] - width:] = values.detach().float()
    return out


class TokenWeighting:
    """The signals a method computes and the policy that turns them into weights, parsed once. ``seed`` is the run's
    seed: it reaches the policy as ``PolicyInputs.seed``, so random subsets and tie-breaking differ across seeds."""

    def __init__(self, signals=(), policy=None, num_layers: int = 0, seed: int = 0):
        self.signals = parse_signal_specs(signals) if signals else []
        self.policy = parse_policy_spec(policy or {"name": "full"})
        self.num_layers = num_layers
        self.seed = int(seed)
        self.plan = attention_plan(self.signals, num_layers)
        # Prompt roles the signals need marked ({role: labels}; keys="marked" reads the evidence) and the
        # counterfactual forwards they need ({kind: exact KL?}).
        self.roles = required_roles(self.signals)
        self.counterfactuals = counterfactual_needs(self.signals)
        # Whether a signal reads the teacher's scores, and the vocabulary KLs ("full", "topk:<k>") they need.
        self.teacher_needed, kls = teacher_needs(self.signals)
        self.teacher_kls = sorted(kl_key(*k) for k in kls)
        self.teacher_kl_options = sorted(kls)

    def recorder(self, model, prompt_mask: torch.Tensor | None = None, width: int = 0, specs=None,
                 evidence: torch.Tensor | None = None):
        """The attention recorder the specs (default: the method's) need, with the prompt keys (or the (B, P)
        ``evidence`` marks, for keys="marked") marked when they read attention mass; ``nullcontext(None)`` when they
        need no attention."""
        plan = self.plan if specs is None else attention_plan(specs, self.num_layers)
        if not plan.layers:
            return nullcontext(None)
        marks = None
        keys = prompt_mask if plan.keys == "prompt" else evidence if plan.keys == "marked" else None
        if plan.keys == "marked" and evidence is None:
            raise ValueError("attention_mass with keys='marked' needs the prompts' evidence marks")
        if keys is not None:
            completion = torch.zeros(keys.shape[0], width, dtype=torch.bool, device=keys.device)
            marks = torch.cat([keys.bool(), completion], dim=1)
        return plan.recorder(model, key_marks=marks)

    def signals_from_forward(self, input_ids, attention_mask, completion_mask, logps, entropies,
                             records: dict[int, AttentionRecord], specs=None, counterfactual=None,
                             evidence: torch.Tensor | None = None, teacher=None) -> dict[str, torch.Tensor]:
        """(B, C) signals from one forward's captures: attention records, the trainer's log-probs and entropies,
        ``counterfactual`` {kind: ((B, C) log-probs, (B, C) exact KL or None)} from the counterfactual forwards, and
        ``teacher`` ((B, C) teacher log-probs, {"full" / "topk:<k>": (B, C) KL}) from the teacher's forward;
        ``evidence``: the (B, P) marked keys when the records hold attention mass on them."""
        full, width = attention_mask.shape[1], completion_mask.shape[1]
        response_mask = torch.zeros_like(attention_mask, dtype=torch.bool)
        response_mask[:, full - width:] = completion_mask.bool()
        batch = TokenBatch(input_ids, attention_mask.bool(), response_mask)
        marked = any(r.key_mass is not None for r in records.values())
        key_marks = None
        if marked:
            key_marks = prompt_keys(batch) if evidence is None else torch.cat(
                [evidence.bool(), torch.zeros_like(completion_mask, dtype=torch.bool)], dim=1)
        capture = ForwardCapture(
            batch=batch, num_layers=self.num_layers,
            attention={k: AttentionRecord(r.entropy, r.n_keys, r.sink_prob, r.key_mass, r.received) for k, r in records.items()},
            logprobs=to_token_layout(logps, attention_mask.shape, width),
            predictive_entropy=to_token_layout(entropies, attention_mask.shape, width),
            key_marks=key_marks,
            counterfactual={kind: CounterfactualRecord(to_token_layout(lp, attention_mask.shape, width),
                                                       None if kl is None else to_token_layout(kl, attention_mask.shape,
                                                                                               width))
                            for kind, (lp, kl) in (counterfactual or {}).items()},
            teacher=None if teacher is None else TeacherRecord(
                to_token_layout(teacher[0], attention_mask.shape, width),
                {key: to_token_layout(kl, attention_mask.shape, width) for key, kl in teacher[1].items()}),
        )
        specs = self.signals if specs is None else specs
        return {spec.label: evaluate(spec, capture)[:, full - width:] for spec in specs}

    def _gathered(self, accelerator, mask, signals, advantages, groups, progress, step) -> PolicyInputs:
        mask_all = gather_padded(accelerator, mask.long()).bool()
        signals_all = {k: gather_padded(accelerator, v.float()).cpu() for k, v in signals.items()}
        return PolicyInputs(mask_all.cpu(), signals_all, accelerator.gather(groups).cpu(),
                            accelerator.gather(advantages.detach().float()).cpu(), progress, step=step, seed=self.seed)

    def rows_before_forward(self, accelerator, mask: torch.Tensor, advantages: torch.Tensor, groups: torch.Tensor,
                            progress: float, step: int) -> torch.Tensor | None:
        """(B_local,) bool: this rank's rows the policy can weight at all, decided on the whole generation batch
        from the advantages before any forward (D3S's rollout level); None when the policy has no such stage."""
        if not has_rows_before_forward(self.policy):  # no collective when the policy has no such stage
            return None
        inputs = self._gathered(accelerator, mask, {}, advantages, groups, progress, step)
        rows = rows_before_forward(self.policy, inputs)
        return None if rows is None else rows[local_rows(accelerator, mask.shape[0])].to(mask.device)

    def weights(self, accelerator, mask: torch.Tensor, signals: dict[str, torch.Tensor], advantages: torch.Tensor,
                groups: torch.Tensor, progress: float, step: int, measured: torch.Tensor | None = None):
        """Apply the policy on the generation batch of every process; keep this rank's rows. ``measured``: (B_local,)
        bool, the rows whose signals were computed (the others' are zeros and stay out of the signal statistics).

        Returns (local weights (B_local, C_local), stats, global selected mass (0-d), weight histogram)."""
        b_local, c_local = mask.shape
        inputs = self._gathered(accelerator, mask, signals, advantages, groups, progress, step)
        policy = apply_policy(self.policy, inputs)
        stats = dict(policy.stats)
        valid = inputs.mask
        if measured is not None:
            valid = valid & accelerator.gather(measured.long()).bool().cpu()[:, None]
        kept = (policy.weights > 0) & valid
        for name, values in inputs.signals.items():
            stats.update(signal_summary(values, valid, f"signal/{name}"))
            stats.update(signal_summary(values, kept, f"signal/{name}/selected"))
            stats.update(signal_summary(values, valid & ~kept, f"signal/{name}/unselected"))
        weights_all = policy.weights.to(mask.device)
        histogram = weight_histogram(policy.weights, inputs.mask)
        return weights_all[local_rows(accelerator, b_local), :c_local], stats, weights_all.sum(), histogram
