"""Run under torchrun with 2 CPU processes (gloo): the trainer's cross-process policy path on local rows.

Writes rank-local weights, the global selected mass, the rank's loss and its D3S rollout rows to OUT/rank{r}.json.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator

from tokenfocus.config import method_preset
from tokenfocus.integrations.token_weights import TokenWeighting
from tokenfocus.losses import compute_loss

B_TOTAL, G, C = 8, 4, 9


def global_batch():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, C + 1, (B_TOTAL,), generator=g)
    mask = torch.arange(C)[None] < lengths[:, None]
    signal = torch.rand(B_TOTAL, C, generator=g) * mask
    advantages = torch.randn(B_TOTAL, generator=g)
    logprobs = -torch.rand(B_TOTAL, C, generator=g)
    old = logprobs + 0.1 * torch.randn(B_TOTAL, C, generator=g)
    return mask, signal, advantages, logprobs, old


def main(out_dir: str) -> None:
    acc = Accelerator(cpu=True)
    rank, world = acc.process_index, acc.num_processes
    mask, signal, advantages, logprobs, old = global_batch()
    rows = slice(rank * B_TOTAL // world, (rank + 1) * B_TOTAL // world)
    width = int(mask[rows].sum(-1).max())  # each rank pads its completions to its own width, as TRL does
    local = dict(mask=mask[rows, :width], signal=signal[rows, :width], adv=advantages[rows],
                 logprobs=logprobs[rows, :width], old=old[rows, :width])
    weighting = TokenWeighting(policy={"name": "quantile", "signal": "attention_entropy", "ratio": 0.2,
                                       "side": "high", "scope": "global"})
    groups = torch.arange(rows.start, rows.stop) // G
    weights, stats, selected, _ = weighting.weights(acc, local["mask"], {"attention_entropy": local["signal"]},
                                                    local["adv"], groups, progress=0.0, step=0)
    loss, _ = compute_loss(method_preset("explorers20").loss, local["logprobs"], local["old"], local["adv"], local["mask"], weights,
                           global_count=selected / world)
    d3s = TokenWeighting(policy={"name": "d3s", "n_init": 0.5})  # its rollout rows, decided on the gathered batch
    forwarded = d3s.rows_before_forward(acc, local["mask"], local["adv"], groups, progress=0.0, step=0)
    result = {"rank": rank, "world": world, "weights": weights.tolist(), "selected": float(selected),
              "loss": float(loss), "rows": [rows.start, rows.stop], "width": width, "d3s_rows": forwarded.tolist()}
    with open(f"{out_dir}/rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    acc.wait_for_everyone()  # no rank tears the process group down while another still uses it
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
