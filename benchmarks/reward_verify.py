"""Cost of the killable reward check (a math-verify worker process) vs math-verify in this process, side by side.

Batches of 64 completions that need the symbolic path (fractions and decimals, which the integer fast path
does not settle) are scored alternately by
  (a) in_process:  math_verify.parse / verify called directly in this process (the old path; cannot be killed);
  (b) worker:      AnswerReward, whose symbolic checks run in a warm worker process with a timeout and a memory cap;
plus the worker's cold start, and the hostile completion "Answer: 2^(2^100)" (old path: never returns).

    python benchmarks/reward_verify.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from tokenfocus.tasks.rewards import AnswerReward, extract_answer
from tokenfocus.tasks.verify import SymbolicVerifier

RESULTS = Path(__file__).parent / "results"
BATCHES = {
    "3/4 vs 0.75 (x64)": (["Answer: 3/4"] * 64, ["0.75"] * 64),
    "64 different fractions": ([f"Answer: {i}/{i + 1}" for i in range(1, 65)],
                               [f"{i / (i + 1):.6f}" for i in range(1, 65)]),
}


def in_process(completions, answers) -> list[float]:
    from math_verify import parse, verify

    return [float(verify(parse(gold, parsing_timeout=None), parse(extract_answer(c), parsing_timeout=None),
                         timeout_seconds=None)) for c, gold in zip(completions, answers)]


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    started = time.perf_counter()
    cold = SymbolicVerifier()
    cold.verify_many([("0.75", "3/4")], timeout_s=30)
    cold_start_ms = (time.perf_counter() - started) * 1000
    cold.close()
    reward = AnswerReward(timeout_s=5.0)
    reward(["Answer: 1/2"], ["0.5"])  # warm the shared worker
    in_process(["Answer: 1/2"], ["0.5"])  # and math-verify in this process
    rows = {}
    for name, (completions, answers) in BATCHES.items():
        old, new = [], []
        for _ in range(args.rounds):  # interleaved, so both see the same machine noise
            old.append(timed(in_process, completions, answers))
            new.append(timed(reward, completions, answers))
        rows[name] = {"in_process_ms": statistics.median(old), "worker_ms": statistics.median(new),
                      "ratio": statistics.median(new) / statistics.median(old)}
    hostile = AnswerReward(timeout_s=1.0)
    started = time.perf_counter()
    score = hostile(["Answer: 2^(2^100)"], ["85"])
    hostile_s = time.perf_counter() - started
    print(f"{'batch of 64':28s} {'in-process ms':>14s} {'worker ms':>10s} {'ratio':>6s}")
    for name, row in rows.items():
        print(f"{name:28s} {row['in_process_ms']:14.1f} {row['worker_ms']:10.1f} {row['ratio']:6.2f}")
    print(f"worker cold start: {cold_start_ms:.0f} ms; hostile 2^(2^100) with timeout 1 s: {hostile_s:.2f} s, "
          f"score {score}, timeouts {hostile.timeouts}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "reward_verify_cpu.json"
    out.write_text(json.dumps({"rounds": args.rounds, "batches": rows, "cold_start_ms": cold_start_ms,
                               "hostile_seconds": hostile_s, "hostile_timeouts": hostile.timeouts}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
