"""Pruning testbeds on text (PRUNING_TOKENIZERS_MECHANISMS.md §0.3): a prompt with a pruneable context segment,
a query, and a gold answer scored after a forced prefix.

    facts      a facts block of x_k = n lines (the context), "Compute x_a+x_b." or "Compute x_a." (the query); gold
               evidence = the needed facts, so what a method keeps is also scored as evidence recall
    gsm8k      a GSM8K problem from a local JSONL: the statement sentences are the context, the final question the
               query; the 135M model cannot solve these, and the fidelity metrics do not need it to

``encode`` renders an example with the chat template, appends the assistant's ``prefix + answer`` and returns the
ids, the ``TokenLayout`` (answer tokens ``generated``), the answer's positions and ids, and the evidence positions.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import torch

from ..tasks.facts import facts_prompt
from ..tasks.spans import token_marks
from .layout import TokenLayout


@dataclass(frozen=True)
class PruneExample:
    prompt: str
    answer: str
    spans: dict  # {"context": [(a, b)], "query": [(a, b)], "evidence": [...]} character ranges of the prompt
    prefix: str = "Answer: "
    tier: str = ""


@dataclass
class Encoded:
    ids: torch.Tensor  # (1, T): prompt (chat template) + prefix + answer
    layout: TokenLayout
    answer_positions: list[int]  # where the answer's tokens sit; each is predicted at position - 1
    answer_ids: list[int]
    evidence: list[int] = field(default_factory=list)  # gold evidence positions (facts)
    embeds: torch.Tensor | None = None  # (1, T, d) inputs_embeds when the input is not only token ids (images)
    zoo_map: object = None  # ZOO-Prune's token-wise map g for the context (the projector), None: layer 0's MLP
    zoo_inputs: torch.Tensor | None = None  # (n_context, k) g's inputs for the context positions (the patches)

    def inputs(self) -> dict:
        """The runner's input: {"input_ids": ...} or {"inputs_embeds": ...}."""
        return {"inputs_embeds": self.embeds} if self.embeds is not None else {"input_ids": self.ids}

    def prefix_inputs(self, end: int) -> dict:
        """The input up to position ``end`` (exclusive)."""
        if self.embeds is not None:
            return {"inputs_embeds": self.embeds[:, :end]}
        return {"input_ids": self.ids[:, :end]}


def facts_examples(n: int, distractors: int = 20, seed: int = 0, question: str = "sum") -> list[PruneExample]:
    """Facts blocks of ``distractors`` + 2 facts ``x_k=n`` (2-digit values, names x1..x99 drawn per example, the two
    needed facts at random places); the context is the whole block, the gold evidence the two needed facts.
    ``question``: "sum" asks "Compute x_a+x_b." and scores the sum (long_facts' question); "value" asks "Compute
    x_a." and scores its value after the prefix "x_a = " -- a pure retrieval, within reach of a 135M model on short
    blocks."""
    if question not in ("sum", "value"):
        raise ValueError(f"question must be 'sum' or 'value', got {question!r}")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        count = distractors + 2
        names = [f"x{k}" for k in rng.sample(range(1, 100), count)]
        values = [rng.randint(10, 99) for _ in range(count)]
        a, b = rng.sample(range(count), 2)
        asked = f"{names[a]}+{names[b]}" if question == "sum" else names[a]
        prompt, ranges, query = facts_prompt([f"{x}={v}" for x, v in zip(names, values)], asked)
        evidence = sorted([ranges[a], ranges[b]]) if question == "sum" else [ranges[a]]
        answer = str(values[a] + values[b]) if question == "sum" else str(values[a])
        out.append(PruneExample(prompt, answer, {"context": [(ranges[0][0], ranges[-1][1])], "query": [query],
                                                 "evidence": evidence},
                                prefix="Answer: " if question == "sum" else f"{asked} = ", tier=f"facts{count}"))
    return out


def gsm8k_examples(n: int, path: str, seed: int = 0) -> list[PruneExample]:
    """GSM8K test problems whose question is a separate last sentence: statements = context, question = query."""
    from ..tasks.gsm8k import load_gsm8k

    rows = load_gsm8k(path, "test")
    random.Random(seed).shuffle(rows)
    out = []
    for row in rows:
        text = row["prompt"]
        end = text.rfind("?")
        breaks = list(re.finditer(r"[.!]\s+", text[:end]))
        if end < 0 or not breaks:
            continue  # no separate question sentence
        last = breaks[-1]  # the statements end at its punctuation, the question starts after its spaces
        out.append(PruneExample(text, row["answer"], {"context": [(0, last.start() + 1)],
                                                      "query": [(last.end(), end + 1)]}, tier="gsm8k"))
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"{path}: only {len(out)} GSM8K test problems have a separate question sentence; ask for "
                         f"at most that many")
    return out


def encode(tokenizer, example: PruneExample) -> Encoded:
    """The example as model input: chat-rendered prompt with span marks, then ``prefix + answer``."""
    spans = {k: [tuple(r) for r in v] for k, v in example.spans.items()}
    ids, marks = token_marks(tokenizer, example.prompt, spans)
    tail = tokenizer(example.prefix + example.answer, add_special_tokens=False, return_offsets_mapping=True)
    start = len(example.prefix)
    answer_local = [i for i, (a, b) in enumerate(tail["offset_mapping"]) if b > start]
    if not answer_local:
        raise ValueError(f"the answer {example.answer!r} has no token of its own after the prefix {example.prefix!r}")
    layout = TokenLayout.from_marks(ids, marks)
    roles = list(layout.roles) + ["generated"] * len(tail["input_ids"])
    evidence = [p for p, hit in enumerate(marks.get("evidence", [])) if hit]
    return Encoded(torch.tensor([ids + list(tail["input_ids"])]), TokenLayout(tuple(roles), layout.sink),
                   [len(ids) + i for i in answer_local], [tail["input_ids"][i] for i in answer_local], evidence)
