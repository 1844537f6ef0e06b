"""function_token signal: a table lookup of a partition file, at each response token's own index."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import rollout_batch
from tokenfocus.signals import SIGNALS
from tokenfocus.signals.function_token import PACKAGED, FunctionPartition
from tokenfocus.types import ForwardCapture


def test_function_token_tags_response_tokens_from_a_partition_file(tmp_path):
    batch = rollout_batch([3, 2], [4, 2], 3, 4, seed=2)
    ids = batch.input_ids
    chosen = sorted({int(ids[0, 3]), int(ids[1, 4])})
    part = FunctionPartition(chosen, [0.1] * len(chosen), [1.0] * len(chosen), 0.4, 100, 3, 90, "tiny")
    path = tmp_path / "function_tokens.json"
    path.write_text(json.dumps({"partition": part.to_json()}))
    values = SIGNALS["function_token"].fn(ForwardCapture(batch=batch, num_layers=2), partition=str(path))
    expected = torch.isin(ids, torch.tensor(chosen)) & batch.response_mask
    assert torch.equal(values, expected.float())
    assert values[0, 3] == 1 and values[1, 4] == 1


def test_function_token_names_the_fix_for_a_missing_partition(tmp_path):
    batch = rollout_batch([2], [2], 2, 2)
    with pytest.raises(ValueError, match="probe function-tokens"):
        SIGNALS["function_token"].fn(ForwardCapture(batch=batch, num_layers=2), partition=str(tmp_path / "nope"))
    torn = tmp_path / "torn.json"
    torn.write_text('{"partition": {"ids": [1, 2')
    with pytest.raises(ValueError, match="cannot read"):
        SIGNALS["function_token"].fn(ForwardCapture(batch=batch, num_layers=2), partition=str(torn))


def test_the_packaged_smollm2_partition_is_shipped_and_well_formed():
    part = FunctionPartition.load(PACKAGED["smollm2"])
    assert part.vocab_size == 49152 and 0.4 <= part.coverage < 0.45
    assert len(part.ids) == len(set(part.ids)) and max(part.ids) < 49152
