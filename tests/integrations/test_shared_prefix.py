"""One forward per shared prompt (integrations/shared_prefix.py) against the plain forward: the log-probs,
entropies, final hidden states and gradients of TRL's per-token scorer, and whole GRPO losses with and without a
teacher (forms advantage, loss, scope) computed both ways."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl.trainer.utils import add_fused_lm_head

from helpers import tiny, tiny_grpo_args
from tokenfocus.config import ConfigError, method_preset
from tokenfocus.config.train import build_train_config
from tokenfocus.integrations.shared_prefix import (prefix_groups, shared_prefill_cache, shared_prefix_hidden,
                                                  shared_prefix_logps)
from tokenfocus.integrations.trl import TokenFocusGRPOTrainer
from tokenfocus.losses.distill import DistillConfig

WIDTH = 6


def grouped_batch(vocab: int, seed: int = 0):
    """7 rows: prompt 0 at rows 0, 1, 6 (not contiguous), prompt 1 (left-padded by 3) at rows 2-4, prompt 2 alone at
    row 5; completions of WIDTH tokens, two of them ending early (right padding)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, vocab, (12,), generator=g) for _ in range(3)]
    rows = [0, 0, 1, 1, 1, 2, 0]
    ids = torch.stack([torch.cat([prompts[r], torch.randint(5, vocab, (WIDTH,), generator=g)]) for r in rows])
    mask = torch.ones_like(ids)
    mask[2:5, :3] = 0
    ids[2:5, :3] = 0
    mask[1, -2:] = 0
    mask[5, -4:] = 0
    return ids, mask


def plain_logps(model, ids, mask, width):
    """TRL's scorer: the whole rows, labels on the completion tokens."""
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-width] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -width:], out.entropy[:, -width:]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prefix_log_probs_entropies_and_gradients_equal_the_plain_forward(attn):
    model = tiny(attn)[0]
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    ids, mask = grouped_batch(model.config.vocab_size)
    first, inverse = prefix_groups(ids, mask, ids.size(1) - WIDTH)
    assert len(first) == 3 and inverse[first].tolist() == [0, 1, 2]  # each group's representative is its own row
    assert sorted(first.tolist()) == [0, 2, 5]  # the first row of each group
    assert inverse[[0, 1, 6]].unique().numel() == 1 and inverse[[2, 3, 4]].unique().numel() == 1
    a, ea = plain_logps(model, ids, mask, WIDTH)
    b, eb = shared_prefix_logps(model, ids, mask, WIDTH, compute_entropy=True)
    valid = mask[:, -WIDTH:].bool()
    assert torch.allclose(a[valid], b[valid], atol=1e-5) and torch.allclose(ea[valid], eb[valid], atol=1e-5)
    assert (b[~valid] == 0).all()
    params = list(model.parameters())
    grads = [torch.autograd.grad(((x * valid).sum() + (e * valid).sum()), params, allow_unused=True)
             for x, e in ((a, ea), (b, eb))]
    for plain, shared in zip(*grads):
        assert (plain is None) == (shared is None)
        if plain is not None:
            assert torch.allclose(plain, shared, atol=1e-5, rtol=1e-4)


def test_a_row_given_another_groups_prompt_would_show(monkeypatch):
    """The comparison above can fail: rows handed the KV cache of another group's prompt score differently."""
    import tokenfocus.integrations.shared_prefix as module

    model = tiny()[0]
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids, mask = grouped_batch(model.config.vocab_size)
    right, _ = shared_prefix_logps(model, ids, mask, WIDTH)
    groups = module.prefix_groups

    def mixed_up(*args):
        first, inverse = groups(*args)
        return first, (inverse + 1) % len(first)

    monkeypatch.setattr(module, "prefix_groups", mixed_up)
    wrong, _ = shared_prefix_logps(model, ids, mask, WIDTH)
    valid = mask[:, -WIDTH:].bool()
    assert not torch.allclose(right[valid], wrong[valid], atol=1e-3)


def test_nothing_to_share_falls_back_to_the_plain_forward():
    model = tiny()[0]
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids, mask = grouped_batch(model.config.vocab_size)
    distinct = [0, 2, 5]
    assert prefix_groups(ids[distinct], mask[distinct], ids.size(1) - WIDTH) is None
    assert shared_prefix_logps(model, ids[distinct], mask[distinct], WIDTH) is None
    assert shared_prefix_logps(model, ids[:, -WIDTH - 1:], mask[:, -WIDTH - 1:], WIDTH) is None  # one-token prompts


