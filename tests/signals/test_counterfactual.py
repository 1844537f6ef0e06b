"""Counterfactual signals (context_dependency, token_attribution) against naive full-logit references."""

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.signals import Context, compute_signals, counterfactual_scores
from tokenfocus.signals.counterfactual import positions_from_mask
from tokenfocus.types import TokenBatch


def _evidence(batch: TokenBatch, columns) -> torch.Tensor:
    marks = torch.zeros_like(batch.attention_mask)
    marks[:, list(columns)] = True
    return marks & batch.attention_mask & ~batch.response_mask


def _naive_logprobs(model, ids, mask, positions):
    """log softmax of the whole model's logits (no chunking, no cropping): the reference."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long(), position_ids=positions).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1)
    out = torch.zeros(ids.shape, dtype=torch.float64)
    out[:, 1:] = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return out, logp


def test_attribution_and_exact_kl_equal_the_naive_reference():
    model, _ = tiny()
    batch = rollout_batch([5, 7, 3], [4, 2, 4], prompt_width=7, completion_width=4, seed=1)
    evidence = _evidence(batch, [3, 4, 5])
    out = compute_signals(model, batch, [
        {"name": "token_attribution", "label": "d"},
        {"name": "token_attribution", "signed": False, "label": "abs"},
        {"name": "context_dependency", "estimator": "full_kl", "label": "kl"},
        {"name": "context_dependency", "label": "k3"},
    ], marks={"evidence": evidence})
    positions = positions_from_mask(batch.attention_mask)
    full, logp_full = _naive_logprobs(model, batch.input_ids, batch.attention_mask, positions)
    blind, logp_blind = _naive_logprobs(model, batch.input_ids, batch.attention_mask & ~evidence, positions)
    mask = batch.response_mask
    expected = torch.where(mask, full - blind, torch.zeros_like(full))
    torch.testing.assert_close(out["d"].double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["abs"].double(), expected.abs(), atol=1e-5, rtol=1e-5)
    kl = torch.zeros_like(full)
    kl[:, 1:] = (logp_full.exp() * (logp_full - logp_blind)).sum(-1)
    torch.testing.assert_close(out["kl"].double(), torch.where(mask, kl, torch.zeros_like(kl)), atol=1e-5, rtol=1e-4)
    log_r = blind - full
    k3 = torch.where(mask, log_r.exp() - 1 - log_r, torch.zeros_like(log_r))
    torch.testing.assert_close(out["k3"].double(), k3, atol=1e-5, rtol=1e-4)
    assert (out["k3"] >= 0).all() and (out["kl"] >= 0).all()
    assert out["d"][mask].abs().max() > 1e-3  # the evidence mattered: the test is not comparing zeros


def test_hiding_keeps_positions():
    """Hiding tokens through the attention mask equals deleting them with the other tokens' positions kept."""
    model, _ = tiny()
    batch = rollout_batch([6], [3], prompt_width=6, completion_width=3, seed=2)
    evidence = _evidence(batch, [2, 3])
    out = compute_signals(model, batch, [{"name": "token_attribution"}], marks={"evidence": evidence})
    keep = ~evidence[0]
    positions = positions_from_mask(batch.attention_mask)
    full, _ = _naive_logprobs(model, batch.input_ids, batch.attention_mask, positions)
    deleted, _ = _naive_logprobs(model, batch.input_ids[:, keep], batch.attention_mask[:, keep], positions[:, keep])
    response = batch.response_mask[0]
    torch.testing.assert_close(out["token_attribution"][0, response].double(),
                               full[0, response] - deleted[0, response[keep]], atol=1e-5, rtol=1e-5)
    # With the positions renumbered instead (deleting the tokens), the scores differ: the test can tell.
    shifted, _ = _naive_logprobs(model, batch.input_ids[:, keep], batch.attention_mask[:, keep], None)
    assert (deleted[0, response[keep]] - shifted[0, response[keep]]).abs().max() > 1e-4


@pytest.mark.parametrize("estimator", ["k3", "full_kl"])
def test_an_empty_evidence_span_gives_zero(estimator):
    model, _ = tiny()
    batch = rollout_batch([5, 7], [4, 2], prompt_width=7, completion_width=4, seed=3)
    none = torch.zeros_like(batch.attention_mask)
    out = compute_signals(model, batch, [{"name": "context_dependency", "estimator": estimator},
                                         {"name": "token_attribution"}], marks={"evidence": none})
    assert out["context_dependency"].abs().max() < 1e-9
    assert out["token_attribution"].abs().max() < 1e-5


def test_evidence_that_cannot_matter_gives_zero_dependency():
    """With every attention output projection zeroed no token sees another: hiding any evidence changes nothing."""
    model, _ = tiny()
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
    batch = rollout_batch([6, 4], [3, 3], prompt_width=6, completion_width=3, seed=4)
    evidence = _evidence(batch, [1, 2, 3, 4])
    out = compute_signals(model, batch, [{"name": "context_dependency", "estimator": "full_kl", "label": "kl"},
                                         {"name": "context_dependency", "label": "k3"}], marks={"evidence": evidence})
    assert out["kl"].abs().max() < 1e-6 and out["k3"].abs().max() < 1e-6


