"""The random control signal: seeded, reproducible, zero off the response."""

from __future__ import annotations

import torch

from helpers import rollout_batch, tiny
from tokenfocus.signals import compute_signals


def test_random_is_seeded_and_masked():
    batch = rollout_batch([3, 2], [4, 1], prompt_width=3, completion_width=4)
    model, _ = tiny()
    v = compute_signals(model, batch, [
        {"name": "random", "seed": 7, "label": "r7"}, {"name": "random", "seed": 7, "label": "r7b"},
        {"name": "random", "seed": 8, "label": "r8"},
    ])
    assert torch.equal(v["r7"], v["r7b"]) and not torch.equal(v["r7"], v["r8"])
    assert v["r7"][~batch.response_mask].abs().max() == 0
