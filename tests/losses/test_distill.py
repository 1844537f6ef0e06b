"""Teacher terms: the chunked reverse KL against a naive full-vocabulary loop, the top-k and sampled estimators
(k3's expectation is the exact KL), gradients through the student only, the vocabulary check, and the teacher
advantage with HyperEyes' failure gate."""

from __future__ import annotations

import pytest
import torch

from tokenfocus.losses import NORMS, aggregate, aggregate_coefficients
from tokenfocus.losses.distill import reverse_kl, teacher_advantage, weighted_reverse_kl


def _setup(seed=0, b=2, c=5, h=6, v=11):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, generator=g, dtype=torch.float64), torch.randn(v, h, generator=g, dtype=torch.float64),
            torch.randn(b, c, h, generator=g, dtype=torch.float64), torch.randn(v, h, generator=g, dtype=torch.float64))


def test_full_reverse_kl_equals_a_naive_loop_and_only_the_student_gets_gradient():
    s_h, s_w, t_h, t_w = _setup()
    s_h.requires_grad_(True)
    t_h.requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    kl = reverse_kl(s_h, s_w, t_h, t_w, mask, chunk=3)
    for b in range(2):
        for c in range(5):
            p = torch.softmax(s_h[b, c] @ s_w.t(), -1)
            q = torch.softmax(t_h[b, c] @ t_w.t(), -1)
            expected = float((p * (p.log() - q.log())).sum()) if mask[b, c] else 0.0
            assert float(kl[b, c]) == pytest.approx(expected, abs=1e-12)
    kl.sum().backward()
    assert s_h.grad is not None and s_h.grad[0, 3:].abs().max() == 0 and t_h.grad is None


@pytest.mark.parametrize("estimator", ["full", "topk", "sampled_k3"])
def test_the_kl_keeps_no_vocabulary_sized_tensor_for_the_backward_and_its_gradients_are_exact(estimator):
    """Each chunk is recomputed in the backward: what autograd saves during the forward is O(tokens x hidden), not
    O(tokens x vocabulary) (on an H200 the saved softmaxes made a step's peak 1.33 x the plain step's); the values
    and the gradients of the student's hidden states and head are those of a naive full-vocabulary computation."""
    b, c, h, v = 2, 16, 4, 512
    s_h, s_w, t_h, t_w = _setup(seed=3, b=b, c=c, h=h, v=v)
    s_h.requires_grad_(True)
    s_w.requires_grad_(True)
    mask = torch.ones(b, c, dtype=torch.bool)
    mask[0, 10:] = False
    tokens = torch.randint(0, v, (b, c), generator=torch.Generator().manual_seed(1))
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        kl = reverse_kl(s_h, s_w, t_h, t_w, mask, tokens, estimator=estimator, chunk=8, topk=v)
    assert max(saved) < v * 8  # no (chunk, V) softmax waits for the backward
    weights = torch.linspace(0.5, 2.0, b * c, dtype=torch.float64).reshape(b, c)
    grads = torch.autograd.grad((kl * weights).sum(), (s_h, s_w))

    ref_h, ref_w = s_h.detach().clone().requires_grad_(True), s_w.detach().clone().requires_grad_(True)
    log_s = torch.log_softmax(ref_h @ ref_w.t(), -1)
    log_t = torch.log_softmax(t_h @ t_w.t(), -1)
    if estimator == "sampled_k3":
        log_r = log_t.gather(-1, tokens[..., None])[..., 0] - log_s.gather(-1, tokens[..., None])[..., 0]
        expected = log_r.exp() - 1 - log_r
    else:  # top-k with k = V is the full KL
        expected = (log_s.exp() * (log_s - log_t)).sum(-1)
    expected = torch.where(mask, expected, torch.zeros_like(expected))
    assert torch.allclose(kl, expected, atol=1e-12)
    for got, want in zip(grads, torch.autograd.grad((expected * weights).sum(), (ref_h, ref_w)), strict=True):
        assert torch.allclose(got, want, atol=1e-10)


