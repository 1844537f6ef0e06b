"""A teacher in GRPO: its log-probs of the student's own tokens at the predicting positions, dGRPO form B (dense
advantage, optionally gated to failed rollouts, HyperEyes) and form A (+ coef x token-mean reverse KL) against
naive recomputations, and the vocabulary check."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from helpers import tiny, tiny_grpo_args
from tokenfocus.config import method_preset
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
from tokenfocus.losses.distill import DistillConfig


def half_reward(completions, **kwargs):  # about half the rollouts fail (reward 0)
    return [float(len(c) % 2) for c in completions]


def make(tmp_path, teacher=None, distill=None):
    model, tok = tiny()
    model.train()
    args = tiny_grpo_args(tmp_path, seed=0)
    method = method_preset("dapo")
    trainer = TokenFocusGRPOTrainer(model=model, processing_class=tok, reward_funcs=[half_reward], args=args,
                                    train_dataset=Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(16)]),
                                    signals=method.signals, policy=method.policy, loss=method.loss, teacher=teacher,
                                    distill=distill)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the loss is called directly here
    return trainer


def batch_of(trainer):
    torch.manual_seed(0)
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def test_form_b_adds_the_teachers_dense_advantage_gated_to_failures(tmp_path):
    teacher = tiny(seed=7)[0]
    ours = make(tmp_path / "b", teacher, DistillConfig(form="advantage", coef=0.5, gate="failed"))
    batch = batch_of(ours)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = teacher(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1] / ours.temperature
    naive = torch.log_softmax(logits.float(), -1).gather(-1, batch["completion_ids"][..., None])[..., 0]
    valid = batch["completion_mask"].bool()
    assert torch.allclose(batch["tf_teacher_logps"][valid], naive[valid], atol=1e-5)
    assert batch["tf_failed"].any() and not batch["tf_failed"].all()
    plain = make(tmp_path / "p")
    with torch.no_grad():
        got = ours._compute_loss(ours.model, dict(batch))
        old = batch.get("old_per_token_logps")
        if old is None:
            old = plain._get_per_token_logps_and_entropies(plain.model, ids, mask, width)[0]
        dense = batch["advantages"][:, None] + 0.5 * (naive - old) * batch["tf_failed"][:, None]
        expected = plain._compute_loss(plain.model, {**batch, "advantages": torch.where(valid, dense, 0.0)})
    assert float(got) == pytest.approx(float(expected), abs=1e-5)
    with torch.no_grad():
        unchanged = make(tmp_path / "z", teacher, DistillConfig(form="advantage", coef=0.0))._compute_loss(
            plain.model, dict(batch))
        assert float(unchanged) == pytest.approx(float(plain._compute_loss(plain.model, dict(batch))), abs=1e-6)


def test_form_a_adds_coef_times_the_token_mean_reverse_kl(tmp_path):
    teacher = tiny(seed=7)[0]
    ours = make(tmp_path / "a", teacher, DistillConfig(form="loss", coef=0.3))
    plain = make(tmp_path / "p")
    batch = batch_of(ours)
    got = ours._compute_loss(ours.model, dict(batch))
    base = plain._compute_loss(plain.model, dict(batch))
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    with torch.no_grad():
        s = torch.log_softmax(plain.model(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1].float()
                              / ours.temperature, -1)
        t = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1].float()
                              / ours.temperature, -1)
    valid = batch["completion_mask"].bool()
    kl = (s.exp() * (s - t)).sum(-1)[valid]
    assert float(got) == pytest.approx(float(base) + 0.3 * float(kl.mean()), abs=1e-5)
    got.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert ours.model.get_output_embeddings().weight.grad is not None
    opd = make(tmp_path / "o", teacher, DistillConfig(form="loss", coef=1.0, rl=False))  # distillation only
    with torch.no_grad():
        assert float(opd._compute_loss(opd.model, dict(batch))) == pytest.approx(float(kl.mean()), abs=1e-5)
    # the gradient (formed in the KL's forward pass) is the naive full-logits KL's, head (tied) and body alike
    params = [p for p in opd.model.parameters() if p.requires_grad]
    ours_grads = torch.autograd.grad(opd._compute_loss(opd.model, dict(batch)), params, allow_unused=True)
    s = torch.log_softmax(opd.model(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1].float()
                          / ours.temperature, -1)
    naive_grads = torch.autograd.grad((s.exp() * (s - t)).sum(-1)[valid].mean(), params, allow_unused=True)
    compared = 0
    for got_grad, want in zip(ours_grads, naive_grads, strict=True):
        assert (got_grad is None) == (want is None)
        if want is not None:
            assert torch.allclose(got_grad, want, rtol=1e-4, atol=1e-7)
            compared += int(want.abs().max() > 0)
    assert compared > len(params) // 2
    with pytest.raises(ValueError, match="needs form 'loss'"):
        make(tmp_path / "x", teacher, DistillConfig(form="advantage", rl=False))


def test_a_teacher_with_another_vocabulary_is_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="vocabulary has 50 tokens"):
        make(tmp_path, other, DistillConfig())
    with pytest.raises(ValueError, match="pass both or neither"):
        make(tmp_path, tiny()[0], None)


def _train_config(tmp_path, teacher):
    import yaml

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "model": "tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64",
        "task": {"name": "arithmetic", "tiers": ["D1"], "n_train": 16}, "method": "dapo",
        "reward": {"kind": "digits"}, "teacher": teacher,
        "trl": {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 6,
                "learning_rate": 1e-3},
        "run": {"dir": str(tmp_path / "run"), "seed": 0, "save_steps": 1}}))
    return path


def test_a_train_config_with_a_teacher_trains_and_refuses_another_tokenizer(tmp_path):
    from tokenfocus.config import ConfigError, load_train_config
    from tokenfocus.io import latest_metrics
    from tokenfocus.recipes.train import run_train

    model, tok = tiny(seed=3)
    model.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    config = load_train_config(_train_config(tmp_path, {"model": str(tmp_path / "teacher"), "form": "loss",
                                                        "coef": 0.1}))
    assert config.distill.form == "loss" and config.teacher == str(tmp_path / "teacher")
    run_dir, _ = run_train(config)
    rows = latest_metrics(run_dir / "metrics.jsonl")
    assert sorted(rows) == [1, 2] and all("loss/teacher_kl" in rows[s] for s in rows)
    with pytest.raises(ConfigError) as error:
        load_train_config(_train_config(tmp_path, {"model": str(tmp_path / "nowhere"), "form": "both", "coef": -1,
                                                   "device": "cuda:99"}))
    message = str(error.value)
    assert "teacher.model:" in message and "teacher.form must be 'loss'" in message and "coef must be >= 0" in message
    assert "teacher.device 'cuda:99'" in message
    tok.add_tokens(["<calc>"])
    tok.save_pretrained(tmp_path / "other")
    model.save_pretrained(tmp_path / "other")
    (tmp_path / "x").mkdir()
    other = load_train_config(_train_config(tmp_path / "x", {"model": str(tmp_path / "other")}))
    with pytest.raises(ValueError, match="tokenize differently .*only in one: \\['<calc>'\\]"):
        run_train(other)
    assert not (tmp_path / "x" / "run").exists()  # refused before the run directory was touched


@pytest.mark.parametrize("deferred", [True, False])
def test_scope_routes_failed_rollouts_to_weighted_opd_and_correct_ones_to_weighted_mle(tmp_path, deferred):
    """SCOPE with rl off: failed rows get w_tea x (log pi_T - log pi_old) as their token advantage, correct rows
    none, plus w_stu x the NLL over correct tokens; the weights are SCOPE's (paper directions) on whole groups.

    ``deferred``: with one optimizer step per generation batch the weights wait for the loss and come from its own
    detached log-probs (no second student forward); otherwise they are computed at generation time from a no-grad
    forward. Both must give the reference loss."""
    from tokenfocus.policies.dual_path import scope_weights

    teacher = tiny(seed=7)[0]
    ours = make(tmp_path / "s", teacher, DistillConfig(form="scope", rl=False, mle_coef=0.5))
    if not deferred:
        ours._scope_weights_in_loss = lambda: False
    batch = batch_of(ours)
    assert ("tf_w_student" in batch) is not deferred and ("tf_w_teacher" in batch) is not deferred
    failed = batch["tf_failed"]
    assert failed.any() and not failed.all()
    plain = make(tmp_path / "p")
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    valid = batch["completion_mask"].bool()
    with torch.no_grad():
        student = plain._get_per_token_logps_and_entropies(plain.model, ids, mask, width)[0]
        lengths = valid.sum(-1)
        w_stu, w_tea = scope_weights((student * valid).sum(-1) / lengths,
                                     (batch["tf_teacher_logps"] * valid).sum(-1) / lengths, ~failed,
                                     batch["tf_group"])
        if not deferred:
            assert torch.allclose(batch["tf_w_student"], w_stu, atol=1e-5)
            assert torch.allclose(batch["tf_w_teacher"], w_tea, atol=1e-5)
        assert not torch.allclose(w_tea, torch.ones_like(w_tea))  # the weights matter to the reference
        dense = (w_tea * failed)[:, None] * (batch["tf_teacher_logps"] - student)
        policy = plain._compute_loss(plain.model, {**batch, "advantages": torch.where(valid, dense, 0.0)})
        correct = valid & ~failed[:, None]
        mle = -(student * correct * w_stu[:, None]).sum() / correct.sum()
        got = ours._compute_loss(ours.model, dict(batch))
    assert float(got) == pytest.approx(float(policy) + 0.5 * float(mle), abs=1e-5)


def test_scope_weights_are_computed_at_generation_when_the_batch_is_split(tmp_path):
    """With two optimizer steps per generation batch a loss call sees half of it, so a prompt group may be split:
    the weights must come from generation time."""
    teacher = tiny(seed=7)[0]
    ours = make(tmp_path / "s", teacher, DistillConfig(form="scope", rl=False, mle_coef=0.5))
    ours.args.steps_per_generation = 2
    assert not ours._scope_weights_in_loss()
    ours.model.train()
    assert ours._scope_weights_in_loss() is False
    ours.args.steps_per_generation = 1
    assert ours._scope_weights_in_loss()
    ours.model.eval()  # evaluation scores the whole batch at once, from generation-time weights
    assert not ours._scope_weights_in_loss()


def test_scope_weights_see_whole_groups_when_a_group_straddles_two_processes():
    """Two processes with 6 rows each and G = 4: prompt 1's rollouts are rows 4-5 of process 0 and rows 0-1 of
    process 1. Each process's weights must equal its rows of the weights of the whole batch on one process, which
    the process's own rows alone do not give."""
    from types import SimpleNamespace

    from tokenfocus.integrations.teacher import TeacherMixin
    from tokenfocus.policies.dual_path import scope_weights

    g = torch.Generator().manual_seed(0)
    rows, width = 12, 5
    student = -torch.rand(rows, width, generator=g) * 3
    teacher = -torch.rand(rows, width, generator=g) * 3
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[::3, 3:] = 0
    failed = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    groups = torch.arange(rows) // 4  # as TokenFocusGRPOTrainer numbers rows: global row // G
    valid = mask.float()
    expected = scope_weights((student * valid).sum(-1) / valid.sum(-1), (teacher * valid).sum(-1) / valid.sum(-1),
                             ~failed, groups)

    contributed = {}

    def weights_on(index, gather):
        process = TeacherMixin()
        process.tf_distill = DistillConfig(form="scope", rl=False)
        process.accelerator = SimpleNamespace(process_index=index, gather=gather)
        part = slice(6 * index, 6 * index + 6)
        batch = {"completion_mask": mask[part], "tf_teacher_logps": teacher[part], "tf_failed": failed[part],
                 "tf_group": groups[part]}
        return process._scope_weights(student[part], batch)

    def record(index):
        def gather(tensor):
            contributed[index] = tensor
            return tensor  # one process alone: its own rows
        return gather

    for index in (0, 1):
        weights_on(index, record(index))
    together = [weights_on(index, lambda tensor: torch.cat([contributed[0], contributed[1]])) for index in (0, 1)]
    got_student = torch.cat([together[0][0], together[1][0]])
    got_teacher = torch.cat([together[0][1], together[1][1]])
    assert torch.allclose(got_student, expected[0], atol=1e-6)
    assert torch.allclose(got_teacher, expected[1], atol=1e-6)
    halves = [scope_weights((student[part] * valid[part]).sum(-1) / valid[part].sum(-1),
                            (teacher[part] * valid[part]).sum(-1) / valid[part].sum(-1), ~failed[part], groups[part])
              for part in (slice(0, 6), slice(6, 12))]  # what each process computes from its own rows alone
    split = torch.cat([halves[0][1], halves[1][1]])
    assert not torch.allclose(split[4:8], expected[1][4:8], atol=1e-3)  # the straddling group, seen in halves
    assert torch.allclose(split[:4], expected[1][:4], atol=1e-6)  # a whole group is the same either way


