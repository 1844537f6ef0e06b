"""The teacher-KL loss term alone (dGRPO form A, OPD; issue 13's cost target), its two implementations side by side in
one run at SmolLM2-135M's head shapes (vocabulary 49,152, hidden 576):

  checkpointed  ``reverse_kl`` then sum(w x KL): each vocabulary chunk is recomputed in the backward pass (both
                models' logits and log-softmaxes again, then autograd's softmax backward and two matmuls)
  fused         ``weighted_reverse_kl``: the per-token coefficients w are known before the KL, so each chunk's
                gradient (w q (log q - log t - KL) / temperature, two matmuls) is formed in the forward pass and the
                backward only scales it; nothing recomputed

Timed: forward + backward of the term from the student's final hidden states (the model body excluded), medians of
interleaved rounds; on a GPU also the CUDA peak above the start of each (the chunking keeps both near the (N, H) and
(V, H) gradients). The ratio is the fused time over the checkpointed one (< 1: the fused term is cheaper).

    python benchmarks/teacher_kl.py [--tokens 1024] [--rounds 5] [--estimators full,topk]
        [--device cuda --tokens 32768 --dtype bfloat16 --out benchmarks/results/teacher_kl_cuda.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tokenfocus.signals.teacher import reverse_kl, weighted_reverse_kl

RESULTS = Path(__file__).parent / "results"


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="response tokens in the batch")
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--estimators", default="full,topk")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--out", type=Path, default=RESULTS / "teacher_kl_cpu.json")
    args = parser.parse_args()
    dtype, device = getattr(torch, args.dtype), args.device
    g = torch.Generator().manual_seed(0)
    rows = max(1, args.tokens // 256)
    shape = (rows, args.tokens // rows, args.hidden)

    def tensor(*size, scale):
        return (torch.randn(*size, generator=g) * scale).to(device=device, dtype=dtype)

    s_hidden, t_hidden = tensor(*shape, scale=1.0), tensor(*shape, scale=1.0)
    s_head = tensor(args.vocab, args.hidden, scale=0.05).requires_grad_(True)
    t_head = tensor(args.vocab, args.hidden, scale=0.05)
    mask = torch.ones(shape[:2], dtype=torch.bool, device=device)
    mask[0, shape[1] // 2:] = False  # some padding
    weights = mask.double() / mask.sum()  # the token mean
    tokens = torch.randint(0, args.vocab, shape[:2], generator=g).to(device)

    def run(path: str, estimator: str) -> tuple[float, int]:
        hidden = s_hidden.clone().requires_grad_(True)
        s_head.grad = None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated() if device == "cuda" else 0
        _synchronize(device)
        started = time.perf_counter()
        if path == "fused":
            total, _ = weighted_reverse_kl(hidden, s_head, t_hidden, t_head, mask, weights, tokens,
                                           estimator=estimator, chunk=args.chunk, topk=20)
        else:
            kl = reverse_kl(hidden, s_head, t_hidden, t_head, mask, tokens, estimator=estimator, chunk=args.chunk,
                            topk=20)
            total = (weights * kl).sum()
        total.backward()
        _synchronize(device)
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() - start_bytes if device == "cuda" else 0
        return seconds, peak

    table = {}
    for estimator in args.estimators.split(","):
        times = {"checkpointed": [], "fused": []}
        peaks = {"checkpointed": 0, "fused": 0}
        for path in times:  # warm-up
            run(path, estimator)
        for _ in range(args.rounds):
            for path in times:
                seconds, peak = run(path, estimator)
                times[path].append(seconds)
                peaks[path] = max(peaks[path], peak)
        medians = {path: statistics.median(values) for path, values in times.items()}
        table[estimator] = {"seconds": times, "median_s": medians,
                            "ratio_fused_vs_checkpointed": medians["fused"] / medians["checkpointed"]}
        if device == "cuda":
            table[estimator]["peak_bytes"] = peaks
        print(f"{estimator:>5}: checkpointed {medians['checkpointed']:.3f} s, fused {medians['fused']:.3f} s, "
              f"ratio {table[estimator]['ratio_fused_vs_checkpointed']:.3f}"
              + (f"; CUDA peak {peaks['checkpointed'] / 2**20:.0f} vs {peaks['fused'] / 2**20:.0f} MiB"
                 if device == "cuda" else ""))
    result = {"benchmark": "teacher_kl", "device": device, "dtype": args.dtype, "threads": torch.get_num_threads(),
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "tokens": args.tokens,
              "valid_tokens": int(mask.sum()), "hidden": args.hidden, "vocab": args.vocab, "chunk": args.chunk,
              "rounds": args.rounds, "estimators": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
