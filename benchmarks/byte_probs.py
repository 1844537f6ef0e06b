"""Cost of exact byte-level probabilities (B5) on SmolLM2-135M (CPU), against one forward of the same prompt,
side by side in one run.

Per prompt (each ends mid-word; its free tail is the last pre-token, n bytes):
  forward        one forward of BOS + the prompt's canonical tokens, batch 1 (the unit)
  state_<check>  ByteState.from_prompt + next_byte_distribution: n + 1 sequences in one batch, then the covers
  append_<check> the likeliest next byte appended: one forward of BOS + head + canonical(tail), then the covers
check = all (every cover re-encoded), mass (the heaviest covers until the rest is < 1e-4 of a split's mass),
none (the paper's fast mode). Reported: seconds per byte of the tail / seconds of one forward.
Target (issue 16): about one LM call per byte of the last word, i.e. a ratio <= 1 per byte.

    python benchmarks/byte_probs.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tokenfocus.models import load_model
from tokenfocus.tokenizers import VocabTrie
from tokenfocus.tokenizers.byteprobs import ByteState, start_ids

RESULTS = Path(__file__).parent / "results"
PROMPTS = ["The capital of France is Pa", "She counted the apples and the oran",
           "Natalia sold clips to 48 of her frie", "Weng earns $12 an hour for babysit",
           "The answer is 12 because 3 times 4 equ", "Betty has only half of the money she ne"]
CHECKS = ("all", "mass", "none")


def timed(fn):
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "byte_probs_cpu.json")
    args = parser.parse_args()
    model, tokenizer = load_model("default")
    trie = VocabTrie.from_tokenizer(tokenizer)
    prefix = start_ids(tokenizer)
    rows = []
    for prompt in PROMPTS:
        ids = torch.tensor([prefix + trie.encode(prompt)])
        times: dict[str, list[float]] = {"forward": []}
        tail_bytes = None
        for _ in range(args.rounds):  # interleaved: every variant sees the same machine state
            with torch.no_grad():
                times["forward"].append(timed(lambda: model(ids).logits)[0])
            for check in CHECKS:
                seconds, state = timed(lambda: ByteState.from_prompt(model, trie, prompt, check=check, min_mass=1e-4))
                more, p = timed(state.next_byte_distribution)
                times.setdefault(f"state_{check}", []).append(seconds + more)
                tail_bytes = len(state.tail)
                byte = bytes([int(p[:256].argmax())])  # the likeliest byte, as greedy generation would append
                seconds = timed(lambda: state.append(byte))[0] + timed(state.next_byte_distribution)[0]
                times.setdefault(f"append_{check}", []).append(seconds)
        median = {k: statistics.median(v) for k, v in times.items()}
        row = {"prompt": prompt, "tail_bytes": tail_bytes, "seconds": median,
               "state_per_byte_over_forward": {c: median[f"state_{c}"] / tail_bytes / median["forward"] for c in CHECKS},
               "append_over_forward": {c: median[f"append_{c}"] / median["forward"] for c in CHECKS}}
        rows.append(row)
        print(f"{prompt[-24:]:>26s}  n={tail_bytes}  forward {median['forward']:.3f}s  "
              + "  ".join(f"{c}: state/byte {row['state_per_byte_over_forward'][c]:.2f}x "
                          f"append {row['append_over_forward'][c]:.2f}x" for c in CHECKS))
    summary = {c: {"state_per_byte_over_forward": statistics.median(r["state_per_byte_over_forward"][c] for r in rows),
                   "append_over_forward": statistics.median(r["append_over_forward"][c] for r in rows)}
               for c in CHECKS}
    print("median over prompts:", json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": "SmolLM2-135M-Instruct (fp32, CPU)", "threads": torch.get_num_threads(),
                                    "rounds": args.rounds, "rows": rows, "median": summary}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
