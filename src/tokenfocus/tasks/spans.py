"""Span marks: which characters of a prompt play which role (evidence, query, steps), and which tokens they become.

    Example.spans {role: [(start, end), ...]}   character ranges [start, end) in the user message
        ──► check_spans                          empty / outside / overlapping ranges refused, naming the span
        ──► token_marks(tokenizer, prompt, spans) {role: [bool] per prompt token} via the tokenizer's offsets,
                                                 on the prompt exactly as the trainer renders it (chat template)
        ──► shuffled_steps(prompt, spans, rng)   the prompt with its ordered steps permuted (Video-KTR's
                                                 temporal counterfactual; never the identity)

A token belongs to a role when its characters overlap one of the role's ranges (a token that straddles a span
edge, such as " 47" with the span on "47", is marked). Roles a signal may need: ``evidence`` (context the answer
depends on: PGPO, Video-KTR "visual"), ``steps`` (ordered steps: Video-KTR "temporal"), ``query``.
"""

from __future__ import annotations

import json
import random

ROLES = ("evidence", "query", "steps")

Spans = dict[str, list[tuple[int, int]]]


def check_spans(prompt: str, spans: Spans) -> list[str]:
    """Every problem of ``spans`` on ``prompt``: unknown roles, empty ranges, ranges outside the prompt, ranges of
    one role that overlap (``steps`` must also be in order). Empty list when they are valid."""
    problems = []
    for role, ranges in spans.items():
        if role not in ROLES:
            problems.append(f"unknown span role {role!r}; roles: {list(ROLES)}")
            continue
        previous = None
        for span in ranges:
            if (not isinstance(span, (tuple, list)) or len(span) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
                problems.append(f"{role} span {span!r}: expected [start, end) as two ints")
                continue
            start, end = span
            if start >= end:
                problems.append(f"{role} span [{start}, {end}) is empty: a span needs end > start")
            elif start < 0 or end > len(prompt):
                problems.append(f"{role} span [{start}, {end}) lies outside the prompt, whose {len(prompt)} characters "
                                f"are [0, {len(prompt)})")
            elif previous is not None and start < previous[1]:
                problems.append(f"{role} span [{start}, {end}) overlaps or precedes [{previous[0]}, {previous[1]}): "
                                f"give the {role} spans in order, without overlap")
            else:
                previous = (start, end)
    return problems


def encode_spans(spans: Spans) -> str:
    """Spans as one JSON string: the dataset column they travel in (``tf_spans``) through TRL's batches."""
    return json.dumps({role: [list(s) for s in ranges] for role, ranges in sorted(spans.items())})


def decode_spans(text: str | None) -> Spans:
    if not text:
        return {}
    return {role: [tuple(s) for s in ranges] for role, ranges in json.loads(text).items()}


def user_content(prompt) -> str:
    """The text the spans index: a plain prompt, or the last user message of a conversational one."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        raise ValueError("span marks need a prompt whose last user message is plain text")
    return users[-1]["content"]


def render_prompt(tokenizer, prompt, **template_kwargs) -> tuple[str, int]:
    """(the prompt text the model reads, the offset of the user content in it): the chat template's rendering
    (with the generation prompt, as TRL renders it) for conversational prompts, the text itself otherwise."""
    content = user_content(prompt)
    if isinstance(prompt, str):
        return prompt, 0
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **template_kwargs)
    offset = text.rfind(content)
    if offset < 0:
        raise ValueError("the chat template changed the user message's text; span marks cannot be placed on it")
    return text, offset


def token_marks(tokenizer, prompt, spans: Spans, **template_kwargs) -> tuple[list[int], dict[str, list[bool]]]:
    """(prompt token ids, {role: one bool per token}) for ``prompt`` rendered as the trainer renders it.

    Needs a fast tokenizer (character offsets). The ids are returned so the caller can check they are the ones
    the trainer generated from (they are, when both tokenize the same rendered text)."""
    text, offset = render_prompt(tokenizer, prompt, **template_kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"span marks need a fast tokenizer (character offsets); {type(tokenizer).__name__} is not")
    encoded = tokenizer(text, add_special_tokens=isinstance(prompt, str), return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    marks = {}
    for role, ranges in spans.items():
        shifted = [(offset + a, offset + b) for a, b in ranges]
        marks[role] = [b > a and any(a < end and start < b for start, end in shifted) for a, b in offsets]
    return ids, marks


def shuffled_steps(prompt: str, steps: list[tuple[int, int]], rng: random.Random) -> str:
    """``prompt`` with the texts of its ``steps`` ranges permuted among the ranges' places (the text between them
    is kept). The permutation is never the identity; with fewer than 2 steps there is nothing to shuffle."""
    if len(steps) < 2:
        raise ValueError(f"shuffling steps needs at least 2 step spans, got {len(steps)}")
    order = list(range(len(steps)))
    while order == sorted(order):
        rng.shuffle(order)
    texts = [prompt[a:b] for a, b in steps]
    pieces, cursor = [], 0
    for (a, b), source in zip(steps, order):
        pieces.extend([prompt[cursor:a], texts[source]])
        cursor = b
    pieces.append(prompt[cursor:])
    return "".join(pieces)
