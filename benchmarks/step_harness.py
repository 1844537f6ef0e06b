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
        return time.perf_counter() - start

    for trainer in trainers.values():  # warm-up (the first also generates)
        step(trainer)
    times = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            times[name].append(step(trainer))
    return times


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
