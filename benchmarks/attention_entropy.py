"""Attention-entropy recording cost on SmolLM2-135M (CPU): time and peak memory, side by side in one run.

Variants, each a no-grad forward of the decoder backbone (the LM head is the same for all three and is left
out so that the ratio isolates attention):
  (a) plain  - SDPA forward
  (b) lse    - the same forward with attention entropy recorded on all 30 layers (tokenfocus recorder)
  (c) eager  - eager attention with output_attentions=True, entropy from the probabilities (all layers)

Time: one subprocess per shape runs the variants interleaved (a, b, c, a, b, c, ...) and keeps the median.
Memory: one fresh subprocess per (variant, shape), large allocations served by mmap so that RSS tracks live
tensors; peak RSS during the forward (VmHWM, reset just before) minus RSS before it.
(c) is not run where its attention tensors alone would exceed --eager-limit-gb (it would swap or be killed).

    python benchmarks/attention_entropy.py [--shapes 8x256,4x1024,1x4096] [--repeats 3]
Targets (issue 2): (b)/(a) time <= 1.3 at T >= 1024; (b) peak memory <= 1.2 x (a).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("plain", "lse", "eager")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(batch: int, length: int):
    import torch

    from tokenfocus.models import load_model

    model, _ = load_model("default")
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    return model, ids


def _forward(model, ids, variant: str):
    import torch

    from tokenfocus.capture import record_attention_entropy

    with torch.no_grad():
        if variant == "plain":
            model.model(input_ids=ids, use_cache=False)
            return None
        if variant in ("lse", "lse_model"):  # lse_model: entropy kernel in the model's dtype (GPU bf16)
            precision = "model" if variant == "lse_model" else "fp32"
            with record_attention_entropy(model, "all", precision=precision) as recorder:
                model.model(input_ids=ids, use_cache=False)
            return recorder.result()
        model.set_attn_implementation("eager")
        try:
            out = model.model(input_ids=ids, use_cache=False, output_attentions=True)
            entropies = []
            for attn in out.attentions:
                entropies.append(-(torch.special.xlogy(attn, attn)).sum(-1))
            del out
            return entropies
        finally:
            model.set_attn_implementation("sdpa")


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets the kernel's RSS high-water mark (VmHWM), so the next reading is the
    # peak of the forward alone, not of model loading.
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_memory(variant: str, batch: int, length: int) -> None:
    import gc

    model, ids = _setup(batch, length)
    _forward(model, ids[:1, :8], variant)  # touch every weight page (safetensors are memory-mapped)
    gc.collect()
    before = _rss_bytes()
    _reset_peak_rss()
    _forward(model, ids, variant)
    print(json.dumps({"rss_before": before, "peak": _peak_rss_bytes()}))


def child_time(batch: int, length: int, repeats: int, variants: list[str]) -> None:
    model, ids = _setup(batch, length)
    for variant in variants:  # warm-up, one each
        _forward(model, ids, variant)
    times = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            start = time.perf_counter()
            _forward(model, ids, variant)
            times[variant].append(time.perf_counter() - start)
    print(json.dumps(times))


# glibc keeps freed heap memory and reuses it, which hides a forward's peak behind earlier allocations.
# Serving every allocation >= 64 KiB by mmap (unmapped on free) makes RSS track live tensors.
_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _run_child(args: list[str]) -> dict:
    env = {**os.environ, **(_MEMORY_ENV if args[1] == "memory" else {})}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout)[-800:], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="8x256,4x1024,1x4096")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager-limit-gb", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "attention_entropy_cpu.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "memory":
            child_memory(rest[0], int(rest[1]), int(rest[2]))
        else:
            child_time(int(rest[0]), int(rest[1]), int(rest[2]), rest[3].split(","))
        return

    import torch

    rows = []
    for shape in args.shapes.split(","):
        batch, length = (int(x) for x in shape.split("x"))
        eager_gb = 30 * batch * 9 * length * length * 4 / 2**30  # all layers' probabilities, fp32
        variants = [v for v in VARIANTS if v != "eager" or eager_gb <= args.eager_limit_gb]
        print(f"[{shape}] timing {variants} x{args.repeats} ...", flush=True)
        times = _run_child(["--child", "time", str(batch), str(length), str(args.repeats), ",".join(variants)])
        memory = {}
        for variant in variants:
            print(f"[{shape}] memory {variant} ...", flush=True)
            memory[variant] = _run_child(["--child", "memory", variant, str(batch), str(length)])
        row = {"shape": shape, "batch": batch, "length": length, "eager_attention_gb": round(eager_gb, 2)}
        for variant in VARIANTS:
            if variant not in variants:
                row[variant] = {"skipped": f"eager would hold {eager_gb:.1f} GB of attention probabilities"}
                continue
            m = memory[variant]
            row[variant] = {
                "time_s_median": statistics.median(times[variant]) if "error" not in times else None,
                "times_s": times.get(variant),
                "peak_delta_mb": (m["peak"] - m["rss_before"]) / 2**20 if "error" not in m else None,
                "error": m.get("error") or times.get("error"),
            }
        plain = row["plain"]
        for variant in ("lse", "eager"):
            if "time_s_median" in row[variant] and row[variant]["time_s_median"] and plain["time_s_median"]:
                row[variant]["time_ratio_vs_plain"] = row[variant]["time_s_median"] / plain["time_s_median"]
            if row[variant].get("peak_delta_mb") and plain["peak_delta_mb"]:
                row[variant]["memory_ratio_vs_plain"] = row[variant]["peak_delta_mb"] / plain["peak_delta_mb"]
        rows.append(row)

    print()
    print(f"{'shape':>8} | {'plain s':>8} {'lse s':>8} {'eager s':>8} | {'lse/plain':>9} {'eager/plain':>11} | "
          f"{'plain MB':>9} {'lse MB':>8} {'eager MB':>9} | {'lse/plain':>9}")
    for row in rows:
        def get(variant, key, fmt):
            value = row[variant].get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "-"

        print(f"{row['shape']:>8} | {get('plain', 'time_s_median', '8.3f')} {get('lse', 'time_s_median', '8.3f')} "
              f"{get('eager', 'time_s_median', '8.3f')} | {get('lse', 'time_ratio_vs_plain', '9.3f')} "
              f"{get('eager', 'time_ratio_vs_plain', '11.2f')} | {get('plain', 'peak_delta_mb', '9.0f')} "
              f"{get('lse', 'peak_delta_mb', '8.0f')} {get('eager', 'peak_delta_mb', '9.0f')} | "
              f"{get('lse', 'memory_ratio_vs_plain', '9.3f')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "attention_entropy",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": "SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads)",
        "measured": "decoder backbone forward, no grad; peak = max RSS during the forward minus RSS before it",
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
