"""Two CPU processes (torchrun, gloo) select the same tokens as one process on the concatenated batch, and
the loss normalizer is the global count: the DDP-averaged loss equals the single-process loss."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tokenfocus.config import method_preset
from tokenfocus.losses import compute_loss
from tokenfocus.policies import apply_policy, parse_policy_spec, rows_before_forward
from tokenfocus.types import PolicyInputs

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from mp_policy_worker import G, global_batch  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_global_scope_selection_and_normalizer_across_two_processes(tmp_path):
    result = torchrun([str(HERE / "mp_policy_worker.py"), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["width"] != ranks[1]["width"]  # each rank pads to its own width: the gather must re-pad
    mask, signal, advantages, logprobs, old = global_batch()
    single = apply_policy({"name": "quantile", "signal": "attention_entropy", "ratio": 0.2, "side": "high",
                           "scope": "batch"},
                          PolicyInputs(mask, {"attention_entropy": signal}, torch.arange(len(mask)) // G, advantages))
    for r in ranks:
        start, stop = r["rows"]
        local = torch.tensor(r["weights"])
        expected = single.weights[start:stop, : local.shape[1]]
        assert torch.equal(local, expected), r["rank"]
        assert single.weights[start:stop, local.shape[1]:].sum() == 0
        assert r["selected"] == float(single.weights.sum())
    loss, _ = compute_loss(method_preset("explorers20").loss, logprobs, old, advantages, mask, single.weights)
    ddp_average = sum(r["loss"] for r in ranks) / 2
    assert abs(ddp_average - loss.item()) < 1e-6
    # D3S's rollout rows (which rows may skip the forward) are chosen on the whole batch: each rank gets its part
    d3s_rows = rows_before_forward(parse_policy_spec({"name": "d3s", "n_init": 0.5}),
                                   PolicyInputs(mask, {}, torch.arange(len(mask)) // G, advantages))
    assert ranks[0]["d3s_rows"] + ranks[1]["d3s_rows"] == d3s_rows.tolist()
    assert 0 < sum(d3s_rows.tolist()) < len(mask)


@pytest.mark.parametrize("method", ["anchors20", "d3s"])
def test_two_process_training_run_counts_tokens_of_both_processes(tmp_path, method):
    """`torchrun --nproc_per_node 2 -m tokenfocus train`: one metrics file, policy stats over both ranks' rows.
    D3S: at the first step each rank forwards only its rows of the max-variance half (DDP with unequal batches)."""
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": "tiny-llama:layers=2,hidden=64,heads=4,kv_heads=2,intermediate=128",
        "task": {"name": "arithmetic", "tiers": ["D1"], "n_train": 32},
        "method": method, "reward": {"kind": "digits"},
        "trl": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 4, "max_completion_length": 12},
        "run": {"dir": str(tmp_path / "run"), "save_steps": 2},
    }))
    result = torchrun(["-m", "tokenfocus", "train", str(config)])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "event" not in r]
    assert [r["step"] for r in steps] == [1, 2]  # written once (main process), not once per rank
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    for row in steps:
        # 2 processes x 4 rows x at most 12 tokens: more valid tokens than one process could hold.
        assert 4 * 12 < row["policy/valid_tokens"] <= 2 * 4 * 12
        if method == "anchors20":
            assert row["policy/kept_fraction"] == pytest.approx(0.2, abs=0.03)
    if method == "d3s":  # progress 0: half the batch (rows_forwarded: the main process's share); 1: all rows
        assert steps[0]["policy/sample_fraction"] == 0.5 and 0 < steps[0]["policy/rows_forwarded"] < 1
        assert steps[1]["policy/sample_fraction"] == 1.0 and "policy/rows_forwarded" not in steps[1]
        assert all(math.isfinite(r["loss/total"]) for r in steps)
