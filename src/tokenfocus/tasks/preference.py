"""Preference pairs from a JSONL file, for ``tokenfocus dpo``: every bad row named by its line before training.

One JSON object per line, plain text or chat format (TRL's preference formats):

    {"prompt": "Compute 47+38.", "chosen": "Answer: 85", "rejected": "Answer: 86"}
    {"prompt": [{"role": "user", "content": "Compute 47+38."}],
     "chosen": [{"role": "assistant", "content": "Answer: 85"}],
     "rejected": [{"role": "assistant", "content": "Answer: 86"}]}
    optional: "chosen_weights": [...], "rejected_weights": [...]   one weight per completion token (weights: column)

Checked when the config is validated (no model, no tokenizer): not JSON, not an object, a missing field, a wrong
type, an empty text, chosen identical to rejected, the two formats mixed in one row, negative or non-numeric
weights. Checked once the tokenizer is loaded, before the trainer is built: a row longer than ``max_length`` tokens
(TRL would cut its completion silently). Nothing is dropped: any problem stops the run, all of them listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..io import jsonl_objects

FIELDS = ("prompt", "chosen", "rejected")
WEIGHT_FIELDS = ("chosen_weights", "rejected_weights")
SHOWN = 12  # problems listed before "... and N more"


@dataclass(frozen=True)
class PairRow:
    line: int
    data: dict  # prompt, chosen, rejected (+ the weight lists when present)


def _text(value) -> str | None:
    """The text of a field: a string, or the concatenated contents of a chat message list; None if malformed."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                and isinstance(m.get("role"), str) for m in value):
        return "".join(m["content"] for m in value)
    return None


def row_problems(data: dict) -> list[str]:
    """What is wrong with one pair (each with the fix)."""
    problems = []
    missing = [f for f in FIELDS if f not in data]
    if missing:
        return [f"missing {missing}; each row needs 'prompt', 'chosen' and 'rejected'"]
    kinds = set()
    for field in FIELDS:
        text = _text(data[field])
        if text is None:
            problems.append(f"{field}: expected a string or a list of {{role, content}} messages, got "
                            f"{type(data[field]).__name__}")
            continue
        kinds.add(isinstance(data[field], str))
        if not text.strip():
            problems.append(f"{field} is empty; give it text")
    if len(kinds) > 1:
        problems.append("prompt, chosen and rejected mix plain text and chat messages; use one format per row")
    if not problems and _text(data["chosen"]).strip() == _text(data["rejected"]).strip():
        problems.append("chosen and rejected are identical: the pair prefers nothing; drop it or fix the rejected "
                        "completion")
    for field in WEIGHT_FIELDS:
        if field in data:
            weights = data[field]
            if not isinstance(weights, list) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                        for w in weights):
                problems.append(f"{field}: expected a list of numbers, got {str(weights)[:40]}")
            elif any(w < 0 or not math.isfinite(w) for w in weights):
                problems.append(f"{field}: token weights must be finite and >= 0")
    return problems


def read_rows(path: Path, fields: tuple[str, ...], check, keep: tuple[str, ...] = ()) -> tuple[list[PairRow],
                                                                                                 list[str]]:
    """(rows, problems) of a JSONL file whose objects hold ``fields`` (+ optional ``keep``), each row checked by
    ``check(data) -> problems``; every problem names ``file:line``."""
    path = Path(path)
    wanted = ", ".join(fields)
    objects, problems, missing = jsonl_objects(path, wanted)
    if missing is not None:
        return [], [f"{missing}; pass a .jsonl file of {{{wanted}}} rows" if "not found" in missing else missing]
    rows = []
    for number, data in objects:
        where = f"{path.name}:{number}"
        found = check(data)
        problems += [f"{where}: {p}" for p in found]
        if not found:
            rows.append(PairRow(number, {k: data[k] for k in (*fields, *keep) if k in data}))
    if not rows and not problems:
        problems.append(f"{path} holds no rows; one JSON object {{{wanted}}} per line")
    formats = {isinstance(r.data[fields[0]], str) for r in rows}
    if len(formats) > 1:
        chat = [r.line for r in rows if not isinstance(r.data[fields[0]], str)][:5]
        problems.append(f"{path.name}: rows mix plain text and chat messages (chat at lines {chat}...); use one "
                        "format for the whole file")
    return rows, problems


def read_pairs(path: Path) -> tuple[list[PairRow], list[str]]:
    """(rows, problems) of a preference JSONL file; every problem names ``file:line``."""
    return read_rows(path, FIELDS, row_problems, keep=WEIGHT_FIELDS)


def completion_problems(data: dict) -> list[str]:
    """What is wrong with one SFT row {prompt, completion}."""
    missing = [f for f in ("prompt", "completion") if f not in data]
    if missing:
        return [f"missing {missing}; each row needs 'prompt' and 'completion'"]
    problems = []
    for field in ("prompt", "completion"):
        text = _text(data[field])
        if text is None:
            problems.append(f"{field}: expected a string or a list of {{role, content}} messages")
        elif not text.strip():
            problems.append(f"{field} is empty; give it text")
    if not problems and isinstance(data["prompt"], str) != isinstance(data["completion"], str):
        problems.append("prompt and completion mix plain text and chat messages; use one format per row")
    return problems


def read_completions(path: Path) -> tuple[list[PairRow], list[str]]:
    """(rows, problems) of an SFT JSONL file of {prompt, completion} rows."""
    return read_rows(path, ("prompt", "completion"), completion_problems)


def length_problems(rows: list[PairRow], tokenizer, max_length: int | None, where: str = "pairs") -> list[str]:
    """Rows whose prompt + chosen or prompt + rejected is longer than ``max_length`` tokens (as the chat template
    renders them for chat rows)."""
    if max_length is None:
        return []
    problems = []
    for row in rows:
        for side in ("chosen", "rejected"):
            prompt, completion = row.data["prompt"], row.data[side]
            if isinstance(prompt, str):
                n = len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
            else:
                rendered = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)
                n = len(rendered["input_ids"])
            if n > max_length:
                problems.append(f"{where}:{row.line}: prompt + {side} is {n} tokens, over max_length {max_length}; "
                                "raise trl.max_length or shorten the row")
                break
    return problems


def summarize(problems: list[str]) -> str:
    shown = problems[:SHOWN]
    more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return "\n  - " + "\n  - ".join(shown) + more
