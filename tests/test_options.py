"""Option checking (options.py): choices from a Literal or a tuple, whole sections checked at once, type matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from tokenfocus.options import check_choice, choices, matches, parse_section

Colour = Literal["red", "green"]


def test_check_choice_with_a_literal_and_a_tuple():
    check_choice("colour", "red", Colour)
    check_choice("size", 3, (1, 2, 3))
    with pytest.raises(ValueError, match=r"^colour='blue' is not one of \('red', 'green'\)$"):
        check_choice("colour", "blue", Colour)
    with pytest.raises(ValueError, match=r"^paint: size=4 is not one of \(1, 2, 3\)$"):
        check_choice("size", 4, (1, 2, 3), owner="paint")
    assert choices(Colour) == ("red", "green") and choices(["a", "b"]) == ("a", "b")
    with pytest.raises(TypeError, match="neither a Literal type nor a collection"):
        choices(int)


@dataclass(frozen=True)
class Brush:
    width: float = 1.0
    count: int = 1
    colour: Colour = "red"
    label: str | None = None

    def problems(self) -> list[str]:
        return [f"width must be > 0, got {self.width}"] if self.width <= 0 else []


def test_parse_section_lists_unknown_keys_wrong_types_and_range_problems_at_once():
    problems: list[str] = []
    data = {"widht": 2.0, "count": "three", "colour": "blue", "width": -1, "label": None}
    assert parse_section(Brush, data, "brush", problems) is None
    assert problems == [
        "brush: unknown key 'widht' (did you mean 'width'?); valid: ['colour', 'count', 'label', 'width']",
        "brush.count: expected int, got str ('three')",
        "brush.colour: expected one of ('red', 'green'), got str ('blue')",
        "brush.width must be > 0, got -1",
    ]


def test_parse_section_builds_the_dataclass_when_everything_fits():
    problems: list[str] = []
    assert parse_section(Brush, {"width": 2, "colour": "green", "label": "b"}, "brush", problems) == Brush(
        2, 1, "green", "b")
    assert parse_section(Brush, None, "brush", problems) == Brush()
    assert problems == []
    assert parse_section(Brush, ["width"], "brush", problems) is None
    assert problems == ["brush: expected a mapping, got list (['width'])"]


@pytest.mark.parametrize("value, kind, expected", [
    (1, float, True), (1.5, float, True), (True, float, False), ("1", float, False),
    (1, int, True), (True, int, False), (1.0, int, False),
    (None, int | None, True), (3, int | None, True), ("x", int | None, False),
    ("red", Colour, True), ("blue", Colour, False),
    ([1, 2], list, True), ((1, 2), list, True), ("ab", list, False),
    (True, bool, True), ("x", str, True),
])
def test_matches_accepts_int_for_float_and_rejects_bool_for_int(value, kind, expected):
    assert matches(value, kind) is expected


def test_numeric_strings_are_coerced_to_the_declared_number():
    """PyYAML reads 1e-5 (no dot) as a string; a float field takes it as 1e-05, an int field "1e3" as 1000."""
    from tokenfocus.options import coerce

    assert coerce("1e-5", float) == 1e-5 and coerce("3", float) == 3.0 and coerce("1e3", int) == 1000
    assert coerce("2.5", int) == "2.5" and coerce("fast", float) == "fast" and coerce("nan", float) == "nan"
    assert coerce("1e-5", str) == "1e-5" and coerce("7", int | None) == 7 and coerce(" -2 ", float) == -2.0
    assert coerce("1", bool) == "1"
    problems = []
    assert parse_section(Brush, {"width": "2e0", "count": "4"}, "brush", problems) == Brush(2.0, 4) and not problems
    parse_section(Brush, {"width": float("nan")}, "brush", problems)
    assert problems == ["brush.width: expected a number, got nan"]