@pytest.mark.parametrize("form", ["loss", "advantage"])
def test_a_teacher_placed_on_a_named_device_scores_as_one_beside_the_student(tmp_path, form):
    """``teacher.device``: the teacher's inputs go to its device and its scores (form B) or final hidden states
    (form A) come back; on one device the losses equal the default placement's. (On a machine with two devices the
    same code moves tensors between them: `benchmarks/teacher_step.py --device cuda --teacher-device cpu`.)"""
    teacher = tiny(seed=7)[0]
    placed = make(tmp_path / "d", teacher, DistillConfig(form=form, coef=0.3, device="cpu"))
    assert placed.tf_teacher_device == torch.device("cpu")
    assert placed.tf_teacher_head is teacher.get_output_embeddings().weight  # no copy on one device
    default = make(tmp_path / "n", teacher, DistillConfig(form=form, coef=0.3))
    batch = batch_of(placed)
    with torch.no_grad():
        assert float(placed._compute_loss(placed.model, dict(batch))) == pytest.approx(
            float(default._compute_loss(default.model, dict(batch))), abs=1e-6)


TEACHER_SIGNALS = [{"name": "teacher_logratio", "label": "lr"}, {"name": "teacher_kl", "label": "kl"},
                   {"name": "teacher_kl", "estimator": "topk", "topk": 5, "label": "kl5"},
                   {"name": "teacher_kl", "estimator": "sampled_k3", "label": "k3"}]


