"""``TokenLayout``: what each position of a prompt is (PRUNING_TOKENIZERS_MECHANISMS.md §0.3, §0.6).

Roles per position: ``system`` (the chat template's preamble), ``context`` (the pruneable segment: a facts block,
a statement, the image tokens of a vision-language model), ``query`` (the instruction after it), ``generated``,
``other``. ``sink`` is the BOS / attention-sink position, never pruned. Pruning signals and policies take the
pruneable segment and the query segment from the layout; that is how a method written for visual tokens runs on
a text segment.

    layout = TokenLayout.from_marks(ids, {"context": [...], "query": [...]})     # tasks.spans.token_marks
    layout = TokenLayout.from_segments([("system", 5), ("context", 16), ("query", 7)])   # image tokens spliced in
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "context", "query", "generated", "other")
# task span roles -> layout roles; other marks (a task's gold ``evidence``) are annotations, not roles
SPAN_ROLES = {"context": "context", "query": "query"}


@dataclass(frozen=True)
class TokenLayout:
    roles: tuple[str, ...]
    sink: int = 0
    protected: frozenset = frozenset()  # positions no policy drops besides the sink (e.g. the prompt's last token)

    def __post_init__(self):
        unknown = sorted(set(self.roles) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown layout role(s) {unknown}; roles: {list(ROLES)}")
        if not 0 <= self.sink < len(self.roles):
            raise ValueError(f"the sink index {self.sink} is outside the {len(self.roles)} positions")
        outside = sorted(p for p in self.protected if not 0 <= p < len(self.roles))
        if outside:
            raise ValueError(f"protected positions {outside} are outside the {len(self.roles)} positions")

    def __len__(self) -> int:
        return len(self.roles)

    @classmethod
    def from_segments(cls, segments: list[tuple[str, int]], sink: int = 0, protect_last: bool = False) -> TokenLayout:
        """Consecutive (role, length) segments, e.g. a chat preamble, 16 image tokens, the question."""
        roles = tuple(role for role, length in segments for _ in range(length))
        return cls(roles, sink, frozenset({len(roles) - 1}) if protect_last and roles else frozenset())

    @classmethod
    def from_marks(cls, ids: list[int], marks: dict[str, list[bool]], sink: int = 0, protect_last: bool = False,
                   mapping: dict[str, str] | None = None) -> TokenLayout:
        """From per-token span marks (``tasks.spans.token_marks``): a position marked by a span in ``mapping``
        (default ``SPAN_ROLES``: context -> context, query -> query) takes that role; an unmarked one is ``system``
        before the first role and ``other`` after. Marks outside the mapping (gold evidence) are not roles."""
        mapping = SPAN_ROLES if mapping is None else mapping
        bad = sorted(set(mapping.values()) - set(ROLES))
        if bad:
            raise ValueError(f"mapping to unknown layout role(s) {bad}; roles: {list(ROLES)}")
        roles = ["other"] * len(ids)
        for name, marked in marks.items():
            if len(marked) != len(ids):
                raise ValueError(f"marks {name!r} cover {len(marked)} positions, the prompt has {len(ids)}")
            role = mapping.get(name)
            if role is None:
                continue
            for position, hit in enumerate(marked):
                if hit:
                    roles[position] = role
        first = next((p for p, role in enumerate(roles) if role != "other"), len(roles))
        roles[:first] = ["system"] * first
        return cls(tuple(roles), sink, frozenset({len(ids) - 1}) if protect_last and ids else frozenset())

    def positions(self, role: str) -> list[int]:
        if role not in ROLES:
            raise ValueError(f"unknown layout role {role!r}; roles: {list(ROLES)}")
        return [p for p, r in enumerate(self.roles) if r == role]

    @property
    def pruneable(self) -> list[int]:
        """The context positions a policy may drop (the sink and protected positions excluded)."""
        return [p for p in self.positions("context") if p != self.sink and p not in self.protected]

    def require_pruneable(self, what: str = "pruning") -> list[int]:
        found = self.pruneable
        if not found:
            raise ValueError(f"{what} needs a pruneable segment (role 'context'), and this layout has none; mark the "
                             "context span of the prompt (a task's evidence/context span, or image tokens)")
        return found

    def kept(self, keep: list[int]) -> TokenLayout:
        """The layout of the positions ``keep`` (sorted) after a drop; the sink must be among them."""
        keep = sorted(keep)
        if self.sink not in keep:
            raise ValueError(f"the sink position {self.sink} cannot be dropped")
        index = {p: i for i, p in enumerate(keep)}
        return TokenLayout(tuple(self.roles[p] for p in keep), index[self.sink],
                           frozenset(index[p] for p in self.protected if p in index))
