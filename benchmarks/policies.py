"""Cost of each token policy (+ the loss aggregate) on a B=64, T=1024 batch, side by side in one run.

Reference points, measured in the same run:
  * the plain GRPO loss (clipped surrogate + aggregate, uniform weights) on the same batch;
  * a SmolLM2-135M forward+backward, measured at --fb-batch x 1024 and scaled linearly to 64 x 1024
    (a 64 x 1024 backward does not fit this machine's memory; the cost is linear in B at fixed T).
Target (issue 3): every policy <= 10 % of that forward+backward.

    python benchmarks/policies.py [--repeats 5] [--fb-batch 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tokenfocus.losses import compute_loss, loss_preset
from tokenfocus.policies import apply_policy
from tokenfocus.types import PolicyInputs

RESULTS = Path(__file__).parent / "results"
B, T, G = 64, 1024, 8

POLICY_SPECS = {
    "full": {"name": "full"},
    "random20": {"name": "random", "ratio": 0.2},
    "anchors20": {"name": "quantile", "signal": "attention_entropy", "side": "low"},
    "explorers20_group": {"name": "quantile", "signal": "attention_entropy", "side": "high", "scope": "group"},
    "middle60": {"name": "quantile", "signal": "attention_entropy", "side": "middle"},
    "position_matched": {"name": "position_matched", "signal": "attention_entropy", "side": "low"},
    "front20": {"name": "front"},
    "pred_entropy_top20": {"name": "quantile", "signal": "predictive_entropy", "side": "high"},
    "low2high": {"name": "low2high", "signal": "attention_entropy"},
    "low2high_linear_rank": {"name": "low2high", "form": "linear", "transform_kind": "rank"},
    "pgpo": {"name": "pgpo", "signal": "attention_entropy"},
    "video_ktr": {"name": "video_ktr", "signals": ["predictive_entropy", "attention_entropy"]},
    "d3s_tokens": {"name": "d3s_tokens"},
    "d3s_samples": {"name": "d3s_samples"},
    "product": {"name": "product", "policies": [{"name": "low2high"}, {"name": "d3s_samples"}]},
}


def batch():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(T // 4, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    signals = {name: torch.rand(B, T, generator=g) * mask for name in ("attention_entropy", "predictive_entropy")}
    inputs = PolicyInputs(mask, signals, torch.arange(B) // G, torch.randn(B, generator=g), progress=0.4, step=3)
    logprobs = -torch.rand(B, T, generator=g) * mask
    old = logprobs + 0.05 * torch.randn(B, T, generator=g) * mask
    return inputs, logprobs, old


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward_seconds(fb_batch: int, repeats: int) -> float:
    from tokenfocus.models import load_model

    model, _ = load_model("default")
    model.train()
    ids = torch.randint(3, model.config.vocab_size, (fb_batch, T), generator=torch.Generator().manual_seed(1))

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()

    return timed(step, repeats) * (B / fb_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fb-batch", type=int, default=1)
    parser.add_argument("--fb-repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "policies_cpu.json")
    args = parser.parse_args()
    inputs, logprobs, old = batch()
    mask = inputs.mask
    grpo = loss_preset("grpo")
    dapo = loss_preset("dapo")
    plain = timed(lambda: compute_loss(grpo, logprobs, old, inputs.advantages, mask), args.repeats)
    rows = {}
    for label, spec in POLICY_SPECS.items():
        def run():
            out = apply_policy(spec, inputs)
            return compute_loss(dapo, logprobs, old, inputs.advantages, mask, out.weights)

        rows[label] = {"seconds": timed(run, args.repeats)}
    fb = forward_backward_seconds(args.fb_batch, args.fb_repeats)
    print(f"B={B} T={T}  plain GRPO loss {plain * 1e3:.1f} ms   SmolLM2 fwd+bwd (scaled from {args.fb_batch}x{T}) "
          f"{fb:.1f} s")
    print(f"{'policy':>22} | {'ms':>8} | {'x plain loss':>12} | {'% of fwd+bwd':>12}")
    for label, row in rows.items():
        row["ratio_vs_plain_loss"] = row["seconds"] / plain
        row["fraction_of_forward_backward"] = row["seconds"] / fb
        print(f"{label:>22} | {row['seconds'] * 1e3:8.1f} | {row['ratio_vs_plain_loss']:12.1f} | "
              f"{100 * row['fraction_of_forward_backward']:11.3f}%")
    payload = {
        "benchmark": "policies", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "B": B, "T": T, "group_size": G,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "plain_grpo_loss_s": plain,
        "smollm2_forward_backward_s_scaled": fb, "fb_measured_batch": args.fb_batch, "policies": rows,
        "target": "every policy + aggregate <= 10% of the forward+backward",
        "all_within_target": all(r["fraction_of_forward_backward"] <= 0.10 for r in rows.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
