"""`tokenfocus eval`: pass@1 (greedy) and mean@k (sampled) accuracy on a split, for a model or a checkpoint.

pass@1 = fraction of problems whose greedy completion is correct; mean@k = mean correctness over k sampled
completions per problem (temperature 1.0 unless set), i.e. the expected single-sample accuracy. The result
keeps every problem's outcome (``problems``: prompt, tier, greedy 0/1, sampled mean), so two models scored
on the same problems can be compared pair by pair. Results go
to ``RUN_DIR/eval/<split>-<model tag>.json`` and, as one ``eval/...`` line, to ``RUN_DIR/metrics.jsonl``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import append_jsonl, prepare_output_dir, write_json
from ..rollout import generate_rollout
from ..tasks import Example, RewardConfig, build_task


@dataclass
class EvalConfig:
    model: str
    task: dict = field(default_factory=lambda: {"name": "arithmetic"})  # a task spec (tasks.build_task)
    split: str = "test"
    n: int = 64
    k: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0
    batch_size: int = 16
    answer_line_only: bool = False  # read answers from the last "Answer:" line only (the training reward's rule)
    tiers: list | dict | None = None  # a tier list, or {tier: count} (a fixed mix; n is then the counts' sum)
    # mean@k's k samples of a problem share one prompt forward (its KV cache copied): on long prompts about k times
    # less prompt compute; the same distribution, other draws than without (so a study keeps one setting)
    shared_prefill: bool = False


def eval_problems(config: EvalConfig) -> list[Example]:
    """The held-out problems of the config's task and split (the same problems for the same seed)."""
    return build_task(config.task).eval_examples(config.split, config.n, config.seed, tiers=config.tiers)


def _accuracy_by_tier(correct: list[float], tiers: list[str]) -> dict[str, float]:
    out = {}
    for tier in sorted(set(tiers)):
        values = [c for c, t in zip(correct, tiers) if t == tier]
        out[tier] = sum(values) / len(values)
    return out


def _generate(model, tokenizer, task, prompts, config: EvalConfig, temperature: float, progress: bool, k: int = 1):
    """(completion texts, lengths in tokens, tool calls per completion or None), ``k`` per prompt (rows p0 x k,
    p1 x k, ...): through the task's tool loop when it has one (the calculator's <calc> calls are run), else batched
    generation."""
    if task.tool == "calc":
        from ..integrations.calc_tool import CalcToolLoop

        texts, calls = CalcToolLoop().complete(model, tokenizer, [p for p in prompts for _ in range(k)],
                                               config.max_new_tokens, temperature, seed=config.seed)
        return texts, [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts], calls
    shared = k > 1 and config.shared_prefill
    rollout = generate_rollout(model, tokenizer, prompts if shared else [p for p in prompts for _ in range(k)],
                               max_new_tokens=config.max_new_tokens, temperature=temperature, seed=config.seed,
                               batch_size=config.batch_size, progress=progress, samples_per_prompt=k if shared else 1)
    return rollout.completions, rollout.completion_lengths, None


def evaluate(model, tokenizer, config: EvalConfig, progress: bool = False) -> dict:
    problems = eval_problems(config)
    prompts = [p.prompt for p in problems]
    answers = [p.answer for p in problems]
    tiers = [p.tier for p in problems]
    task = build_task(config.task)
    # the task's own reward (arithmetic & co: "Answer: N"; json_answers: the last "answer": N)
    reward = task.reward(RewardConfig(answer_line_only=config.answer_line_only))
    started = time.perf_counter()
    greedy, lengths, calls = _generate(model, tokenizer, task, prompts, config, 0.0, progress)
    pass1 = reward(greedy, answers)
    sampled_correct = [0.0] * len(prompts)
    if config.k > 0:
        sampled = _generate(model, tokenizer, task, prompts, config, config.temperature, progress, k=config.k)[0]
        scores = reward(sampled, [a for a in answers for _ in range(config.k)])
        sampled_correct = [sum(scores[i * config.k:(i + 1) * config.k]) / config.k for i in range(len(prompts))]
    result = {
        "split": config.split, "task": config.task["name"], "n": len(prompts), "k": config.k,
        "pass@1": sum(pass1) / len(pass1),
        f"mean@{config.k}": sum(sampled_correct) / len(sampled_correct) if config.k > 0 else None,
        "pass@1_by_tier": _accuracy_by_tier(pass1, tiers),
        f"mean@{config.k}_by_tier": _accuracy_by_tier(sampled_correct, tiers) if config.k > 0 else None,
        "greedy_mean_length": sum(lengths) / len(lengths),
        "reward_errors": reward.errors, "reward_timeouts": reward.timeouts,
        "seconds": time.perf_counter() - started,
        "examples": [{"prompt": p, "answer": a, "completion": c, "correct": bool(s)}
                     for p, a, c, s in list(zip(prompts, answers, greedy, pass1))[:8]],
        # Per-problem outcomes, in problem order: what paired comparisons between models resample.
        "problems": [{"prompt": p, "tier": t, "greedy": int(g), "sampled": s if config.k > 0 else None}
                     for p, t, g, s in zip(prompts, tiers, pass1, sampled_correct)],
    }
    if calls is not None:  # a tool task: calls per problem and per solved problem, and HyperEyes' CAS (greedy)
        from ..tasks.trace import cas

        solved = [c for c, ok in zip(calls, pass1) if ok]
        result["tool_calls_mean"] = sum(calls) / len(calls)
        result["tool_calls_per_solved"] = sum(solved) / len(solved) if solved else None
        result["cas"] = cas(result["pass@1"], result["greedy_mean_length"], result["tool_calls_mean"])
        for row, count in zip(result["problems"], calls):
            row["tool_calls"] = count
    return result


def eval_result_path(config: EvalConfig, run_dir: Path) -> Path:
    """``RUN_DIR/eval/<split>-<model tag>.json`` (the tag: a directory's name, or the model spec made a file name)."""
    tag = Path(config.model).name if Path(config.model).exists() else config.model.replace("/", "_").replace(":", "_")
    return Path(run_dir) / "eval" / f"{config.split}-{tag}.json"


def run_eval(config: EvalConfig, run_dir: Path, progress: bool = False, overwrite: bool = False) -> dict:
    """Evaluate and record; refuses (before loading the model) to replace an earlier result without ``overwrite``."""
    from ..models import load_model

    run_dir = Path(run_dir)
    target = eval_result_path(config, run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir} is a file; choose a directory")
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already holds this evaluation; pass --overwrite to replace it")
    if not target.parent.is_dir():
        prepare_output_dir(target.parent, what="eval directory")  # created now: a bad --run-dir fails before loading
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model)
    result = evaluate(model, tokenizer, config, progress=progress)
    write_json(target, {"config": vars(config), **result})
    line = {"event": "eval", "time": time.time(), "model": config.model,
            f"eval/{config.split}/pass@1": result["pass@1"]}
    if config.k > 0:
        line[f"eval/{config.split}/mean@{config.k}"] = result[f"mean@{config.k}"]
    append_jsonl(run_dir / "metrics.jsonl", line)
    return result