def _signal_trainer(tmp_path, teacher, signal_pass="auto", max_steps=1):
    model, tok = tiny()
    model.train()
    args = tiny_grpo_args(tmp_path, max_steps=max_steps, seed=0, temperature=0.7)
    return TokenFocusGRPOTrainer(model=model, processing_class=tok, reward_funcs=[half_reward], args=args,
                                 train_dataset=Dataset.from_list([{"prompt": f"{i}+{i}="} for i in range(16)]),
                                 signals=TEACHER_SIGNALS, policy={"name": "quantile", "signal": "kl", "ratio": 0.5,
                                                                  "side": "high"},
                                 signal_pass=signal_pass, teacher=teacher,
                                 distill=None if teacher is None else DistillConfig(form="advantage", coef=0.0))


def test_teacher_signals_in_training_equal_the_naive_scores_of_the_rollout(tmp_path):
    """teacher_logratio and teacher_kl (full, top-k, k3) in the trainer's separate pass: the teacher and the
    rollout policy teacher-forced on the rollout's own tokens, at the predicting positions, at the rollout's
    temperature."""
    teacher = tiny(seed=7)[0]
    trainer = _signal_trainer(tmp_path, teacher, signal_pass="separate")
    forwards = []
    hook = teacher.model.register_forward_hook(lambda module, args, output: forwards.append(1))  # the decoder
    batch = batch_of(trainer)
    hook.remove()
    assert {"tf_teacher_logps", "tf_teacher_kl:full", "tf_teacher_kl:topk:5"} <= set(batch)
    # form "advantage" and the KL signals share ONE teacher forward of the 8 rollouts (its log-probs and hidden states)
    assert len(forwards) == 1
    signals = trainer._rollout_signals(batch)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    with torch.no_grad():
        s = torch.log_softmax(trainer.model.eval()(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1]
                              .double() / 0.7, -1)
        t = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits[:, -width - 1:-1].double() / 0.7, -1)
    tokens = batch["completion_ids"][..., None]
    log_r = t.gather(-1, tokens)[..., 0] - s.gather(-1, tokens)[..., 0]
    valid = batch["completion_mask"].bool()
    support = t.topk(5, dim=-1).indices
    s5, t5 = s.gather(-1, support), t.gather(-1, support)
    s5, t5 = s5 - s5.logsumexp(-1, keepdim=True), t5 - t5.logsumexp(-1, keepdim=True)
    expected = {"lr": log_r, "kl": (s.exp() * (s - t)).sum(-1), "kl5": (s5.exp() * (s5 - t5)).sum(-1),
                "k3": log_r.exp() - 1 - log_r}
    for label, values in expected.items():
        torch.testing.assert_close(signals[label][valid].double(), values[valid], atol=1e-5, rtol=1e-4)
        assert (signals[label][~valid] == 0).all()
    assert signals["kl"][valid].min() > 1e-4


