"""The calculator tool loop of task T6 as a TRL ``rollout_func`` (GRPOTrainer's experimental generation hook).

For each prompt: sample until the model closes a call (``</calc>``), EOS or the token budget; on a call, evaluate
the expression with ``tasks.calculator.safe_calc`` and append `` = VALUE`` (or `` = error``) as environment tokens;
continue. Environment tokens carry ``env_mask`` 0, so TRL leaves them out of the loss (its ``tool_mask``); their
sampling log-probs are 0. Calls beyond ``max_calls`` are answered `` = no more calls`` and counted; a malformed
call (anything ``safe_calc`` refuses) is counted and answered `` = error``; nothing raises. The counts go to the
reward functions as the columns ``tool_calls``, ``tool_errors`` and ``tool_over_cap``.

Generation is batched: the rows still running are left-padded and sampled together with transformers'
``generate`` until each closes a call, ends or runs out of budget; the rows that made a call get the reply and go
on in the next round (a round per call, ``max_calls`` + 1 rounds at most). A vLLM loop is not built.
"""

from __future__ import annotations

import torch

from ..tasks.calculator import CALL, safe_calc

STOP = "</calc>"


class _CallClosed:
    """Stops a row of a batched ``generate`` once its new text contains ``</calc>`` (the row's first call)."""

    def __init__(self, tokenizer, start: int):
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([STOP in text for text in texts], device=input_ids.device)


def cut_at_stop(new: list[int], tokenizer, eos: set, budget: int) -> int:
    """How many of a row's sampled tokens it keeps: up to and including its first EOS or the token that completes
    ``</calc>``, at most ``budget`` (a batched row samples on, or is padded, after it stopped)."""
    for t, token in enumerate(new[:budget]):
        if token in eos or STOP in tokenizer.decode(new[:t + 1], skip_special_tokens=True):
            return t + 1
    return min(len(new), budget)


class CalcToolLoop:
    """``rollout_func(prompts, trainer) -> {prompt_ids, completion_ids, logprobs, env_mask, tool_calls, ...}``."""

    def __init__(self, max_calls: int = 4, generate=None, batch_size: int = 32):
        if max_calls < 0 or batch_size < 1:
            raise ValueError(f"max_calls must be >= 0 and batch_size >= 1, got {max_calls}, {batch_size}")
        self.max_calls, self.batch_size = max_calls, batch_size
        # (model, tokenizer, ids, budget, temperature) -> (new ids, their log-probs), one row at a time (tests);
        # None: batched transformers generate
        self.generate = generate

    @torch.no_grad()
    def _generate_batch(self, model, tokenizer, contexts: list[list[int]], budgets: list[int], temperature: float,
                        eos: set) -> list[tuple[list[int], list[float]]]:
        """Each context's next piece (cut at its stop) and the sampling log-probs, ``batch_size`` rows at a time."""
        if self.generate is not None:
            return [self.generate(model, tokenizer, ids, budget, temperature) for ids, budget in zip(contexts, budgets)]
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        pieces = []
        was_training = model.training
        model.eval()
        try:
            for first in range(0, len(contexts), self.batch_size):
                chunk, chunk_budgets = contexts[first:first + self.batch_size], budgets[first:first + self.batch_size]
                width = max(map(len, chunk))
                ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk], device=device)  # left padding
                mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(chunk_budgets),
                                     stopping_criteria=[_CallClosed(tokenizer, width)], pad_token_id=pad,
                                     return_dict_in_generate=True, output_scores=True, **sampling)
                sampled = out.sequences[:, width:]
                logps = torch.cat([torch.log_softmax(score.float(), -1).gather(1, sampled[:, t:t + 1])
                                   for t, score in enumerate(out.scores)], 1).tolist()  # (B, T): no (B, T, V) kept
                for row, budget in enumerate(chunk_budgets):
                    new = sampled[row].tolist()
                    keep = cut_at_stop(new, tokenizer, eos, budget)
                    pieces.append((new[:keep], logps[row][:keep]))
        finally:
            model.train(was_training)
        return pieces

    def rollouts(self, model, tokenizer, prompts: list[list[int]], budget: int, temperature: float = 1.0) -> list[dict]:
        """One completion per prompt (ids, sampling log-probs, env mask, call counts), the rows still running
        generated together each round."""
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = {tokenizer.eos_token_id, *([configured] if isinstance(configured, int) else configured or [])}
        rows = [{"ids": [], "logps": [], "env": [], "calls": 0, "errors": 0, "over": 0} for _ in prompts]
        running = [i for i in range(len(prompts)) if budget > 0]
        while running:
            pieces = self._generate_batch(model, tokenizer, [prompts[i] + rows[i]["ids"] for i in running],
                                          [budget - len(rows[i]["ids"]) for i in running], temperature, eos)
            running = [i for i, (new, logps) in zip(running, pieces)
                       if self._advance(rows[i], new, logps, tokenizer, budget, eos)]
        return rows

    def rollout(self, model, tokenizer, prompt_ids: list[int], budget: int, temperature: float = 1.0) -> dict:
        """One completion: ids, sampling log-probs, env mask and the call counts."""
        return self.rollouts(model, tokenizer, [prompt_ids], budget, temperature)[0]

    def _advance(self, row: dict, new: list[int], logps: list[float], tokenizer, budget: int, eos: set) -> bool:
        """Append a generated piece to ``row``; on a closed call, the tool's reply. Whether the row goes on."""
        ids = row["ids"]
        ids += new
        row["logps"] += logps
        row["env"] += [1] * len(new)
        if not new or new[-1] in eos:
            return False
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if not text.rstrip().endswith(STOP):
            return False  # the budget ran out mid-answer
        row["calls"] += 1
        if row["calls"] > self.max_calls:
            row["over"] += 1
            reply = " = no more calls\n"
        else:
            found = CALL.findall(text)
            value = safe_calc(found[-1]) if found else None
            row["errors"] += value is None
            reply = " = error\n" if value is None else f" = {value}\n"
        tool = tokenizer(reply, add_special_tokens=False).input_ids[:max(0, budget - len(ids))]
        ids += tool
        row["logps"] += [0.0] * len(tool)
        row["env"] += [0] * len(tool)
        return budget - len(ids) > 0

    def __call__(self, prompts, trainer) -> dict:
        prompt_ids = trainer._tokenize_prompts(prompts)[0]  # TRL's own tokenization (chat template and all)
        model = trainer.accelerator.unwrap_model(trainer.model)
        rows = self.rollouts(model, trainer.processing_class, [list(ids) for ids in prompt_ids],
                             trainer.max_completion_length, trainer.temperature)
        return {"prompt_ids": [list(ids) for ids in prompt_ids], "completion_ids": [r["ids"] for r in rows],
                "logprobs": [r["logps"] for r in rows], "env_mask": [r["env"] for r in rows],
                "tool_calls": [r["calls"] for r in rows], "tool_errors": [r["errors"] for r in rows],
                "tool_over_cap": [r["over"] for r in rows]}

    def complete(self, model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> tuple[list[str], list[int]]:
        """(completion texts with the tool's replies, calls per completion) for plain prompts, rendered with the
        chat template as evaluation renders them: the evaluation path of a tool task."""
        from ..rollout import format_prompts

        torch.manual_seed(seed)
        rows = self.rollouts(model, tokenizer, [tokenizer(text, add_special_tokens=False).input_ids
                                                for text in format_prompts(tokenizer, prompts)], max_new_tokens,
                             temperature)
        return [tokenizer.decode(row["ids"], skip_special_tokens=True) for row in rows], [row["calls"] for row in rows]
