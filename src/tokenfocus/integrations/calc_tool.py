"""The calculator tool loop of task T6 as a TRL ``rollout_func`` (GRPOTrainer's experimental generation hook).

For each prompt: sample until the model closes a call (``</calc>``), EOS or the token budget; on a call, evaluate
the expression with ``tasks.calculator.safe_calc`` and append `` = VALUE`` (or `` = error``) as environment tokens;
continue. Environment tokens carry ``env_mask`` 0, so TRL leaves them out of the loss (its ``tool_mask``); their
sampling log-probs are 0. Calls beyond ``max_calls`` are answered `` = no more calls`` and counted; a malformed
call (anything ``safe_calc`` refuses) is counted and answered `` = error``; nothing raises. The counts go to the
reward functions as the columns ``tool_calls``, ``tool_errors`` and ``tool_over_cap``.

Generation is one prompt at a time with transformers' ``generate`` (stop string ``</calc>``): right for CPU
studies and tests; a batched or vLLM loop is not built.
"""

from __future__ import annotations

import torch

from ..tasks.calculator import CALL, safe_calc

STOP = "</calc>"


class CalcToolLoop:
    """``rollout_func(prompts, trainer) -> {prompt_ids, completion_ids, logprobs, env_mask, tool_calls, ...}``."""

    def __init__(self, max_calls: int = 4, generate=None):
        if max_calls < 0:
            raise ValueError(f"max_calls must be >= 0, got {max_calls}")
        self.max_calls = max_calls
        # (model, tokenizer, ids, budget, temperature) -> (new ids, their log-probs); temperature 0: greedy
        self.generate = generate or self._hf_generate

    @staticmethod
    @torch.no_grad()
    def _hf_generate(model, tokenizer, ids: list[int], budget: int, temperature: float):
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        try:
            out = model.generate(input_ids=torch.tensor([ids], device=device), max_new_tokens=budget,
                                 stop_strings=[STOP], tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id,
                                 return_dict_in_generate=True, output_scores=True, **sampling)
        finally:
            model.train(was_training)
        new = out.sequences[0, len(ids):].tolist()
        logps = [float(torch.log_softmax(score[0].float(), -1)[token]) for score, token in zip(out.scores, new)]
        return new, logps

    def rollout(self, model, tokenizer, prompt_ids: list[int], budget: int, temperature: float = 1.0) -> dict:
        """One completion: ids, sampling log-probs, env mask and the call counts."""
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = {tokenizer.eos_token_id, *([configured] if isinstance(configured, int) else configured or [])}
        ids, logps, env = [], [], []
        calls = errors = over = 0
        while budget - len(ids) > 0:
            new, new_logps = self.generate(model, tokenizer, prompt_ids + ids, budget - len(ids), temperature)
            ids += new
            logps += new_logps
            env += [1] * len(new)
            if not new or new[-1] in eos:
                break
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if not text.rstrip().endswith(STOP):
                break  # the budget ran out mid-answer
            calls += 1
            if calls > self.max_calls:
                over += 1
                reply = " = no more calls\n"
            else:
                found = CALL.findall(text)
                value = safe_calc(found[-1]) if found else None
                errors += value is None
                reply = " = error\n" if value is None else f" = {value}\n"
            tool = tokenizer(reply, add_special_tokens=False).input_ids[:max(0, budget - len(ids))]
            ids += tool
            logps += [0.0] * len(tool)
            env += [0] * len(tool)
        return {"ids": ids, "logps": logps, "env": env, "calls": calls, "errors": errors, "over": over}

    def __call__(self, prompts, trainer) -> dict:
        prompt_ids = trainer._tokenize_prompts(prompts)[0]  # TRL's own tokenization (chat template and all)
        model = trainer.accelerator.unwrap_model(trainer.model)
        rows = [self.rollout(model, trainer.processing_class, list(ids), trainer.max_completion_length,
                             trainer.temperature) for ids in prompt_ids]
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
        texts, calls = [], []
        for text in format_prompts(tokenizer, prompts):
            row = self.rollout(model, tokenizer, tokenizer(text, add_special_tokens=False).input_ids, max_new_tokens,
                               temperature)
            texts.append(tokenizer.decode(row["ids"], skip_special_tokens=True))
            calls.append(row["calls"])
        return texts, calls