def test_teacher_signals_agree_across_the_passes_and_need_a_teacher(tmp_path):
    logs = {}
    for signal_pass in ("auto", "separate"):  # auto: fused into the training forward at one step per generation
        trainer = _signal_trainer(tmp_path / signal_pass, tiny(seed=7)[0], signal_pass=signal_pass)
        assert trainer.tf_in_loss is (signal_pass == "auto")
        trainer.train()
        logs[signal_pass] = trainer.state.log_history[0]
    for key in ("signal/kl/mean", "signal/lr/q50", "signal/kl5/mean", "signal/k3/mean", "policy/weight_max"):
        assert logs["auto"][key] == pytest.approx(logs["separate"][key], rel=1e-4, abs=1e-6), key
    assert "time/teacher_signals_s" in logs["separate"]
    with pytest.raises(ValueError, match=r"signals \['lr', 'kl', 'kl5', 'k3'\] read a teacher's scores"):
        _signal_trainer(tmp_path / "none", None)


def test_a_config_whose_signals_read_a_teacher_needs_one_before_loading(tmp_path):
    import yaml

    from tokenfocus.config import ConfigError, load_train_config

    path = _train_config(tmp_path, None)
    data = yaml.safe_load(path.read_text())
    data.pop("teacher")
    data["method"] = {"signals": [{"name": "teacher_kl", "estimator": "sampled_k3", "label": "kl"}],
                      "policy": {"name": "quantile", "signal": "kl", "ratio": 0.2, "side": "high"}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"signals \['kl'\] read a teacher's scores, and the config has no teacher"):
        load_train_config(path)
    data["teacher"] = {"model": str(tmp_path / "nowhere"), "coef": 0.0}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:  # now only the missing model is wrong
        load_train_config(path)
    assert "teacher.model:" in str(error.value) and "read a teacher's scores" not in str(error.value)
