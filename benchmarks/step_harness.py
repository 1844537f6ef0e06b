"""Shared by the step benchmarks: trainers of several variants on one fixed generation batch, timed side by side.

Each variant gets its own copy of the same initial model; generation runs once and is replayed to every variant,
so all train on identical completions and the comparison excludes sampling noise. A step = TRL's
_prepare_inputs (rewards, advantages, tokenfocus signals and policy) + forward/backward + optimizer step. Rounds
interleave the variants; medians are reported.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch


def synchronize() -> None:
    """Wait for queued GPU work, so a timer read after it counts the work (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def add_device_arguments(parser) -> None:
    """``--model`` (any model spec; GPU checks use a random-weight copy of SmolLM2's shapes) and ``--device``."""
    parser.add_argument("--model", default="default", help="model spec (default: the packaged SmolLM2-135M)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def build_trainers(variants: dict, base, tokenizer, dataset, reward, config: dict) -> dict:
    """{name: trainer} for ``variants`` {name: (trainer class, extra kwargs)}, generation replayed from the first."""
    from trl import GRPOConfig

    trainers = {}
    for name, (cls, extra) in variants.items():
        model = copy.deepcopy(base)
        model.train()
        trainers[name] = cls(model=model, processing_class=tokenizer, reward_funcs=[reward],
                             args=GRPOConfig(**config), train_dataset=dataset, **extra)
        trainers[name].create_optimizer_and_scheduler(num_training_steps=100)
        trainers[name].current_gradient_accumulation_steps = 1
    cache = {}
    for trainer in trainers.values():
        original = trainer._generate

        def replay(prompts, _original=original):
            if "out" not in cache:
                cache["out"] = _original(prompts)
            return copy.deepcopy(cache["out"])

        trainer._generate = replay
    return trainers


def time_steps(trainers: dict, generation_batch: list, rounds: int) -> dict[str, list[float]]:
    """Seconds per optimizer step of every trainer: one warm-up step each, then ``rounds`` interleaved rounds."""
    def step(trainer) -> float:
        start = time.perf_counter()
        trainer.training_step(trainer.model, generation_batch, None)  # prepares inputs (TRL) inside
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        synchronize()
        return time.perf_counter() - start

    for trainer in trainers.values():  # warm-up (the first also generates)
        step(trainer)
    times = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            times[name].append(step(trainer))
    return times


def cuda_step_peaks(trainers: dict, generation_batch: list) -> dict[str, dict]:
    """Per trainer, the CUDA memory one optimizer step allocates at its peak above what was allocated before it
    (models, optimizer state, the cached generation), with its ratio to the first trainer's (the plain step)."""
    rows = {}
    for name, trainer in trainers.items():
        synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        trainer.training_step(trainer.model, generation_batch, None)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        synchronize()
        rows[name] = {"baseline_bytes": before, "step_peak_bytes": torch.cuda.max_memory_allocated() - before}
    plain = next(iter(rows.values()))["step_peak_bytes"]
    print(f"{'variant':>18} | {'step peak MiB':>13} | {'x plain':>7}")
    for name, row in rows.items():
        row["ratio_vs_plain"] = row["step_peak_bytes"] / plain
        print(f"{name:>18} | {row['step_peak_bytes'] / 2**20:13.1f} | {row['ratio_vs_plain']:7.3f}")
    return rows


def ratio_table(times: dict[str, list[float]], baseline: str) -> dict[str, dict]:
    """{name: median, times, ratio to the baseline's median}, printed as a table."""
    base = statistics.median(times[baseline])
    rows = {}
    print(f"{'variant':>18} | {'s/step':>7} | {'x ' + baseline:>9}")
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {"median_s": median, "times_s": values, "ratio_vs_" + baseline: median / base}
        print(f"{name:>18} | {median:7.3f} | {median / base:9.3f}")
    return rows


def group_arguments(description: str, out: str):
    """The arguments of the plain-vs-shared group benchmarks: ``--rows``, ``--width``, ``--prompt``, ``--repeats``,
    ``--out``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--prompt", default="long_facts:L20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=out)
    return parser.parse_args()


def plain_vs_shared(run, repeats: int) -> tuple[dict, dict, dict]:
    """``run(shared)`` alternately plain and shared, ``repeats`` rounds: (last results, median seconds, all seconds),
    each keyed by the flag (False: plain, True: shared)."""
    times = {False: [], True: []}
    results = {}
    for _ in range(repeats):
        for shared in (False, True):
            started = time.perf_counter()
            results[shared] = run(shared)
            synchronize()
            times[shared].append(time.perf_counter() - started)
    return results, {flag: statistics.median(values) for flag, values in times.items()}, times


def write_report(report: dict, out: str) -> None:
    """Print ``report`` as JSON and write it to ``out``."""
    import json

    print(json.dumps(report, indent=1))
    with open(out, "w") as handle:
        json.dump(report, handle, indent=1)
