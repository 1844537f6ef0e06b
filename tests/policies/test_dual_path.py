"""SCOPE's weights point the way the paper argues: a higher student perplexity raises a correct rollout's weight, a
higher teacher perplexity lowers an incorrect rollout's weight; mean one per group path, singletons 1, routing by
the predicate (negative rewards are incorrect)."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.policies.dual_path import scope_weights


def test_paper_directions():
    # one group; rows 0, 1 correct and differ only in the student's sequence log-prob; rows 2, 3 incorrect and differ
    # only in the teacher's
    student = torch.tensor([-0.2, -1.2, -0.5, -0.5])
    teacher = torch.tensor([-0.5, -0.5, -0.3, -1.3])
    correct = torch.tensor([True, True, False, False])
    groups = torch.zeros(4, dtype=torch.long)
    w_stu, w_tea = scope_weights(student, teacher, correct, groups)
    assert w_stu[1] > w_stu[0]  # row 1: higher PPL_S (less confident) -> higher student weight
    assert w_tea[2] > w_tea[3]  # row 3: higher PPL_T -> lower teacher weight
    assert float(w_stu[:2].mean()) == pytest.approx(1.0) and float(w_tea[2:].mean()) == pytest.approx(1.0)
    assert torch.all(w_stu[2:] == 0) and torch.all(w_tea[:2] == 0)
    assert float(w_stu[1]) == pytest.approx(2 * torch.sigmoid(torch.tensor(1.0)).item())  # softmax of [0.2, 1.2] x 2
    shipped, _ = scope_weights(student, teacher, correct, groups, student_direction="down")
    assert shipped[0] > shipped[1]  # the shipped scripts' reading inverts it


def test_groups_singletons_and_the_predicate():
    student = torch.tensor([-0.1, -0.9, -0.4, -0.3, -2.0])
    teacher = torch.tensor([-0.2, -0.2, -0.7, -0.1, -0.6])
    correct = torch.tensor([True, False, True, False, False])  # row 4 stands for a negative reward: incorrect
    groups = torch.tensor([0, 0, 1, 1, 1])
    w_stu, w_tea = scope_weights(student, teacher, correct, groups, tau=0.5)
    assert float(w_stu[0]) == 1.0 and float(w_stu[2]) == 1.0  # singletons
    assert float(w_tea[1]) == 1.0 and float(w_tea[3:].mean()) == pytest.approx(1.0)
    assert w_tea[3] > w_tea[4]  # the teacher finds row 3 more plausible
    with pytest.raises(ValueError, match="tau"):
        scope_weights(student, teacher, correct, groups, tau=0)
    with pytest.raises(ValueError, match="student_direction"):
        scope_weights(student, teacher, correct, groups, student_direction="paper")