def test_shared_prefix_final_hidden_states_equal_the_plain_forwards():
    model = tiny()[0]
    ids, mask = grouped_batch(model.config.vocab_size)
    with torch.no_grad():
        plain = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -WIDTH - 1:]
        shared = shared_prefix_hidden(model.model, ids, mask, WIDTH)
    real = mask[:, -WIDTH - 1:].bool()
    assert shared.shape == plain.shape and torch.allclose(shared[real], plain[real], atol=1e-5)


def half_reward(completions, **kwargs):
    return [float(len(c) % 2) for c in completions]


def trainer_for(tmp_path, shared: bool, distill=None, method="dapo", **options):
    model, tok = tiny()
    model.train()
    args = tiny_grpo_args(tmp_path, seed=0)
    preset = method_preset(method)
    trainer = TokenFocusGRPOTrainer(
        model=model, processing_class=tok, reward_funcs=[half_reward], args=args,
        train_dataset=Dataset.from_list([{"prompt": f"Compute {i}+{i} please="} for i in range(16)]),
        signals=preset.signals, policy=preset.policy, loss=preset.loss,
        teacher=None if distill is None else tiny(seed=7)[0], distill=distill, shared_prefix=shared, **options)
    trainer.current_gradient_accumulation_steps = 1
    return trainer


@pytest.mark.parametrize("distill", [None, DistillConfig(form="advantage", coef=0.5, gate="failed"),
                                     DistillConfig(form="loss", coef=0.3), DistillConfig(form="scope", rl=False)],
                         ids=["grpo", "advantage", "loss", "scope"])
def test_a_grpo_loss_and_its_gradient_are_the_same_with_the_prompt_shared(tmp_path, distill):
    losses, grads, batches = [], [], []
    for shared in (False, True):
        trainer = trainer_for(tmp_path / str(shared), shared, distill)
        torch.manual_seed(0)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer._compute_loss(trainer.model, dict(batch))
        loss.backward()
        assert trainer.tf_shared_last is shared  # the shared path ran (4 rollouts per prompt)
        losses.append(float(loss))
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        batches.append(batch)
    plain, shared = batches
    assert torch.equal(plain["completion_ids"], shared["completion_ids"])
    if distill is not None and distill.form != "loss":  # scored at generation (form loss: in the loss)
        valid = plain["completion_mask"].bool()
        assert torch.allclose(plain["tf_teacher_logps"][valid], shared["tf_teacher_logps"][valid], atol=1e-5)
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_shared_prefix_is_refused_where_hooks_read_every_rows_prompt(tmp_path):
    base = {"model": "tiny-llama", "task": {"name": "arithmetic"}, "shared_prefix": True}
    assert build_train_config(base).shared_prefix
    assert not build_train_config({**base, "shared_prefix": False}).shared_prefix
    with pytest.raises(ConfigError, match="signals \\['attention_entropy'\\] may be recorded in the training forward"):
        build_train_config({**base, "method": "anchors20"})
    assert build_train_config({**base, "method": "anchors20", "signal_pass": "separate"}).shared_prefix
    with pytest.raises(ConfigError, match="sink decorrelation"):
        build_train_config({**base, "method": {"loss": {"preset": "dapo", "sink_decorrelation": 1.0}}})
    with pytest.raises(ConfigError, match="shared_prefix"):
        build_train_config({**base, "shared_prefix": "yes"})
    with pytest.raises(ValueError, match="records attention in the training forward"):
        trainer_for(tmp_path, True, method="anchors20")


def test_a_studys_train_section_passes_shared_prefix_to_every_grpo_arm():
    from pathlib import Path

    from tokenfocus.config import load_study_config

    study = load_study_config(Path(__file__).parents[2] / "configs" / "study-dgrpo.yaml")
    assert all(study.run_config(arm, 0).shared_prefix for arm in study.arms)
    assert not any(load_study_config(Path(__file__).parents[2] / "configs" / "study-hypereyes.yaml").run_config(
        arm, 0).shared_prefix for arm in ("full", "both"))
    assert not any(study.run_config(arm, 0).shared_prefill for arm in study.arms)


