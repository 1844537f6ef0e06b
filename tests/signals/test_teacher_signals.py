"""Teacher signals (teacher_logprobs, teacher_logratio, teacher_kl) against naive full-logit references of both
models, and their refusals."""

import pytest
import torch

from helpers import rollout_batch, tiny
from tokenfocus.signals import compute_signals
from tokenfocus.signals.counterfactual import positions_from_mask


def _naive(model, batch):
    """(B, T) log-probs of each token at its own index and the (B, T - 1, V) log-distributions predicting tokens
    1..T-1, from the whole model's logits (no chunking)."""
    positions = positions_from_mask(batch.attention_mask)
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                       position_ids=positions).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1)
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float64)
    out[:, 1:] = logp.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return out, logp


def _in_response(batch, values):
    return torch.where(batch.response_mask, values, torch.zeros_like(values))


def test_teacher_signals_equal_the_naive_reference_of_both_models():
    student, _ = tiny()
    teacher, _ = tiny(seed=7)
    batch = rollout_batch([5, 7, 3], [4, 2, 4], prompt_width=7, completion_width=4, seed=1)  # left padding
    out = compute_signals(student, batch, [
        "teacher_logprobs", "teacher_logratio",
        {"name": "teacher_kl", "label": "full"},
        {"name": "teacher_kl", "estimator": "topk", "topk": 5, "label": "top5"},
        {"name": "teacher_kl", "estimator": "sampled_k1", "label": "k1"},
        {"name": "teacher_kl", "estimator": "sampled_k3", "label": "k3"},
    ], teacher=teacher)
    s_tok, s_dist = _naive(student, batch)
    t_tok, t_dist = _naive(teacher, batch)
    torch.testing.assert_close(out["teacher_logprobs"].double(), _in_response(batch, t_tok), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["teacher_logratio"].double(), _in_response(batch, t_tok - s_tok), atol=1e-5,
                               rtol=1e-5)
    kl = torch.zeros_like(s_tok)
    kl[:, 1:] = (s_dist.exp() * (s_dist - t_dist)).sum(-1)
    torch.testing.assert_close(out["full"].double(), _in_response(batch, kl), atol=1e-5, rtol=1e-4)
    support = t_dist.topk(5, dim=-1).indices
    s_k, t_k = s_dist.gather(-1, support), t_dist.gather(-1, support)
    s_k, t_k = s_k - s_k.logsumexp(-1, keepdim=True), t_k - t_k.logsumexp(-1, keepdim=True)
    top = torch.zeros_like(s_tok)
    top[:, 1:] = (s_k.exp() * (s_k - t_k)).sum(-1)
    torch.testing.assert_close(out["top5"].double(), _in_response(batch, top), atol=1e-5, rtol=1e-4)
    log_r = t_tok - s_tok
    torch.testing.assert_close(out["k1"].double(), _in_response(batch, -log_r), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["k3"].double(), _in_response(batch, log_r.exp() - 1 - log_r), atol=1e-5,
                               rtol=1e-4)
    mask = batch.response_mask
    assert out["full"][mask].min() > 1e-4  # two different models: the test is not comparing zeros
    assert (out["full"][~mask] == 0).all() and (out["teacher_logprobs"][~mask] == 0).all()


def test_a_teacher_equal_to_the_student_gives_zero_kl_and_log_ratio():
    student, _ = tiny()
    batch = rollout_batch([5, 6], [3, 4], prompt_width=6, completion_width=4, seed=3)
    out = compute_signals(student, batch, ["teacher_logratio", {"name": "teacher_kl", "label": "kl"},
                                           {"name": "teacher_kl", "estimator": "sampled_k3", "label": "k3"}],
                          teacher=tiny()[0])
    for values in out.values():
        assert values.abs().max() < 1e-5


def test_teacher_signals_without_a_teacher_or_with_another_vocabulary_are_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    student, _ = tiny()
    batch = rollout_batch([5], [3], prompt_width=5, completion_width=3, seed=0)
    with pytest.raises(ValueError, match=r"\['teacher_kl'\] need a teacher: compute_signals\(\.\.\., teacher=model\)"):
        compute_signals(student, batch, ["predictive_entropy", "teacher_kl"])
    other = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="teacher's vocabulary has 50 tokens"):
        compute_signals(student, batch, ["teacher_logprobs"], teacher=other)
    with pytest.raises(ValueError, match="estimator"):
        compute_signals(student, batch, [{"name": "teacher_kl", "estimator": "k2"}], teacher=tiny(seed=7)[0])
