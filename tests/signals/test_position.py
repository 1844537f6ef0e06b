"""The position control signal: response index, relative position c / L, absolute index."""

from __future__ import annotations

import pytest

from helpers import rollout_batch, tiny
from tokenfocus.signals import compute_signals


def test_position_kinds():
    """Row 0: 3 prompt + 4 response tokens; row 1: 2 prompt (1 left pad) + 1 response token.

    relative = c / L with c the 0-based index in the response and L its length (types.relative_position):
    L = 4 gives 0/4, 1/4, 2/4, 3/4 (never 1); L = 1 gives 0.
    """
    batch = rollout_batch([3, 2], [4, 1], prompt_width=3, completion_width=4)
    model, _ = tiny()
    v = compute_signals(model, batch, [
        "position", {"name": "position", "kind": "relative", "label": "rel"},
        {"name": "position", "kind": "absolute", "label": "abs"},
    ])
    assert v["position"][0, 3:].tolist() == [0, 1, 2, 3] and v["position"][1, 3:].tolist() == [0, 0, 0, 0]
    assert v["rel"][0, 3:].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert v["rel"][1, 3:].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert v["abs"][1, 3].item() == 2  # two real prompt tokens before it, left padding not counted
    for name in v:
        assert v[name][~batch.response_mask].abs().max() == 0, name


def test_unknown_kind_is_rejected():
    model, _ = tiny()
    batch = rollout_batch([3], [2], prompt_width=3, completion_width=2)
    with pytest.raises(ValueError, match="kind='index' is not one of"):
        compute_signals(model, batch, [{"name": "position", "kind": "index"}])
