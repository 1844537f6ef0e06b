"""Your own prompts from a JSONL file, with gold answers and, optionally, span marks for the counterfactual signals.

One JSON object per line:

    {"prompt": "Let a=4, b=5. Compute a*b.", "answer": "20",
     "spans": {"evidence": [[4, 13]], "query": [[15, 28]]},       optional: character ranges [start, end) per role
     "tier": "easy", "solution": "4*5 = 20\\nAnswer: 20",          optional (solution: for an SFT warm-up)
     "split": "train"}                                             optional: "train" or "test"

Rows without a ``split`` go to "test" when a hash of the prompt falls in the test bucket (20 %), else "train".
The task marks a role only when every row marks it. The whole file is checked when the config is validated,
before any model loads: every bad row is named by its line, with what is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from ..io import jsonl_objects
from .base import Example, Task, TaskOptions, register_task
from .generated import in_test_bucket
from .spans import ROLES, check_spans

SPLITS = ("train", "test")
SHOWN = 10  # problems listed before "... and N more"


@dataclass(frozen=True)
class JsonlOptions(TaskOptions):
    """path: the JSONL file (relative paths are resolved against the config file's folder)."""

    path: str = ""


@dataclass(frozen=True)
class Row:
    line: int
    example: Example
    split: str


def _read(path: Path) -> tuple[list[Row], list[str]]:
    """(valid rows, problems) of the file: each problem names its line."""
    objects, problems, missing = jsonl_objects(path, "'prompt' and 'answer'")
    if missing is not None:
        fix = "; pass a .jsonl file of {prompt, answer[, spans]} rows" if "not found" in missing else ""
        return [], [f"path: {'dataset file ' if fix else ''}{missing}{fix}"]
    rows = []
    for number, data in objects:
        where = f"{path.name}:{number}"
        found = _row_problems(data)
        if found:
            problems += [f"{where}: {p}" for p in found]
            continue
        spans = {role: [tuple(s) for s in ranges] for role, ranges in (data.get("spans") or {}).items()}
        example = Example(data["prompt"], str(data["answer"]), str(data.get("tier", "jsonl")), data.get("solution"),
                          spans)
        split = data.get("split") or ("test" if in_test_bucket(data["prompt"]) else "train")
        rows.append(Row(number, example, split))
    if not rows and not problems:
        problems.append(f"path: {path} holds no rows; one JSON object {{prompt, answer}} per line")
    return rows, problems


def _row_problems(data: dict) -> list[str]:
    problems = []
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        problems.append("needs a non-empty string 'prompt'")
    if not isinstance(data.get("answer"), (str, int)) or isinstance(data.get("answer"), bool) or str(
            data.get("answer", "")).strip() == "":
        problems.append("needs an 'answer' (a string or an integer)")
    if data.get("split") is not None and data["split"] not in SPLITS:
        problems.append(f"split {data['split']!r} is not one of {list(SPLITS)}")
    if data.get("solution") is not None and not isinstance(data["solution"], str):
        problems.append("'solution' must be a string")
    spans = data.get("spans")
    if spans is not None:
        if not isinstance(spans, dict) or not all(isinstance(v, list) for v in spans.values()):
            problems.append("'spans' must map a role to a list of [start, end) ranges, e.g. "
                            '{"evidence": [[4, 13]]}')
        elif isinstance(data.get("prompt"), str):
            fix = " (character offsets into 'prompt', end exclusive; fix or remove the span)"
            problems += [p + fix for p in check_spans(data["prompt"], spans)]
    return problems


@register_task
class Jsonl(Task):
    """Prompts, gold answers and optional span marks from a JSONL file (see the module docstring)."""

    name = "jsonl"
    Options = JsonlOptions
    splits = SPLITS

    @cached_property
    def _file(self) -> tuple[list[Row], list[str]]:
        if not self.options.path:
            return [], ["path: required, a .jsonl file of {prompt, answer[, spans]} rows"]
        return _read(Path(self.options.path).expanduser())

    @property
    def roles(self) -> tuple[str, ...]:  # type: ignore[override]  (per file, not per class)
        rows = self._file[0]
        return tuple(role for role in ROLES if rows and all(role in r.example.spans for r in rows))

    def check(self) -> list[str]:
        problems = self._file[1]
        if len(problems) > SHOWN:
            problems = problems[:SHOWN] + [f"... and {len(problems) - SHOWN} more problem(s) in {self.options.path}"]
        return problems

    def check_roles(self, needed: dict[str, list[str]]) -> list[str]:
        problems = []
        rows = self._file[0]
        for role, labels in needed.items():
            missing = [r.line for r in rows if role not in r.example.spans]
            if missing:
                lines = ", ".join(map(str, missing[:SHOWN])) + (f" and {len(missing) - SHOWN} more"
                                                                 if len(missing) > SHOWN else "")
                problems.append(f"signals {labels} need the prompt's {role!r} tokens marked, but rows at lines "
                                f"{lines} of {self.options.path} have no {role!r} spans; add them "
                                f"(\"spans\": {{\"{role}\": [[start, end]]}}) or drop those rows")
        return problems

    def relative_to(self, base: Path) -> "Jsonl":
        path = self.options.path
        if not path or Path(path).expanduser().is_absolute():
            return self
        return Jsonl(replace(self.options, path=str(Path(base) / path)))

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """The first ``n`` rows of ``split`` in file order (the same every time)."""
        if split not in self.splits:
            raise ValueError(f"task 'jsonl': split {split!r} is not one of {self.splits}")
        found = [r.example for r in self._file[0] if r.split == split]
        if not found:
            raise ValueError(f"{self.options.path} has no {split!r} rows (mark some with \"split\": \"{split}\", or "
                             "add rows: about 1 in 5 unmarked rows land in test)")
        return found[:n]

    def gold_examples(self, n: int, seed: int | None = None, tiers=None) -> list[Example]:
        """Train rows with a ``solution``, from the back of the file (RL prompts come from the front)."""
        gold = [r.example for r in self._file[0] if r.split == "train" and r.example.solution]
        if not gold:
            raise ValueError(f"{self.options.path} has no train rows with a 'solution' for a warm-up")
        return gold[-n:]
