"""`tokenfocus diagnose MODEL`: the trainer's gradient diagnosis on as many informative prompt groups as asked.

In training a diagnosis runs on one generation batch, and only prompt groups whose G rewards differ carry
gradient; on a small machine a batch holds few groups, so a scheduled diagnosis waits long for enough of them.
This recipe samples G completions per training prompt (TRL's sampling: temperature, no top-k), keeps the groups
with unequal rewards until every one of ``batches`` batches has ``groups`` of them, and diagnoses each batch with
exactly the inputs ``TokenFocusGRPOTrainer._diagnose`` builds (rollout weights = current weights, ratio 1):

    completion layout (B, C): token c of a row at column P + c, predicted by position P + c - 1 (DESIGN.md)
    advantages             TRL 1.16 GRPO, scale_rewards="group": (R - mean_group) / (std_group + 1e-4), std with
                           Bessel's correction; group ids: rows // G (TRL's order)
    signals                ``diagnosis_signals(config)`` from one no-grad forward (``signals.compute_signals``,
                           predictive entropy at the sampling temperature), sliced to the completion columns
    logprobs_fn(rows)      (b, C) log-probs with gradient from a plain forward, logits / temperature
    old_logprobs           None: ``diagnose`` takes the current log-probs detached (ratio 1, as TRL without PPO
                           iterations)
    correct                reward >= 0.5 (the trainer's rule)

One difference from the trainer, by design: a batch here holds informative groups only, so batch-scope subsets
(anchors, explorers, random) are ranked among those groups' tokens and the all-token normalizer counts only
them (a common scale: cosines, shares and volatility are unchanged by it).

Output directory (refused when non-empty, without ``overwrite``):
    diagnosis.jsonl   one line per batch: ``diag/...`` metrics, batch index, model, prompts, seconds
    diagnosis.json    per metric: mean, sample sd and n over batches (non-finite values left out); settings
    manifest.json     git commit, package versions, seeds
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diagnostics import (DiagnosticsConfig, completion_logit_gradient_norm, completion_logits, diagnose,
                           diagnosis_signals, trainable_parameters)
from ..io import append_jsonl, manifest, prepare_output_dir, write_json
from ..rollout import generate_rollout
from ..signals import compute_signals
from ..tasks import RewardConfig, parse_task
from ..types import PolicyInputs, TokenBatch

LINES_FILE = "diagnosis.jsonl"
SUMMARY_FILE = "diagnosis.json"
REWARD_KINDS = ("answer", "digits")


@dataclass
class Group:
    """One prompt and its G sampled completions (token ids without padding; a completion keeps its EOS)."""

    prompt: str
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: list[float]

    @property
    def informative(self) -> bool:
        return max(self.rewards) > min(self.rewards)


def group_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(B,) TRL 1.16 GRPO advantages, ``scale_rewards="group"`` (its default): (R - mean) / (std + 1e-4) over each
    run of ``num_generations`` rows, std with Bessel's correction (TRL's ``nanstd``)."""
    grouped = rewards.double().view(-1, num_generations)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)  # unbiased
    return ((grouped - mean) / (std + 1e-4)).reshape(-1).float()


def layout(groups: list[Group], pad_id: int) -> tuple[TokenBatch, int]:
    """The groups' rows (group-major) as ``[left-padded prompt (width P) | right-padded completion (width C)]``;
    returns (batch, P): completion token c of a row sits at column P + c."""
    rows = [(g.prompt_ids, c) for g in groups for c in g.completion_ids]
    width_p = max(len(p) for p, _ in rows)
    width_c = max(1, max(len(c) for _, c in rows))
    ids = torch.full((len(rows), width_p + width_c), pad_id, dtype=torch.long)
    attention = torch.zeros(ids.shape, dtype=torch.bool)
    response = torch.zeros(ids.shape, dtype=torch.bool)
    for r, (prompt, completion) in enumerate(rows):
        start, stop = width_p - len(prompt), width_p + len(completion)
        ids[r, start:width_p] = torch.tensor(prompt, dtype=torch.long)
        ids[r, width_p:stop] = torch.tensor(completion, dtype=torch.long)
        attention[r, start:stop] = True
        response[r, width_p:stop] = True
    return TokenBatch(ids, attention, response), width_p


@dataclass
class DiagnosisInputs:
    """Everything ``diagnose`` is called with for one batch (``diagnose(config, **inputs.arguments())``)."""

    batch: TokenBatch
    prompt_width: int
    inputs: PolicyInputs
    advantages: torch.Tensor
    mask: torch.Tensor
    completion_ids: torch.Tensor
    correct: torch.Tensor
    logprobs_fn: Callable[[torch.Tensor], torch.Tensor]
    logit_norm_fn: Callable[[torch.Tensor], torch.Tensor]
    params: list[torch.Tensor]

    def arguments(self) -> dict:
        return {"inputs": self.inputs, "advantages": self.advantages, "mask": self.mask,
                "logprobs_fn": self.logprobs_fn, "params": self.params, "old_logprobs": None,
                "correct": self.correct, "completion_ids": self.completion_ids, "logit_norm_fn": self.logit_norm_fn}