def test_a_studys_train_section_passes_shared_prefill(tmp_path):
    import yaml

    from tokenfocus.config import load_study_config

    config = {"model": "tiny-llama", "task": {"name": "arithmetic"}, "dir": str(tmp_path / "study"), "seeds": [0],
              "arms": {"full": "dapo"}, "train": {"shared_prefill": True, "trl": {"max_steps": 1}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    run = load_study_config(tmp_path / "study.yaml").run_config("full", 0)
    assert run.shared_prefill and not run.shared_prefix


def generated(model, ids, mask, sample: bool, **cache):
    """(new tokens, per-step logits) of ``generate`` on left-padded prompts, sampled from seed 0 or greedy."""
    from transformers import GenerationConfig

    torch.manual_seed(0)
    config = GenerationConfig(max_new_tokens=6, do_sample=sample, temperature=1.0, top_k=0, pad_token_id=0,
                              eos_token_id=None)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, return_dict_in_generate=True,
                         output_logits=True, **cache)
    return out.sequences[:, ids.size(1):], torch.stack(out.logits, 1)


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_generation_from_a_shared_prefill_equals_generation_from_every_rows_prompt(sample):
    """The prompts of grouped_batch (rows of a group not contiguous, one group left-padded, one row alone): the
    prefill of each distinct prompt once gives every row the logits and tokens of its own prefill."""
    model = tiny()[0].eval()
    ids, mask = grouped_batch(model.config.vocab_size)
    ids, mask = ids[:, :-WIDTH], mask[:, :-WIDTH]
    with torch.no_grad():
        plain, plain_logits = generated(model, ids, mask, sample)
        cache = shared_prefill_cache(model, ids, mask)
        assert cache.get_seq_length() == ids.size(1) - 1 and cache.layers[0].keys.size(0) == len(ids)
        shared, shared_logits = generated(model, ids, mask, sample, cache=cache)
    assert torch.equal(plain, shared)
    assert torch.allclose(plain_logits, shared_logits, atol=1e-5)
    assert shared_prefill_cache(model, ids[[0, 2, 5]], mask[[0, 2, 5]]) is None  # nothing shared: plain generate


def test_grpo_generation_with_shared_prefill_gives_the_plain_rollouts(tmp_path, monkeypatch):
    """TRL's generation in the trainer: with shared_prefill the prompt forward runs on the 2 distinct prompts (not the
    8 rows) and the sampled rollouts are the plain ones; rows handed another prompt's cache would show."""
    import tokenfocus.integrations.shared_prefix as module

    def rollouts(name, **options):
        trainer = trainer_for(tmp_path / name, False, **options)
        widths = []
        trainer.model.register_forward_pre_hook(lambda _, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)),
                                                with_kwargs=True)
        torch.manual_seed(0)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        return batch, widths

    plain, plain_widths = rollouts("plain")
    shared, shared_widths = rollouts("shared", shared_prefill=True)
    prompt_width = plain["prompt_ids"].size(1)
    assert plain_widths[0] == (8, prompt_width)  # every row's prompt
    assert shared_widths[0] == (2, prompt_width - 1) and shared_widths[1] == (8, 1)  # 2 prompts once, then 8 rows
    assert torch.equal(plain["prompt_ids"], shared["prompt_ids"])
    assert torch.equal(plain["completion_ids"], shared["completion_ids"])
    groups = module.prefix_groups
    monkeypatch.setattr(module, "prefix_groups", lambda *args: (groups(*args)[0], 1 - groups(*args)[1]))
    mixed, _ = rollouts("mixed", shared_prefill=True)
    assert not torch.equal(plain["completion_ids"], mixed["completion_ids"])


def test_shared_prefill_is_refused_where_trls_generate_does_not_run(tmp_path):
    from tokenfocus.integrations.calc_tool import CalcToolLoop

    base = {"model": "tiny-llama", "task": {"name": "arithmetic"}, "shared_prefill": True}
    assert build_train_config(base).shared_prefill and not build_train_config(base).shared_prefix
    with pytest.raises(ConfigError, match="calc task's tool loop generates the rollouts itself"):
        build_train_config({**base, "task": {"name": "calculator"}})
    with pytest.raises(ConfigError, match="vLLM and continuous batching"):
        build_train_config({**base, "trl": {"use_vllm": True}})
    with pytest.raises(ValueError, match="a rollout_func generates itself"):
        trainer_for(tmp_path, False, shared_prefill=True, rollout_func=CalcToolLoop())
