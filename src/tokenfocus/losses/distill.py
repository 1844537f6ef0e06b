"""Teacher-guided terms (RL_TOKEN_CREDIT.md §4 HyperEyes, §5 dGRPO, §6 SCOPE): per-token reverse KL to a teacher,
and the teacher's dense advantage.

Shapes: per-token tensors (B, C) in the completion layout; the hidden states that predict completion token c are
the rows at c (the caller slices them at the predicting positions, §0.2). Teacher inputs are always detached.

Reverse KL per token, KL(pi_S(.|s_t) || pi_T(.|s_t)): ``signals.teacher.reverse_kl`` (the same quantity is the
``teacher_kl`` signal); as a loss term the gradient flows through the student only, and
``signals.teacher.weighted_reverse_kl`` forms it in the forward pass when the term's per-token coefficients are known
(``losses.aggregate.aggregate_coefficients``).

Dense advantage (dGRPO form B; HyperEyes' OPD on failed rollouts with ``gate``):
    A_{i,t} = A_i + lambda * (log pi_T(y_t) - log pi_old(y_t))     detached; gate (B,) bool keeps it to some rows
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..signals.teacher import (  # noqa: F401 (the per-token KL and its weighted loss term, re-exported)
    ESTIMATORS, KLEstimator, reverse_kl, weighted_reverse_kl)

def teacher_advantage(advantages: torch.Tensor, teacher_logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                      mask: torch.Tensor, coef: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C) A_i + coef * (log pi_T - log pi_old), detached, 0 outside ``mask``; rows where ``gate`` (B,) is False
    keep A_i (HyperEyes: the gate is "failed", acc <= 0)."""
    advantages = advantages.detach()
    base = advantages[:, None].expand_as(mask) if advantages.dim() == 1 else advantages
    dense = coef * (teacher_logprobs.detach() - old_logprobs.detach())
    if gate is not None:
        dense = dense * gate.to(dense.dtype)[:, None]
    return torch.where(mask.bool(), base + dense, torch.zeros_like(dense))


def device_problems(device: str) -> list[str]:
    """Why ``device`` cannot hold a model on this machine ([] when it can): not a torch device string, or a CUDA /
    MPS device that is not there. Checked before any model loads."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        return [f"device {device!r} is not a torch device ({error}); use e.g. 'cpu', 'cuda', 'cuda:1'"]
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [f"device {device!r}: this machine has no CUDA device; drop teacher.device to keep the teacher "
                    "beside the student, or set it to 'cpu'"]
        if parsed.index is not None and parsed.index >= count:
            return [f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"]
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        return [f"device {device!r}: MPS is not available on this machine"]
    elif parsed.type not in ("cpu", "cuda", "mps"):
        return [f"device {device!r}: tokenfocus places a teacher on 'cpu', 'cuda[:N]' or 'mps'"]
    return []


@dataclass(frozen=True)
class DistillConfig:
    """How a teacher enters GRPO (``teacher:`` in a train config). ``form``: "loss" (dGRPO form A: + coef x the
    token-mean reverse KL, gradient through the student), "advantage" (dGRPO form B: A + coef x (log pi_T -
    log pi_old), detached) or "scope" (SCOPE's dual path: failed rollouts get w_tea x (log pi_T - log pi_old) as
    token advantage, correct ones a w_stu-weighted MLE term; ``rl: false`` drops the GRPO advantage, as SCOPE's
    released scripts do). ``gate``: "all" rollouts or only "failed" ones (reward <= 0; HyperEyes' OPD, with form
    advantage). ``estimator`` / ``topk``: the KL of form "loss". ``rl=False`` (form "loss" only) drops the policy
    term: plain on-policy distillation (OPD), TRL's DistillationTrainer objective with beta = 1. ``device``: where
    the teacher lives ("cuda:1", "cpu"; None: the student's device). Its inputs go there and its scores come back;
    form "loss" keeps one copy of the teacher's LM head on the student's device for the chunked KL."""

    form: str = "advantage"
    coef: float = 0.05
    gate: str = "all"
    estimator: str = "full"
    topk: int = 20
    rl: bool = True
    # form "scope" (SCOPE, policies.dual_path): incorrect rollouts get w_tea x (log pi_T - log pi_old) as token
    # advantage, correct ones w_stu x the MLE term (mle_coef); tau and the two paths' directions
    tau: float = 1.0
    student_direction: str = "up"
    teacher_direction: str = "down"
    mle_coef: float = 1.0
    device: str | None = None

    def problems(self) -> list[str]:
        found = [] if self.device is None else device_problems(self.device)
        if self.form not in ("loss", "advantage", "scope"):
            found.append(f"form must be 'loss' (dGRPO A), 'advantage' (dGRPO B) or 'scope', got {self.form!r}")
        if self.tau <= 0 or self.mle_coef < 0:
            found.append(f"tau must be > 0 and mle_coef >= 0, got {self.tau}, {self.mle_coef}")
        for name in ("student_direction", "teacher_direction"):
            if getattr(self, name) not in ("up", "down"):
                found.append(f"{name} must be 'up' or 'down', got {getattr(self, name)!r}")
        if self.gate not in ("all", "failed"):
            found.append(f"gate must be 'all' or 'failed', got {self.gate!r}")
        if self.estimator not in ESTIMATORS:
            found.append(f"estimator must be one of {list(ESTIMATORS)}, got {self.estimator!r}")
        if self.coef < 0 or self.topk < 1:
            found.append(f"coef must be >= 0 and topk >= 1, got {self.coef}, {self.topk}")
        if not self.rl and self.form == "advantage":
            found.append("rl: false (distillation only) needs form 'loss' or 'scope' (form 'advantage' adds to the "
                         "GRPO advantage)")
        return found