def diagnosis_inputs(model, groups: list[Group], config: DiagnosticsConfig, pad_id: int, *,
                     temperature: float = 1.0, step: int = 0, seed: int = 0) -> DiagnosisInputs:
    """What ``TokenFocusGRPOTrainer._diagnose`` builds from a generation batch, built from sampled groups."""
    batch, width_p = layout(groups, pad_id)
    width_c = batch.shape[1] - width_p
    num_generations = len(groups[0].completion_ids)
    mask = batch.response_mask[:, width_p:]  # (B, C)
    completion_ids = batch.input_ids[:, width_p:]  # (B, C)
    rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)
    advantages = group_advantages(rewards, num_generations)
    group_ids = torch.arange(len(groups)).repeat_interleave(num_generations)
    signals = compute_signals(model, batch, diagnosis_signals(config), temperature=temperature)
    signals = {label: values[:, width_p:].float() for label, values in signals.items()}  # (B, T) -> (B, C)
    inputs = PolicyInputs(mask, signals, group_ids, advantages, step=step, seed=seed)

    def logprobs_fn(rows: torch.Tensor) -> torch.Tensor:  # (b, C), with gradient
        logits = completion_logits(model, batch.input_ids[rows], batch.attention_mask[rows], width_c)
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (b, C, V)
        return logp.gather(-1, completion_ids[rows].to(logp.device)[..., None]).squeeze(-1)

    def logit_norm_fn(rows: torch.Tensor) -> torch.Tensor:  # (b, C) ||e_y - p||, no gradient
        return completion_logit_gradient_norm(model, batch.input_ids[rows], batch.attention_mask[rows], width_c,
                                              temperature=temperature)

    params = [p for _, p in trainable_parameters(model, config.exclude_embeddings)]
    return DiagnosisInputs(batch, width_p, inputs, advantages, mask, completion_ids, rewards >= 0.5, logprobs_fn,
                           logit_norm_fn, params)


def _reward_function(task, reward, answer_line_only: bool):
    if callable(reward):
        return reward
    return task.reward(RewardConfig(kind=reward, answer_line_only=answer_line_only))


def sample_groups(model, tokenizer, examples, reward_fn, needed: int, *, num_generations: int, max_new_tokens: int,
                  temperature: float, seed: int, prompts_per_round: int, log=print) -> tuple[list[Group], int]:
    """Sample G completions per prompt of ``examples`` (in order, ``prompts_per_round`` at a time) until ``needed``
    informative groups are found; returns (the informative groups, in order, at most ``needed``; prompts tried)."""
    found: list[Group] = []
    tried = 0
    for round_index, start in enumerate(range(0, len(examples), prompts_per_round)):
        chunk = examples[start:start + prompts_per_round]
        rollout = generate_rollout(model, tokenizer, [e.prompt for e in chunk for _ in range(num_generations)],
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   seed=seed * 1_000_003 + round_index, batch_size=len(chunk) * num_generations)
        batch, width_p = rollout.batch, rollout.prompt_width
        prompt_ids = [batch.input_ids[r, :width_p][batch.attention_mask[r, :width_p]].tolist()
                      for r in range(batch.shape[0])]
        completions = [batch.input_ids[r, width_p:][batch.response_mask[r, width_p:]].tolist()
                       for r in range(batch.shape[0])]
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)  # what TRL's rewards read
        rewards = reward_fn(completions=texts, answer=[e.answer for e in chunk for _ in range(num_generations)],
                            tier=[e.tier for e in chunk for _ in range(num_generations)])
        tried += len(chunk)
        for i, example in enumerate(chunk):
            rows = slice(i * num_generations, (i + 1) * num_generations)
            group = Group(example.prompt, prompt_ids[rows.start], completions[rows],
                          [float(r) for r in rewards[rows]])
            if group.informative and len(found) < needed:
                found.append(group)
        log(f"sampled {tried} prompt(s): {len(found)}/{needed} informative groups")
        if len(found) >= needed:
            break
    return found, tried


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarize(lines: list[dict]) -> dict[str, dict]:
    """Per numeric metric: mean, sample sd (None below 2 values) and n over the batches where it is finite."""
    keys = [k for k in lines[0] if k.startswith(("diag/", "reward/", "time/"))]
    out = {}
    for key in keys:
        values = [v for v in (line.get(key) for line in lines) if v is not None]
        n = len(values)
        mean = sum(values) / n if n else None
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        out[key] = {"mean": mean, "sd": sd, "n": n}
    return out