def test_k3_expectation_is_the_exact_kl():
    """Monte Carlo: responses sampled from pi(.|full) at one position; the mean k3 matches the exact KL."""
    model, _ = tiny(seed=5)
    n, prompt = 3000, 6
    ids = torch.randint(3, 90, (1, prompt), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, prompt, dtype=torch.bool)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long()).logits[0, -1].double()
    tokens = torch.multinomial(torch.softmax(logits, -1), n, replacement=True,
                               generator=torch.Generator().manual_seed(1))
    batch = TokenBatch(torch.cat([ids.expand(n, -1), tokens[:, None]], 1), torch.ones(n, prompt + 1, dtype=torch.bool),
                       torch.zeros(n, prompt + 1, dtype=torch.bool).index_fill_(1, torch.tensor([prompt]), True))
    evidence = _evidence(batch, [1, 2, 3])
    out = compute_signals(model, batch, [{"name": "context_dependency", "estimator": "full_kl", "label": "kl"},
                                         {"name": "context_dependency", "label": "k3"}],
                          marks={"evidence": evidence}, batch_size=512)
    exact = out["kl"][:, prompt].double()
    assert exact.std() < 1e-5 * (1 + exact.mean())  # one position, one distribution
    k3 = out["k3"][:, prompt].double()
    standard_error = k3.std() / n ** 0.5
    assert exact.mean() > 1e-3  # a real divergence to estimate
    assert abs(k3.mean() - exact.mean()) < 4 * standard_error + 1e-4


def test_given_context_equal_to_the_full_one_gives_zero():
    model, _ = tiny()
    batch = rollout_batch([5, 7], [4, 2], prompt_width=7, completion_width=4, seed=6)
    same = Context(batch.input_ids, batch.attention_mask, positions_from_mask(batch.attention_mask))
    out = compute_signals(model, batch, [{"name": "token_attribution", "counterfactual": "steps_shuffled"}],
                          contexts={"steps_shuffled": same})
    assert out["token_attribution"].abs().max() < 1e-5


def test_a_wider_counterfactual_context_aligns_on_the_completion():
    """A re-tokenized prompt may be longer: rows align on their last columns (the completion)."""
    model, _ = tiny()
    batch = rollout_batch([4], [3], prompt_width=4, completion_width=3, seed=7)
    wider_ids = torch.cat([torch.full((1, 2), 2), batch.input_ids], 1)
    wider_mask = torch.cat([torch.zeros(1, 2, dtype=torch.bool), batch.attention_mask], 1)
    full = Context(batch.input_ids, batch.attention_mask, positions_from_mask(batch.attention_mask))
    wider = Context(wider_ids, wider_mask, positions_from_mask(wider_mask))
    logprobs, _ = counterfactual_scores(model, full, wider, 3)
    reference, _ = _naive_logprobs(model, batch.input_ids, batch.attention_mask, full.position_ids)
    torch.testing.assert_close(logprobs.double(), reference[:, -3:], atol=1e-5, rtol=1e-5)


def test_bad_counterfactual_inputs_are_refused_before_any_forward():
    model, _ = tiny()
    batch = rollout_batch([5], [3], prompt_width=5, completion_width=3, seed=8)
    with pytest.raises(ValueError, match="marks=\\{'evidence'"):
        compute_signals(model, batch, ["context_dependency"])
    with pytest.raises(ValueError, match="evidence lies in the prompt"):
        compute_signals(model, batch, ["context_dependency"], marks={"evidence": batch.response_mask})
    with pytest.raises(ValueError, match="contexts="):
        compute_signals(model, batch, [{"name": "token_attribution", "counterfactual": "steps_shuffled"}])
    with pytest.raises(ValueError, match="counterfactual"):
        compute_signals(model, batch, [{"name": "token_attribution", "counterfactual": "blur"}])
    other = rollout_batch([5], [3], prompt_width=5, completion_width=3, seed=9)
    full = Context(batch.input_ids, batch.attention_mask)
    with pytest.raises(ValueError, match="same completion tokens"):
        counterfactual_scores(model, full, Context(other.input_ids, other.attention_mask), 3)


def test_k3_is_finite_and_non_negative_for_extreme_ratios():
    from tokenfocus.signals.counterfactual import context_dependency
    from tokenfocus.types import CounterfactualRecord, ForwardCapture

    full = torch.tensor([[0.0, -200.0, -1e-3, -30.0, 0.0]])
    blind = torch.tensor([[0.0, -1e-3, -200.0, -30.0, -1.0]])
    batch = TokenBatch(torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool),
                       torch.tensor([[False, True, True, True, True]]))
    capture = ForwardCapture(batch, 1, logprobs=full, counterfactual={"evidence_masked": CounterfactualRecord(blind)})
    values = context_dependency(capture)
    assert torch.isfinite(values).all() and (values >= 0).all() and values[0, 0] == 0 and values[0, 3] == 0


def test_empty_completions_chunking_and_row_order():
    """A row with no response tokens gives zeros (no NaN); row chunks of 1 equal one chunk; permuting the rows
    permutes the values."""
    model, _ = tiny()
    batch = rollout_batch([5, 7, 3, 6], [4, 0, 2, 3], prompt_width=7, completion_width=4, seed=10)
    evidence = _evidence(batch, [2, 3, 4])
    specs = [{"name": "context_dependency", "estimator": "full_kl", "label": "kl"}, {"name": "context_dependency"},
             {"name": "token_attribution"}]
    one = compute_signals(model, batch, specs, marks={"evidence": evidence}, batch_size=8)
    single = compute_signals(model, batch, specs, marks={"evidence": evidence}, batch_size=1)
    for label in one:
        assert torch.isfinite(one[label]).all() and (one[label][1] == 0).all()
        torch.testing.assert_close(one[label], single[label], atol=1e-5, rtol=1e-5)
    order = torch.tensor([2, 0, 3, 1])
    permuted = TokenBatch(batch.input_ids[order], batch.attention_mask[order], batch.response_mask[order])
    shuffled = compute_signals(model, permuted, specs, marks={"evidence": evidence[order]})
    for label in one:
        torch.testing.assert_close(shuffled[label], one[label][order], atol=1e-5, rtol=1e-5)
