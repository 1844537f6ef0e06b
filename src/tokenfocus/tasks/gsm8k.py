"""GSM8K (openai/grade-school-math, MIT) from a local JSONL path or the hub id ``openai/gsm8k``.

Rows become ``{"prompt": question + instruction, "answer": final number}``; the gold answer is the text
after "####" with thousands separators removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .base import Example, Task, TaskOptions, register_task

HUB_ID = "openai/gsm8k"

INSTRUCTION = ' Give the final answer in the form "Answer: N".'


class DatasetError(ValueError):
    pass


def gold_answer(solution: str) -> str:
    if "####" not in solution:
        raise DatasetError("the answer field has no '#### <number>' line")
    return solution.split("####")[-1].strip().replace(",", "")


def load_gsm8k(source: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """Rows from ``source``: a .jsonl file, a directory holding ``{split}.jsonl``, or ``openai/gsm8k``."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DatasetError(f"GSM8K file not found: {path}. Pass a path to {split}.jsonl or 'openai/gsm8k'.")
        numbered = _read_jsonl(path)
    elif source == HUB_ID:
        try:
            from datasets import load_dataset

            numbered = list(enumerate(load_dataset(HUB_ID, "main", split=split), start=1))
        except Exception as error:  # noqa: BLE001 - network / cache failures are the user's to fix
            raise DatasetError(f"Could not load {HUB_ID} from the hub ({error}); pass a local JSONL path") from error
    else:
        raise DatasetError(f"GSM8K source {source!r} is neither a .jsonl path, a directory, nor 'openai/gsm8k'")
    out = []
    for number, row in numbered:
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise DatasetError(f"{source}: line {number} needs string fields 'question' and 'answer'")
        try:
            answer = gold_answer(row["answer"])
        except DatasetError as error:
            raise DatasetError(f"{source}: line {number}: {error}") from None
        worked = row["answer"].split("####")[0].strip()
        out.append({"prompt": row["question"] + INSTRUCTION, "answer": answer, "tier": "gsm8k",
                    "solution": f"{worked}\nAnswer: {answer}"})
        if limit is not None and len(out) >= limit:
            break
    return out


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return rows


@dataclass(frozen=True)
class GSM8KOptions(TaskOptions):
    """path: a GSM8K .jsonl file, a folder holding {train,test}.jsonl, or the hub id ``openai/gsm8k``."""

    path: str = HUB_ID


@register_task
class GSM8K(Task):
    """GSM8K grade-school math (testbed T5).

    RL prompts come from the front of the train split, warm-up gold solutions from its back; every held-out
    split reads the test split."""

    name = "gsm8k"
    Options = GSM8KOptions
    splits = ("train", "test", "hard-test")

    def check(self) -> list[str]:
        source = self.options.path
        if source != HUB_ID and not Path(source).expanduser().exists():
            return [f"path: dataset file {source} not found; pass a GSM8K .jsonl path or {HUB_ID!r}"]
        return []

    def relative_to(self, base: Path) -> "GSM8K":
        path = self.options.path
        if path == HUB_ID or Path(path).expanduser().is_absolute():
            return self
        return GSM8K(replace(self.options, path=str(Path(base) / path)))

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        rows = load_gsm8k(self.options.path, "train" if split == "train" else "test", limit=n)
        return [_example(r) for r in rows]

    def gold_examples(self, n: int, seed: int | None = None, tiers=None) -> list[Example]:
        rows = load_gsm8k(self.options.path, "train", limit=None)
        return [_example(r) for r in rows[-n:]]  # RL reads from the front


def _example(row: dict) -> Example:
    return Example(row["prompt"], row["answer"], row["tier"], row["solution"])