def run_diagnosis(model_spec: str, task_spec: dict, out: Path, *, groups: int = 8, batches: int = 4,
                  num_generations: int = 8, max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0,
                  config: DiagnosticsConfig | None = None, answer_line_only=True, log=print,
                  reward: str | Callable = "answer", max_prompts: int | None = None,
                  overwrite: bool = False) -> Path:
    """Diagnose ``batches`` batches of ``groups`` informative prompt groups x ``num_generations`` completions;
    returns ``out``. The task's prompts are drawn with ``seed`` unless ``task_spec`` sets its own; at most
    ``max_prompts`` (default 8 x groups x batches) prompts are tried. ``reward``: "answer", "digits" or a callable
    ``reward(completions, answer, **columns) -> list[float]``. Everything is validated before the model loads."""
    config = config or DiagnosticsConfig()
    max_prompts = max_prompts or 8 * groups * batches
    from .. import models

    problems = list(config.problems()) + models.check_model_spec(model_spec)
    if groups < 2:
        problems.append(f"groups must be >= 2 (split-half volatility compares two halves of them), got {groups}")
    if batches < 1:
        problems.append(f"batches must be >= 1, got {batches}")
    if num_generations < 2:
        problems.append(f"num_generations must be >= 2 (a group needs unequal rewards), got {num_generations}")
    if max_new_tokens < 1:
        problems.append(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not temperature > 0:
        problems.append(f"temperature must be > 0 (greedy completions of a prompt are equal), got {temperature}")
    if max_prompts < groups * batches:
        problems.append(f"max_prompts ({max_prompts}) must be >= groups x batches ({groups * batches})")
    if not callable(reward) and reward not in REWARD_KINDS:
        problems.append(f"reward must be one of {list(REWARD_KINDS)} or a callable, got {reward!r}")
    task = parse_task({"seed": seed, **task_spec} if isinstance(task_spec, dict) else task_spec, problems)
    if problems:
        raise ValueError("; ".join(problems))
    try:
        examples = task.train_examples(max_prompts)
    except ValueError as error:
        raise ValueError(f"{error} (max_prompts={max_prompts})") from None
    out = prepare_output_dir(Path(out), overwrite, "--out")
    started = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer = models.load_model(model_spec)
    # TRL's GRPO samples without top-k (GRPOConfig.top_k = 0) where HF generate defaults to 50; do_sample silences
    # HF's warning that top_k means nothing to greedy decoding (generate_rollout passes do_sample itself).
    model.generation_config.do_sample, model.generation_config.top_k = True, 0
    reward_fn = _reward_function(task, reward, answer_line_only)
    loaded = time.perf_counter()
    log(f"loaded {model_spec} in {loaded - started:.1f}s; sampling {num_generations} completions per prompt for "
        f"{batches} x {groups} informative groups")
    needed = groups * batches
    found, tried = sample_groups(model, tokenizer, examples, reward_fn, needed, num_generations=num_generations,
                                 max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                 prompts_per_round=groups, log=log)
    if len(found) < needed:
        raise ValueError(f"only {len(found)} of {tried} prompts tried had completions with unequal rewards; "
                         f"{needed} informative groups are needed ({batches} batches x {groups}). The model solves "
                         "all or none of these prompts: try other tiers, a higher temperature, fewer groups or "
                         "batches, or a larger max_prompts")
    sampling_s = time.perf_counter() - loaded
    lines = []
    for index in range(batches):
        batch_started = time.perf_counter()
        chosen = found[index * groups:(index + 1) * groups]
        built = diagnosis_inputs(model, chosen, config, tokenizer.pad_token_id, temperature=temperature,
                                 step=index, seed=seed)
        metrics = diagnose(config, **built.arguments())
        model.zero_grad(set_to_none=True)
        line = {"batch": index, "model": model_spec, **{k: _finite(v) for k, v in metrics.items()},
                "reward/mean": float(torch.tensor([r for g in chosen for r in g.rewards]).mean()),
                "time/diagnostics_s": time.perf_counter() - batch_started, "prompts": [g.prompt for g in chosen]}
        append_jsonl(out / LINES_FILE, line)
        lines.append(line)
        log(f"batch {index}: {groups} groups diagnosed in {line['time/diagnostics_s']:.1f}s; cos_full anchors "
            f"{line.get('diag/grad/anchors/cos_full')}, explorers {line.get('diag/grad/explorers/cos_full')}")
    write_json(out / SUMMARY_FILE, {
        "model": model_spec, "task": task.spec(), "groups": groups, "batches": batches,
        "num_generations": num_generations, "max_new_tokens": max_new_tokens, "temperature": temperature,
        "seed": seed, "answer_line_only": answer_line_only,
        "reward": reward if isinstance(reward, str) else getattr(reward, "__name__", repr(reward)),
        "config": config.to_dict(), "prompts_tried": tried, "sampling_s": sampling_s,
        "seconds": time.perf_counter() - started, "metrics": summarize(lines),
    })
    write_json(out / "manifest.json", manifest(seeds={"seed": seed}))
    return out
