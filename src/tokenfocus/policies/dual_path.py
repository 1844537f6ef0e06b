"""SCOPE's dual-path sequence weights (arXiv 2604.10688; RL_TOKEN_CREDIT.md §6).

Each prompt group splits by an explicit correctness predicate: correct rollouts (path "student", weighted MLE) and
the rest (path "teacher", weighted on-policy distillation; negative rewards count as incorrect). With the
length-normalized sequence log-probs l_S (rollout policy) and l_T (teacher), PPL = exp(-l):

    paper:  w_stu ~ PPL_S^(+1/tau) over the group's correct rollouts   (favour low-confidence correct samples)
            w_tea ~ PPL_T^(-1/tau) over the group's incorrect rollouts (favour samples the teacher finds plausible)

normalized as the reference code does: a softmax within the group's path, times the path's size (mean one); a
singleton gets 1; rows outside a path get 0. ``direction`` per path: "up" (higher PPL, higher weight) or "down".
The reference code's sign convention inverts the README's (the spec's table): its function defaults are
student "down", teacher "up"; its shipped scripts are both "down". The paper: student "up", teacher "down".
"""

from __future__ import annotations

from typing import Literal

import torch

from ..options import check_choice

Direction = Literal["up", "down"]


def _path_weights(log_ppl: torch.Tensor, member: torch.Tensor, group_ids: torch.Tensor, tau: float,
                  direction: str) -> torch.Tensor:
    weights = torch.zeros_like(log_ppl)
    sign = 1.0 if direction == "up" else -1.0
    for group in torch.unique(group_ids):
        rows = (group_ids == group) & member
        n = int(rows.sum())
        if n == 0:
            continue
        weights[rows] = torch.softmax(sign * log_ppl[rows] / tau, dim=0) * n
    return weights


def scope_weights(student_logp: torch.Tensor, teacher_logp: torch.Tensor, correct: torch.Tensor,
                  group_ids: torch.Tensor, *, tau: float = 1.0, student_direction: Direction = "up",
                  teacher_direction: Direction = "down") -> tuple[torch.Tensor, torch.Tensor]:
    """(w_student, w_teacher), each (B,): ``*_logp`` the length-normalized sequence log-probs (B,), ``correct``
    (B,) bool, ``group_ids`` (B,) one id per prompt. Detached."""
    check_choice("student_direction", student_direction, Direction)
    check_choice("teacher_direction", teacher_direction, Direction)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    correct = correct.bool()
    # log PPL = -l
    w_student = _path_weights(-student_logp.detach().double(), correct, group_ids, tau, student_direction)
    w_teacher = _path_weights(-teacher_logp.detach().double(), ~correct, group_ids, tau, teacher_direction)
    return w_student.to(student_logp.dtype), w_teacher.to(student_logp.dtype)
