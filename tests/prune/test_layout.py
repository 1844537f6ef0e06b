"""TokenLayout: roles from segments and from a task's span marks (through the tokenizer's offsets), the
pruneable segment without the sink and protected positions, and the layout after a drop."""

from __future__ import annotations

import pytest

from tokenfocus.models import build_char_tokenizer
from tokenfocus.prune import TokenLayout
from tokenfocus.tasks.facts import facts_prompt
from tokenfocus.tasks.spans import token_marks


def test_segments_give_roles_and_the_pruneable_positions():
    layout = TokenLayout.from_segments([("system", 3), ("context", 4), ("query", 2)], protect_last=True)
    assert layout.positions("context") == [3, 4, 5, 6] and layout.positions("query") == [7, 8]
    assert layout.pruneable == [3, 4, 5, 6] and layout.protected == {8} and len(layout) == 9
    after = layout.kept([0, 3, 5, 7, 8])
    assert after.roles == ("system", "context", "context", "query", "query") and after.protected == {4}
    with pytest.raises(ValueError, match="the sink position 0 cannot be dropped"):
        layout.kept([3, 4])
    sinky = TokenLayout(("context",) * 4, sink=0)
    assert sinky.pruneable == [1, 2, 3]  # the sink is never pruneable, whatever its role


def test_span_marks_of_a_facts_prompt_become_context_and_query():
    tokenizer = build_char_tokenizer()
    prompt, ranges, query = facts_prompt(["x1=47", "x2=38", "x3=12"], "x1+x3")
    block = (ranges[0][0], ranges[-1][1])
    ids, marks = token_marks(tokenizer, prompt, {"context": [block], "query": [query], "evidence": [ranges[0]]})
    layout = TokenLayout.from_marks(ids, marks, protect_last=True)
    text = lambda role: "".join(tokenizer.convert_ids_to_tokens([ids[p] for p in layout.positions(role)]))
    assert text("context") == "x1=47, x2=38, x3=12" and text("query") == "Compute x1+x3"
    assert layout.roles[0] == "system" and layout.roles[-1] == "other" and layout.protected == {len(ids) - 1}
    assert "evidence" not in set(layout.roles)  # gold evidence is an annotation, not a role


def test_a_layout_without_a_context_segment_says_how_to_get_one():
    layout = TokenLayout.from_segments([("system", 2), ("query", 3)])
    with pytest.raises(ValueError, match="needs a pruneable segment .role 'context'.*mark the context span"):
        layout.require_pruneable()
    with pytest.raises(ValueError, match="unknown layout role"):
        TokenLayout(("system", "image"))
    with pytest.raises(ValueError, match="marks 'context' cover 2 positions, the prompt has 3"):
        TokenLayout.from_marks([1, 2, 3], {"context": [True, False]})