@pytest.mark.parametrize(("estimator", "topk"), [("full", 20), ("topk", 7), ("topk", 512), ("sampled_k3", 20)])
def test_the_kl_term_with_its_gradient_formed_in_the_forward_equals_the_checkpointed_one(estimator, topk):
    """weighted_reverse_kl (dGRPO form A's loss term, issue 13's cost target) against sum(w x reverse_kl): the same
    value, per-token KL and gradients of the student's hidden states and head (tied head included), at a temperature,
    with masked tokens, unequal weights, chunks that do not divide the tokens and a top-k smaller than the
    vocabulary; what it saves for the backward is O(tokens x hidden + vocabulary x hidden)."""
    b, c, h, v = 3, 11, 5, 512
    s_h, s_w, t_h, t_w = _setup(seed=4, b=b, c=c, h=h, v=v)
    mask = torch.rand(b, c, generator=torch.Generator().manual_seed(2)) > 0.3
    tokens = torch.randint(0, v, (b, c), generator=torch.Generator().manual_seed(5))
    weights = torch.rand(b, c, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    results = []
    for fused in (True, False):
        hidden, head = s_h.clone().requires_grad_(True), s_w.clone().requires_grad_(True)
        saved = []

        def pack(tensor, saved=saved):
            saved.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            if fused:
                total, kl = weighted_reverse_kl(hidden, head, t_h, t_w, mask, weights, tokens, estimator=estimator,
                                                topk=topk, chunk=4, temperature=0.7)
            else:
                kl = reverse_kl(hidden, head, t_h, t_w, mask, tokens, estimator=estimator, topk=topk, chunk=4,
                                temperature=0.7)
                total = (weights * kl).sum()
        assert max(saved, default=0) <= max(b * c * h, v * h)  # no (chunk, V) tensor waits for the backward
        results.append((total.detach(), kl.detach(), *torch.autograd.grad(total, (hidden, head))))
    assert not results[0][1].requires_grad and results[0][1][~mask].abs().max() == 0
    for got, want in zip(*results, strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # evaluation: no gradient formed, the same value
        total, _ = weighted_reverse_kl(s_h, s_w, t_h, t_w, mask, weights, tokens, estimator=estimator, topk=topk,
                                       temperature=0.7)
    assert torch.allclose(total, results[0][0], rtol=1e-10)


@pytest.mark.parametrize("norm", NORMS)
def test_aggregate_coefficients_reproduce_every_reduction(norm):
    """aggregate is linear in its per-token terms: the coefficients give it back as one weighted sum (the weights
    weighted_reverse_kl needs before it computes the KL), with a global count and a max length."""
    g = torch.Generator().manual_seed(7)
    values = torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.4
    options = {"global_count": 30.0, "max_length": 9} if norm == "token_mean" else {"max_length": 9}
    coefficients = aggregate_coefficients(mask, norm, "all", **options)
    assert not coefficients.requires_grad and coefficients[~mask].abs().max() == 0
    assert float((coefficients * values).sum()) == pytest.approx(float(aggregate(values, None, mask, norm, "all",
                                                                                 **options)), abs=1e-12)


def test_topk_with_the_whole_vocabulary_is_the_full_kl_and_k3_is_unbiased():
    s_h, s_w, t_h, t_w = _setup(seed=1, b=1, c=1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    full = reverse_kl(s_h, s_w, t_h, t_w, mask)
    assert torch.allclose(reverse_kl(s_h, s_w, t_h, t_w, mask, estimator="topk", topk=11), full)
    assert float(reverse_kl(s_h, s_w, t_h, t_w, mask, estimator="topk", topk=3)) >= 0
    p = torch.softmax(s_h[0, 0] @ s_w.t(), -1)
    draws = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    many = draws.reshape(-1, 1)
    k3 = reverse_kl(s_h.expand(many.size(0), 1, -1), s_w, t_h.expand(many.size(0), 1, -1), t_w,
                    torch.ones_like(many, dtype=torch.bool), many, estimator="sampled_k3", chunk=50_000)
    k1 = reverse_kl(s_h.expand(many.size(0), 1, -1), s_w, t_h.expand(many.size(0), 1, -1), t_w,
                    torch.ones_like(many, dtype=torch.bool), many, estimator="sampled_k1", chunk=50_000)
    assert float(k3.mean()) == pytest.approx(float(full), rel=0.02)  # E_pi_S[k3] = KL
    assert float(k1.mean()) == pytest.approx(float(full), rel=0.02)  # E_pi_S[k1] = KL too
    assert float(k3.min()) >= 0


def test_bad_inputs_are_named():
    s_h, s_w, t_h, t_w = _setup()
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="vocabularies differ"):
        reverse_kl(s_h, s_w, t_h, t_w[:7], mask)
    with pytest.raises(ValueError, match="needs the sampled tokens"):
        reverse_kl(s_h, s_w, t_h, t_w, mask, estimator="sampled_k3")
    with pytest.raises(ValueError, match="estimator must be one of"):
        reverse_kl(s_h, s_w, t_h, t_w, mask, estimator="k2")
    with pytest.raises(ValueError, match="vocabularies differ"):
        weighted_reverse_kl(s_h, s_w, t_h, t_w[:7], mask, torch.ones(2, 5, dtype=torch.float64))
    hidden = s_h.clone().requires_grad_(True)
    total, _ = weighted_reverse_kl(hidden, s_w, t_h, t_w, mask, torch.ones(2, 5, dtype=torch.float64))
    total.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass.*compute the term again"):
        total.backward()


def test_the_teacher_advantage_is_dense_detached_and_gated():
    advantages = torch.tensor([1.0, -0.5])
    teacher = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -1.0, -2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    out = teacher_advantage(advantages, teacher, old, mask, coef=0.1)
    assert torch.allclose(out, torch.tensor([[1.05, 0.9, 0.0], [-0.7, -0.5, -0.4]]))
    assert not out.requires_grad
    gated = teacher_advantage(advantages, teacher, old, mask, coef=0.1, gate=torch.tensor([False, True]))
    assert torch.allclose(gated[0], torch.tensor([1.0, 1.0, 0.0])) and torch.allclose(gated[1], out[1])


def test_the_full_reverse_kl_equals_trls_distillation_kernel_with_beta_1():
    """Where the objectives coincide (OPD only, reverse KL), our per-token KL's token mean is TRL's
    DistillationTrainer loss (its chunked generalized JSD at beta = 1), value and gradient."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    s_h, s_w, t_h, t_w = (x.float() for x in _setup(seed=3, b=3, c=6, h=8, v=40))
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) > 0.3
    ours_h, trl_h = s_h.clone().requires_grad_(True), s_h.clone().requires_grad_(True)
    ours = reverse_kl(ours_h, s_w, t_h, t_w, mask, temperature=0.7)[mask].mean()
    theirs, _, _ = _chunked_divergence_loss(trl_h, t_h, s_w, t_w, mask.long(), 1.0, temperature=0.7)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    ours.backward()
    theirs.backward()
    assert torch.allclose(ours_h.grad, trl_h.grad, atol=1e-6)


def test_distill_settings_name_their_problems():
    from tokenfocus.losses.distill import DistillConfig

    assert DistillConfig().problems() == [] and DistillConfig(form="scope", rl=False).problems() == []
    found = DistillConfig(form="kd", gate="wrong", estimator="k2", coef=-1, tau=0, student_direction="paper").problems()
    assert len(found) == 6
    assert DistillConfig(form="advantage", rl=False).problems() == [
        "rl: false (distillation only) needs form 'loss' or 'scope' (form 'advantage' adds to the GRPO advantage)"]


def test_a_teacher_device_that_is_not_on_this_machine_is_named_before_loading():
    from tokenfocus.losses.distill import DistillConfig

    assert DistillConfig(device="cpu").problems() == []
    missing = DistillConfig(device="cuda:99").problems()
    assert len(missing) == 1 and "'cuda:99'" in missing[0]
    assert ("no CUDA device" in missing[0]) or ("CUDA device(s), cuda:0 to" in missing[0])
    assert "not a torch device" in DistillConfig(device="banana").problems()[0]
    assert "'cpu', 'cuda[:N]' or 'mps'" in DistillConfig(device="meta").problems()[0]
