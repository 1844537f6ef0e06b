"""Two CPU processes (torchrun, gloo) select the same tokens as one process on the concatenated batch, and
the loss normalizer is the global count: the DDP-averaged loss equals the single-process loss."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch

from tokenfocus.losses import compute_loss, get_preset
from tokenfocus.policies import apply_policy
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
    loss, _ = compute_loss(get_preset("explorers20").loss, logprobs, old, advantages, mask, single.weights)
    ddp_average = sum(r["loss"] for r in ranks) / 2
    assert abs(ddp_average - loss.item()) < 1e-6
