"""The ``Task`` type and the task registry: everything a recipe needs to know about a task, in one place.

A task is a class in its own file, registered with ``@register_task``; its options are a dataclass
(``Options``) validated with the rest of a config before any model loads. Train, eval, warm-up, study,
evidence and config validation all go through ``build_task(spec)``; none of them names a task.

    spec: {name: arithmetic, tiers: [D1, D2], n_train: 256, seed: 0}   ->  build_task(spec).train_examples()

Adding a task = one file with a ``Task`` subclass + one import line in ``tasks/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from ..options import matches, parse_section, section_schema, suggest
from .rewards import AnswerReward, DigitReward, RewardConfig
from .spans import check_spans


@dataclass(frozen=True)
class Example:
    """One problem. ``solution``: a gold worked solution ending in the answer line (for the SFT warm-up), when
    the task has one. ``spans``: role -> character ranges [start, end) in ``prompt`` (evidence, query, steps)."""

    prompt: str
    answer: str
    tier: str
    solution: str | None = None
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = check_spans(self.prompt, self.spans)
        if problems:
            raise ValueError(f"example {self.prompt[:60]!r}: " + "; ".join(problems))


@dataclass(frozen=True)
class TaskOptions:
    """Options every task takes: how many training prompts, and the seed of generated ones."""

    n_train: int = 256
    seed: int = 0

    def problems(self) -> list[str]:
        return [f"n_train must be >= 1, got {self.n_train}"] if self.n_train < 1 else []


class Task(ABC):
    """Base class. Subclasses set ``name``, ``Options`` (a dataclass, usually extending ``TaskOptions``) and
    ``splits``, and implement ``examples``; the rest has defaults they may override."""

    name: ClassVar[str]
    Options: ClassVar[type] = TaskOptions
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    has_tiers: ClassVar[bool] = False  # examples() takes ``tiers``
    roles: ClassVar[tuple[str, ...]] = ()  # prompt roles its examples mark (``Example.spans``; tasks.spans.ROLES)
    tool: ClassVar[str | None] = None  # a tool the model calls while generating ("calc": integrations.calc_tool)

    def __init__(self, options):
        self.options = options

    @abstractmethod
    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """``n`` problems of ``split``; the same (split, n, seed) gives the same problems."""

    def check(self) -> list[str]:
        """Problems a config can have beyond option types (a missing data file, an unknown tier)."""
        return []

    def check_roles(self, needed: dict[str, list[str]]) -> list[str]:
        """Problems of running signals that need prompt roles marked (``{role: signal labels}``) on this task."""
        return [f"signals {labels} need the prompt's {role!r} tokens marked, but task {self.name!r} marks "
                f"{list(self.roles) or 'no roles'}; use a task that marks {role!r} (facts marks evidence and query, "
                "steps marks steps), or other signals" for role, labels in needed.items() if role not in self.roles]

    def train_examples(self, n: int | None = None) -> list[Example]:
        """The RL training prompts (``n_train`` of the train split)."""
        return self.examples("train", n or self.options.n_train, self.options.seed)

    def eval_examples(self, split: str, n: int, seed: int = 0, tiers=None) -> list[Example]:
        """Held-out problems of ``split`` (checked against ``splits``); ``tiers``: a tier list or a mapping
        {tier: count}, for tasks with tiers."""
        if split not in self.splits:
            raise ValueError(f"task {self.name!r}: split {split!r} is not one of {self.splits}")
        if tiers is None:
            return self.examples(split, n, seed)
        if not self.has_tiers:
            raise ValueError(f"task {self.name!r} has no tiers; remove 'tiers' from its evaluation")
        return self.examples(split, n, seed, tiers=tiers)

    def gold_examples(self, n: int, seed: int | None = None, **options) -> list[Example]:
        """Train-split problems with ``solution`` set, for the SFT warm-up (disjoint from the RL prompts)."""
        raise ValueError(f"task {self.name!r} has no gold solutions for a warm-up")

    def sample_prompts(self, n: int, seed: int = 0) -> list[str]:
        """Held-out prompts whose responses the report shows as token heatmaps."""
        return [e.prompt for e in self.examples("test", n, seed)]

    def reward(self, config: RewardConfig):
        """The reward function of TRL's signature ``reward(completions, answer, **columns) -> list[float]``."""
        if config.kind == "digits":
            return DigitReward()
        if config.kind == "trace":
            raise ValueError(f"reward kind 'trace' scores tool calls, which only the calculator task makes; task "
                             f"{self.name!r} takes kind 'answer' or 'digits'")
        return AnswerReward(timeout_s=config.timeout_s, format_bonus=config.format_bonus,
                            answer_line_only=config.answer_line_only, memory_limit_mb=config.memory_limit_mb)

    def spec(self) -> dict:
        """The task as config data: ``build_task(task.spec())`` rebuilds it."""
        return {"name": self.name, **asdict(self.options)}

    def relative_to(self, base: Path) -> "Task":
        """The task with its file options resolved relative to ``base`` (a config file's folder)."""
        return self


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice")
    TASKS[cls.name] = cls
    return cls


def parse_task(spec: dict, problems: list[str], section: str = "task", base: Path | None = None) -> Task | None:
    """Validate a task spec ``{name, <options>}`` (file options relative to ``base``, a config file's folder);
    None with ``problems`` appended when it is invalid."""
    if not isinstance(spec, dict):
        problems.append(f"{section}: expected a mapping with a 'name', got {spec!r}")
        return None
    options = dict(spec)
    name = options.pop("name", None)
    if not isinstance(name, str) or name not in TASKS:
        problems.append(f"{section}.name: {name!r} is not a registered task{suggest(str(name), TASKS)}; "
                        f"tasks: {sorted(TASKS)}")
        return None
    cls = TASKS[name]
    before = len(problems)
    parsed = parse_section(cls.Options, options, section, problems)
    # The task's own checks (a missing file, an unknown tier) run on the options that fit, so all are listed.
    schema = section_schema(cls.Options)
    task = cls(parsed or cls.Options(**{k: v for k, v in options.items() if k in schema and matches(v, schema[k])}))
    if base is not None:
        task = task.relative_to(base)
    problems.extend(f"{section}.{p}" for p in task.check())
    return task if len(problems) == before else None


def build_task(spec: dict) -> Task:
    """The task of ``spec``, or ValueError listing every problem."""
    problems: list[str] = []
    task = parse_task(spec, problems)
    if task is None:
        raise ValueError("invalid task: " + "; ".join(problems))
    return task
