"""Span marks and counterfactual contexts for a trainer's rollout batch: framework glue around ``tasks.spans``.

    dataset rows (prompt, tf_spans) ──► prompt_marks ──► {role: (B, P) bool}, right-aligned to TRL's left-padded
                                                         prompt_ids, checked token by token against them
    marks / prompts ──► evidence_masked_mask            (B, P + C) attention mask with the evidence hidden
                    ──► shuffled_prompts                 the prompts with their steps permuted (one permutation per
                                                         prompt text, step and run seed), for re-tokenizing

The marks travel from the task through the dataset's ``tf_spans`` column (a JSON string, so TRL's shuffling and
splitting carry it like any column) to the batch.
"""

from __future__ import annotations

import hashlib
import random

import torch

from ..tasks.spans import decode_spans, shuffled_steps, token_marks, user_content

SPANS_COLUMN = "tf_spans"


def prompt_marks(tokenizer, rows: list[dict], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, roles,
                 **template_kwargs) -> dict[str, torch.Tensor]:
    """{role: (B, P) bool} for the rows' prompts, aligned to ``prompt_ids`` (left padded, as TRL pads them)."""
    batch, width = prompt_ids.shape
    marks = {role: torch.zeros(batch, width, dtype=torch.bool, device=prompt_ids.device) for role in roles}
    for row, example in enumerate(rows):
        spans = decode_spans(example.get(SPANS_COLUMN))
        missing = [role for role in roles if role not in spans]
        if missing:
            raise ValueError(f"prompt {user_content(example['prompt'])[:60]!r} has no {missing} span marks (dataset "
                             f"column {SPANS_COLUMN!r}); every prompt of a run whose signals need them must mark them")
        ids, row_marks = token_marks(tokenizer, example["prompt"], {role: spans[role] for role in roles},
                                     **template_kwargs)
        real = prompt_ids[row][prompt_mask[row].bool()].tolist()
        if ids != real:
            raise ValueError(f"prompt {user_content(example['prompt'])[:60]!r}: the trainer generated from {len(real)} "
                             f"prompt tokens that differ from the chat template's rendering ({len(ids)} tokens), so "
                             "span marks cannot be placed (tools, environments or a custom template change the "
                             "prompt); run the counterfactual signals without them")
        for role in roles:
            marks[role][row, width - len(ids):] = torch.tensor(row_marks[role], dtype=torch.bool)
    return marks


def evidence_masked_mask(prompt_mask: torch.Tensor, completion_mask: torch.Tensor,
                         evidence: torch.Tensor) -> torch.Tensor:
    """The (B, P + C) attention mask of the rollout with the evidence prompt tokens hidden (positions unchanged:
    the scorer's position ids do not follow the mask)."""
    return torch.cat([prompt_mask.bool() & ~evidence, completion_mask.bool()], dim=1).long()


def shuffled_prompts(rows: list[dict], seed: int, step: int):
    """Each row's prompt with its ``steps`` spans permuted: one permutation per (prompt text, step, run seed), so
    the completions of one prompt share it on every process."""
    prompts = []
    for example in rows:
        spans = decode_spans(example.get(SPANS_COLUMN))
        content = user_content(example["prompt"])
        if len(spans.get("steps", ())) < 2:
            raise ValueError(f"prompt {content[:60]!r}: steps_shuffled needs at least 2 'steps' spans, it marks "
                             f"{len(spans.get('steps', ()))}")
        digest = hashlib.sha256(f"{seed}-{step}-{content}".encode()).hexdigest()
        shuffled = shuffled_steps(content, spans["steps"], random.Random(digest))
        prompt = example["prompt"]
        if isinstance(prompt, str):
            prompts.append(shuffled)
        else:
            last = max(i for i, m in enumerate(prompt) if m.get("role") == "user")
            prompts.append([*prompt[:last], {**prompt[last], "content": shuffled}, *prompt[last + 1:]])
    return prompts


def left_pad(rows: list[list[int]], width: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of ``rows`` left padded to ``width``."""
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for r, row in enumerate(rows):
        if row:
            ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long, device=device)
            mask[r, width - len(row):] = 1
    return ids, mask
