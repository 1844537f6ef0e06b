"""Span marks: validation, token marks through the chat template, step shuffling."""

import random

import pytest

from tokenfocus.models import build_char_tokenizer
from tokenfocus.tasks import Example, build_task
from tokenfocus.tasks.spans import (check_spans, decode_spans, encode_spans, render_prompt, shuffled_steps,
                                    token_marks)

PROMPT = "Let a=47, b=38. Compute a+b."


def test_valid_spans_pass_and_each_bad_span_is_named():
    assert check_spans(PROMPT, {"evidence": [(4, 8), (10, 14)], "query": [(16, 27)]}) == []
    assert check_spans(PROMPT, {"evidence": [(4, 4)]}) == ["evidence span [4, 4) is empty: a span needs end > start"]
    assert check_spans(PROMPT, {"evidence": [(20, 40)]}) == [
        "evidence span [20, 40) lies outside the prompt, whose 28 characters are [0, 28)"]
    assert check_spans(PROMPT, {"evidence": [(-1, 3)]})[0].startswith("evidence span [-1, 3) lies outside")
    assert "overlaps or precedes [4, 8)" in check_spans(PROMPT, {"evidence": [(4, 8), (6, 10)]})[0]
    assert "overlaps or precedes" in check_spans(PROMPT, {"steps": [(10, 14), (4, 8)]})[0]  # steps keep their order
    assert check_spans(PROMPT, {"visual": [(0, 3)]}) == ["unknown span role 'visual'; roles: ['evidence', 'query', 'steps']"]
    assert "two ints" in check_spans(PROMPT, {"query": [(0.5, 3)]})[0]
    # Spans of different roles may overlap (the query may contain evidence).
    assert check_spans(PROMPT, {"evidence": [(4, 8)], "query": [(0, 27)]}) == []


def test_an_example_with_bad_spans_is_refused_naming_it():
    with pytest.raises(ValueError, match="example 'Let a=47.*evidence span \\[4, 4\\) is empty"):
        Example(PROMPT, "85", "F2", spans={"evidence": [(4, 4)]})


def test_spans_survive_their_dataset_column():
    spans = {"steps": [(3, 5), (8, 12)], "evidence": [(0, 2)]}
    assert decode_spans(encode_spans(spans)) == spans
    assert decode_spans(None) == {} and decode_spans("") == {}


def test_token_marks_cover_exactly_the_spans_through_the_chat_template():
    tokenizer = build_char_tokenizer()
    prompt = [{"role": "user", "content": PROMPT}]
    spans = {"evidence": [(4, 8), (10, 14)], "query": [(16, 27)]}
    ids, marks = token_marks(tokenizer, prompt, spans)
    assert ids == tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert "".join(p for p, m in zip(pieces, marks["evidence"]) if m) == "a=47b=38"
    assert "".join(p for p, m in zip(pieces, marks["query"]) if m) == "Compute a+b"
    text, offset = render_prompt(tokenizer, prompt)
    assert text[offset:offset + len(PROMPT)] == PROMPT and offset > 0  # after the template's header
    # A plain-text prompt is tokenized as is (with the tokenizer's special tokens, as TRL does).
    plain_ids, plain = token_marks(tokenizer, PROMPT, {"evidence": [(4, 8)]})
    assert plain_ids == tokenizer(PROMPT)["input_ids"]
    assert "".join(p for p, m in zip(tokenizer.convert_ids_to_tokens(plain_ids), plain["evidence"]) if m) == "a=47"


def test_token_marks_refuse_prompts_they_cannot_place():
    tokenizer = build_char_tokenizer()
    with pytest.raises(ValueError, match="last user message is plain text"):
        token_marks(tokenizer, [{"role": "system", "content": "x"}], {"evidence": [(0, 1)]})


def test_shuffled_steps_permute_the_steps_and_keep_the_rest():
    prompt = "Start at 5, then add 3, then multiply by 2, then subtract 4. Go."
    steps = [(17, 22), (29, 42), (49, 59)]
    assert [prompt[a:b] for a, b in steps] == ["add 3", "multiply by 2", "subtract 4"]
    seen = set()
    for seed in range(40):
        shuffled = shuffled_steps(prompt, steps, random.Random(seed))
        assert shuffled != prompt and sorted(shuffled.split(", then ")[1:]) != []
        assert shuffled.startswith("Start at 5, then ") and shuffled.endswith(". Go.")
        assert sorted(s.rstrip(". Go") for s in shuffled[17:].split(", then ")) == sorted(
            ["add 3", "multiply by 2", "subtract 4"])
        seen.add(shuffled)
    assert len(seen) == 5  # every non-identity permutation of 3 steps occurs
    with pytest.raises(ValueError, match="at least 2 step spans"):
        shuffled_steps(prompt, steps[:1], random.Random(0))


def test_a_task_names_the_roles_it_cannot_mark():
    arithmetic = build_task({"name": "arithmetic"})
    problems = arithmetic.check_roles({"evidence": ["context_dependency"]})
    assert len(problems) == 1 and "signals ['context_dependency'] need the prompt's 'evidence' tokens marked" in problems[0]
    assert "task 'arithmetic' marks no roles" in problems[0] and "facts marks evidence" in problems[0]
    assert build_task({"name": "facts"}).check_roles({"evidence": ["x"], "query": ["y"]}) == []
    assert "marks ['evidence', 'query']" in build_task({"name": "facts"}).check_roles({"steps": ["x"]})[0]
