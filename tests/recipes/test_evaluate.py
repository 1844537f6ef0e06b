"""`tokenfocus eval` (recipes/evaluate.py): pass@1 and mean@k on a tiny model, and counted exactly."""

from __future__ import annotations

from types import SimpleNamespace

from helpers import tiny
from tokenfocus.recipes import evaluate as ev
from tokenfocus.recipes.evaluate import EvalConfig, evaluate
from tokenfocus.tasks import generate_problems


def test_eval_pass_at_1_and_mean_at_k_on_a_tiny_model():
    model, tok = tiny()
    result = evaluate(model, tok, EvalConfig(model="tiny", n=6, k=3, max_new_tokens=6, batch_size=4))
    assert result["n"] == 6 and result["k"] == 3
    assert 0.0 <= result["pass@1"] <= 1.0 and 0.0 <= result["mean@3"] <= 1.0
    assert set(result["pass@1_by_tier"]) == {"D1", "D2", "D3"}


def test_eval_counts_pass_at_1_and_mean_at_k_exactly(monkeypatch):
    """Greedy answers right on problems 0 and 1 of 4 -> pass@1 = 0.5; sampled k = 2 right on 3 of 8 -> 0.375."""
    problems = generate_problems(4, split="test", seed=0)
    answers = [str(p.answer) for p in problems]
    greedy = [f"Answer: {answers[0]}", f"Answer: {answers[1]}", "Answer: 99999", "nothing"]
    sampled = [f"Answer: {answers[0]}", "x", f"Answer: {answers[1]}", f"Answer: {answers[1]}", "x", "x", "x", "x"]
    calls = iter([greedy, sampled])
    monkeypatch.setattr(ev, "generate_rollout", lambda *a, **k: SimpleNamespace(
        completions=next(calls), completion_lengths=[3] * len(a[2])))
    result = ev.evaluate(None, None, EvalConfig(model="m", n=4, k=2))
    assert result["pass@1"] == 0.5 and result["mean@2"] == 0.375
    # shared_prefill: the sampled pass asks for k rows per distinct prompt (one prompt forward each), and its rows,
    # p0 x k, p1 x k, ..., are counted the same way
    seen = []

    def spy(model, tokenizer, prompts, **options):
        seen.append((len(prompts), options["samples_per_prompt"]))
        rows = next(calls)
        return SimpleNamespace(completions=rows, completion_lengths=[3] * len(rows))

    calls = iter([greedy, sampled])
    monkeypatch.setattr(ev, "generate_rollout", spy)
    result = ev.evaluate(None, None, EvalConfig(model="m", n=4, k=2, shared_prefill=True))
    assert result["pass@1"] == 0.5 and result["mean@2"] == 0.375
    assert seen == [(4, 1), (4, 2)]


def test_shared_prefill_on_a_tiny_model_scores_k_samples_per_problem():
    model, tok = tiny()
    result = evaluate(model, tok, EvalConfig(model="tiny", n=5, k=3, max_new_tokens=6, batch_size=4,
                                             shared_prefill=True))
    plain = evaluate(model, tok, EvalConfig(model="tiny", n=5, k=3, max_new_tokens=6, batch_size=4))
    assert result["pass@1"] == plain["pass@1"] and result["greedy_mean_length"] == plain["greedy_mean_length"]
    assert all(row["sampled"] * 3 == round(row["sampled"] * 3) for row in result["problems"])
