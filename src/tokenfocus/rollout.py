"""Generate responses with Hugging Face ``generate`` and lay them out as a rollout batch.

Layout (TRL GRPO / verl): each row is ``[left-padded prompt (width P) | right-padded completion (width C)]``.
The completion mask covers the generated tokens up to and including the first EOS; it is derived from
lengths, never from ``ids != pad_id`` (pad = EOS in SmolLM2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .types import TokenBatch


@dataclass
class Rollout:
    batch: TokenBatch
    prompt_width: int  # P: the completion of every row starts at column P
    prompts: list[str]
    completions: list[str]

    @property
    def completion_lengths(self) -> list[int]:
        return self.batch.response_mask.sum(-1).tolist()


class PromptError(ValueError):
    pass


def format_prompts(tokenizer, prompts: list[str], chat: bool = True) -> list[str]:
    """Wrap each prompt in the tokenizer's chat template (user turn + assistant header) when it has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    return list(prompts)


def _context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2**31)


@torch.no_grad()
def generate_rollout(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = False,
    samples_per_prompt: int = 1,
) -> Rollout:
    """Generate completions (greedy when temperature == 0) and return the padded rollout.

    ``samples_per_prompt`` = k > 1: k completions of each prompt, rows ordered p0 x k, p1 x k, ...; each prompt is
    run through the model once and its KV cache copied to its k rows, instead of k prompt forwards (on long prompts
    most of the cost). The draws differ from k copies of the prompt generated separately; their distribution does
    not. ``batch_size`` counts rows.
    """
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    if not prompts:
        raise PromptError("No prompts given: pass at least one prompt")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise PromptError(f"Prompts {empty[:10]} are empty; remove them or give them text")
    texts = format_prompts(tokenizer, prompts, chat)
    encoded = [tokenizer(t, add_special_tokens=not chat).input_ids for t in texts]
    limit = _context_length(model)
    too_long = [(i, len(ids)) for i, ids in enumerate(encoded) if len(ids) + max_new_tokens > limit]
    if too_long:
        i, n = too_long[0]
        raise PromptError(
            f"{len(too_long)} prompt(s) do not fit the model context of {limit} tokens with "
            f"max_new_tokens={max_new_tokens} (prompt {i} has {n} tokens). Shorten them or lower max_new_tokens."
        )
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    prompt_width = max(len(ids) for ids in encoded)
    rows_prompt, rows_completion = [], []
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    k = samples_per_prompt
    per_chunk = max(1, batch_size // k)  # distinct prompts per generate call
    try:
        for start in tqdm(range(0, len(encoded), per_chunk), desc="generating", disable=not progress, leave=False):
            chunk = encoded[start : start + per_chunk]
            ids = torch.full((len(chunk), prompt_width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, row in enumerate(chunk):
                ids[r, prompt_width - len(row) :] = torch.tensor(row)
                mask[r, prompt_width - len(row) :] = 1
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
                "do_sample": False
            }
            shared = k > 1 and prompt_width > 1  # a one-token prompt has nothing to share
            rows = torch.arange(len(chunk)).repeat_interleave(k)
            cache = {"cache": prompt_cache(model, ids, mask, rows, device)} if shared else {}
            ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=sorted(eos_ids),
                **cache,
                **sampling,
            ).cpu()
            rows_prompt.append((ids, mask))
            rows_completion.extend(_cut_at_eos(out[r, prompt_width:].tolist(), eos_ids) for r in range(len(ids)))
    finally:
        model.train(was_training)
    rows = [p for p in prompts for _ in range(k)]
    return _assemble(rows_prompt, rows_completion, prompt_width, pad_id, tokenizer, rows)


def prompt_cache(model, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, device=None):
    """For ``generate``: the KV cache of the left-padded prompts ``ids`` but their last token (positions count real
    tokens only, as ``generate`` counts them), one copy per entry of ``rows`` (indices into ``ids``). ``generate``,
    given the rows' whole prompts with it, feeds only each row's last prompt token."""
    device = device if device is not None else ids.device
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids[:, :-1].to(device), attention_mask=mask[:, :-1].to(device),
                position_ids=positions[:, :-1].to(device), use_cache=True)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    cache.batch_select_indices(rows.to(device))
    return cache


def _eos_ids(model, tokenizer) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _cut_at_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    for i, tok in enumerate(tokens):
        if tok in eos_ids:
            return tokens[: i + 1]  # the EOS is part of the response (it is a sampled action)
    return tokens


def _assemble(rows_prompt, completions, prompt_width, pad_id, tokenizer, prompts) -> Rollout:
    width = max(1, max(len(c) for c in completions))
    prompt_ids = torch.cat([ids for ids, _ in rows_prompt])
    prompt_mask = torch.cat([mask for _, mask in rows_prompt]).bool()
    comp_ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    comp_mask = torch.zeros(len(completions), width, dtype=torch.bool)
    for r, row in enumerate(completions):
        comp_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        comp_mask[r, : len(row)] = True
    batch = TokenBatch(
        input_ids=torch.cat([prompt_ids, comp_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, comp_mask], dim=1),
        response_mask=torch.cat([torch.zeros_like(prompt_mask), comp_mask], dim=1),
    )
    texts = [tokenizer.decode(row, skip_special_tokens=False) for row in completions]
    return Rollout(batch, prompt_width, list(prompts), texts)


def token_pieces(tokenizer, ids: list[int]) -> tuple[list[str], list[tuple[int, int]]]:
    """Split the decoded text of ``ids`` into one piece per token, with (start, end) character offsets.

    Decoding prefixes keeps multi-byte characters whole: a token that completes nothing yet gets "".
    """
    pieces, offsets, previous = [], [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        if text.endswith("\ufffd"):  # an unfinished UTF-8 sequence: wait for the next token
            pieces.append("")
            offsets.append((len(previous), len(previous)))
            continue
        common = len(previous) if text.startswith(previous) else 0
        pieces.append(text[common:])
        offsets.append((common, len(text)))
        previous = text
    return pieces, offsets
