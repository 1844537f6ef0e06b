"""Signal normalizations per scope unit (policies/normalize.py): hand-derived values, zeros where masked."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.policies.normalize import minmax, rank, transform, zscore
from tokenfocus.types import PolicyInputs


def _inputs(values, mask):
    groups = torch.zeros(len(mask), dtype=torch.long)
    return PolicyInputs(torch.tensor(mask), {"x": torch.tensor(values)}, group_ids=groups)


def test_hand_derived_values_per_sequence():
    """Row [1, 3, (pad)]: mean 2, std 1 -> z = [-1, 1]; ranks 0, 1 of N = 2 -> 2 (r + 0.5) / 2 - 1 = [-0.5, 0.5];
    minmax -> [0, 1]. Row [5, 5, 5] is constant: z = 0, minmax = 0. Padding stays exactly 0."""
    values = [[1.0, 3.0, 9.0], [5.0, 5.0, 5.0]]
    inputs = _inputs(values, [[True, True, False], [True, True, True]])
    x = inputs.signals["x"]
    z = zscore(x, inputs, "sequence", clip=None)
    torch.testing.assert_close(z, torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(rank(x, inputs, "sequence")[0], torch.tensor([-0.5, 0.5, 0.0]))
    torch.testing.assert_close(minmax(x, inputs, "sequence"), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert zscore(x, inputs, "sequence", clip=0.5)[0, :2].tolist() == [-0.5, 0.5]


def test_batch_scope_pools_rows_and_none_only_masks():
    """Batch scope, valid values 1, 3, 5, 5, 5: minmax over the batch = (x - 1) / 4."""
    values = [[1.0, 3.0, 9.0], [5.0, 5.0, 5.0]]
    inputs = _inputs(values, [[True, True, False], [True, True, True]])
    x = inputs.signals["x"]
    torch.testing.assert_close(minmax(x, inputs, "batch"), torch.tensor([[0.0, 0.5, 0.0], [1.0, 1.0, 1.0]]))
    assert transform(x, inputs, "batch", "none").tolist() == [[1.0, 3.0, 0.0], [5.0, 5.0, 5.0]]
    with pytest.raises(ValueError, match="transform='softmax' is not one of"):
        transform(x, inputs, "batch", "softmax")
