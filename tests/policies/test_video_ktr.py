"""Video-KTR (policies/video_ktr.py): union of per-signal top tokens, signed selection."""

from __future__ import annotations

import torch

from tokenfocus.policies import apply_policy
from tokenfocus.types import PolicyInputs


def test_video_ktr_union_and_signed_selection():
    mask = torch.ones(1, 10, dtype=torch.bool)
    a = torch.arange(10.0)[None]
    b = -torch.arange(10.0)[None]  # log-prob differences that are negative everywhere except index 0
    inputs = PolicyInputs(mask, {"ent": a, "vis": b}, group_ids=torch.zeros(1, dtype=torch.long))
    out = apply_policy({"name": "video_ktr", "signals": ["ent", "vis"], "ratio": 0.2}, inputs)
    assert out.weights[0].tolist() == [1, 1] + [0] * 6 + [1, 1]
    assert out.stats["policy/ratio/union"] == 0.4
    unsigned = apply_policy({"name": "video_ktr", "signals": ["vis"], "signed": False}, inputs).weights
    assert unsigned[0].tolist() == [0] * 8 + [1, 1]
