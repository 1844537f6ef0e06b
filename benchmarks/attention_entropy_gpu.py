"""Attention-entropy recorder on CUDA: correctness of the LSE kernel path, then time and peak memory.

Runs only where a GPU is present (a lent H200 here; never in CI). No model files travel to that machine,
so the model is SmolLM2-135M's architecture with random weights (30 layers, d 576, 9 query / 3 KV heads,
d_ff 1536): timing and memory of the backbone do not depend on the weights, and the entropy identity is
checked against the exact fp64 chunked reference on the same model.

    python benchmarks/attention_entropy_gpu.py [--dtype bfloat16] [--shapes 8x256,4x1024,1x4096,1x16384]
Variants as in attention_entropy.py: (a) plain SDPA forward, (b) with entropy recorded on all 30 layers
(fp32 entropy kernel), (b') the same with the entropy kernel in the model's dtype (precision="model":
bf16 flash kernel with LSE), (c) eager + output_attentions (skipped where its probabilities alone would
exceed --eager-limit-gb).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from attention_entropy import RESULTS, _forward  # noqa: E402

from tokenfocus.capture import record_attention_entropy  # noqa: E402
from tokenfocus.capture import entropy_chunked, entropy_lse  # noqa: E402
from tokenfocus.models import load_model  # noqa: E402

VARIANTS = ("plain", "lse", "lse_model", "eager")
SMOLLM2_SHAPE = "tiny-llama:layers=30,hidden=576,heads=9,kv_heads=3,intermediate=1536,max_positions=16384"


def kernel_check() -> dict:
    """fp32 LSE path on CUDA vs an fp64 chunked reference, causal and left-padded, odd lengths included."""
    out = {}
    g = torch.Generator(device="cuda").manual_seed(0)
    for b, h, s, d, pad in [(2, 9, 257, 64, False), (3, 9, 300, 64, True), (1, 4, 4096, 64, False), (2, 8, 1000, 128, True)]:
        q = torch.randn(b, h, s, d, device="cuda", generator=g)
        k = torch.randn(b, h, s, d, device="cuda", generator=g)
        allowed = None
        if pad:
            lengths = torch.randint(1, s + 1, (b,), device="cuda", generator=g)
            keys = torch.arange(s, device="cuda")[None] >= (s - lengths)[:, None]
            allowed = torch.ones(s, s, dtype=torch.bool, device="cuda").tril()[None, None] & keys[:, None, None, :]
        rows = torch.ones(b, 1, s, dtype=torch.bool, device="cuda") if allowed is None else allowed.any(-1)
        for dtype in (torch.float32, torch.bfloat16):
            qd, kd = q.to(dtype), k.to(dtype)
            got, _ = entropy_lse(qd, kd, allowed, d**-0.5)
            ref, _ = entropy_chunked(qd.double(), kd.double(), allowed, d**-0.5, chunk_size=256)
            err = ((got.double() - ref).abs() * rows).max().item()
            out[f"{b}x{h}x{s}x{d}{'-pad' if pad else ''}-{str(dtype)[6:]}"] = err
    return out


def model_check(model, precision: str = "fp32") -> dict:
    """Recorder (lse) vs recorder (chunked, exact scores) on the model, left padding, all layers."""
    ids = torch.randint(3, 90, (3, 300), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :37] = 0
    mask[2, :250] = 0
    result = {}
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with record_attention_entropy(model, "all", precision=precision) as fast:
            recorded = model(input_ids=ids, attention_mask=mask).logits
        with record_attention_entropy(model, "all", backend="chunked") as exact:
            model(input_ids=ids, attention_mask=mask)
    result["logits_max_abs_diff"] = (plain - recorded).abs().max().item()
    worst = 0.0
    for layer, rec in fast.result().items():
        ref = exact.result()[layer]
        worst = max(worst, ((rec.entropy - ref.entropy).abs() * mask[:, None].bool()).max().item())
    result["lse_vs_chunked_max_abs_nats"] = worst
    result["fallbacks"] = {str(k): v for k, v in fast.fallbacks.items()}
    return result


def bench(model, shapes, repeats, eager_limit_gb) -> list[dict]:
    rows = []
    for shape in shapes:
        batch, length = (int(x) for x in shape.split("x"))
        ids = torch.randint(3, 90, (batch, length), device="cuda")
        eager_gb = 30 * batch * 9 * length * length * 4 / 2**30
        variants = [v for v in VARIANTS if v != "eager" or eager_gb <= eager_limit_gb]
        row = {"shape": shape}
        for variant in variants:
            _forward(model, ids, variant)
        times = {v: [] for v in variants}
        for _ in range(repeats):
            for variant in variants:
                torch.cuda.synchronize()
                start = time.perf_counter()
                _forward(model, ids, variant)
                torch.cuda.synchronize()
                times[variant].append(time.perf_counter() - start)
        for variant in variants:
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            _forward(model, ids, variant)
            peak = torch.cuda.max_memory_allocated() - base
            row[variant] = {"time_s_median": statistics.median(times[variant]), "peak_delta_mb": peak / 2**20}
        for variant in VARIANTS:
            if variant not in variants:
                row[variant] = {"skipped": f"eager would hold {eager_gb:.1f} GB of probabilities"}
        for variant in ("lse", "lse_model", "eager"):
            if "time_s_median" in row[variant]:
                row[variant]["time_ratio_vs_plain"] = row[variant]["time_s_median"] / row["plain"]["time_s_median"]
                row[variant]["memory_ratio_vs_plain"] = row[variant]["peak_delta_mb"] / row["plain"]["peak_delta_mb"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--shapes", default="8x256,4x1024,1x4096,1x16384")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--eager-limit-gb", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "attention_entropy_cuda.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("attention_entropy_gpu.py needs a CUDA device")
    dtype = getattr(torch, args.dtype)
    payload = {"benchmark": "attention_entropy_gpu", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype}
    payload["kernel_check_max_abs_nats"] = kernel_check()
    print(json.dumps(payload["kernel_check_max_abs_nats"]), flush=True)
    model, _ = load_model(SMOLLM2_SHAPE, dtype=torch.float32, device="cuda")
    payload["model_check_fp32"] = model_check(model)
    print(json.dumps(payload["model_check_fp32"]), flush=True)
    model.to(dtype)
    payload["model_check"] = model_check(model)
    payload["model_check_precision_model"] = model_check(model, precision="model")
    print(json.dumps(payload["model_check_precision_model"]), flush=True)
    payload["rows"] = bench(model, args.shapes.split(","), args.repeats, args.eager_limit_gb)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
