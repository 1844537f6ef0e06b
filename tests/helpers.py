"""Helpers shared by test files: tiny random llama models, padded batches and the naive references."""

from __future__ import annotations

from pathlib import Path

import torch

from tokenfocus.models import build_tiny_llama
from tokenfocus.types import TokenBatch


def tiny(attn: str = "sdpa", **options):
    model, tokenizer = build_tiny_llama(**{"layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2, **options})
    model.set_attn_implementation(attn)
    model.eval()
    return model, tokenizer


def padded_batch(lengths, width, side="left", vocab=90, seed=0):
    """Random ids with per-row real lengths, padded on the given side; returns (ids, bool mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for r, n in enumerate(lengths):
        if side == "left":
            mask[r, width - n :] = True
        else:
            mask[r, :n] = True
    ids = ids.masked_fill(~mask, 2)
    return ids, mask


def rollout_batch(prompt_lengths, completion_lengths, prompt_width, completion_width, seed=0):
    """[left-padded prompt | right-padded completion] as in TRL; pad id 2 also appears as a real EOS."""
    g = torch.Generator().manual_seed(seed)
    b = len(prompt_lengths)
    ids = torch.randint(3, 90, (b, prompt_width + completion_width), generator=g)
    attn = torch.zeros_like(ids, dtype=torch.bool)
    resp = torch.zeros_like(attn)
    for r, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        attn[r, prompt_width - p : prompt_width + c] = True
        resp[r, prompt_width : prompt_width + c] = True
        if c:
            ids[r, prompt_width + c - 1] = 2  # a real EOS equal to the pad id
    ids = ids.masked_fill(~attn, 2)
    return TokenBatch(ids, attn, resp)


def eager_entropies(model, ids, mask):
    """Per-layer (B, H, T) entropy from output_attentions=True on the eager implementation (the reference)."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask.long(), output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    result = []
    for attn in out.attentions:
        p = attn.double()
        result.append(-torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1))
    return result


def eager_probabilities(model, ids, mask):
    """Per-layer (B, H, T, T) attention probabilities from the eager implementation (the reference)."""
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=mask.long(), position_ids=position_ids, output_attentions=True)
    finally:
        model.set_attn_implementation(original)
    return [a.double() for a in out.attentions]


def reference_entropy(q, k, allowed, scale, *, softcap=None, sinks=None, bias=None):
    """Materialized fp64 softmax entropy: the definition, nothing clever."""
    q, k = q.double(), k.double()
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias.double()
    s = s.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.double().view(1, -1, 1, 1).expand(*s.shape[:-1], 1)], -1)
    p = torch.softmax(s, -1)
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)


def causal(s):
    """(1, 1, s, s) bool lower-triangular mask."""
    return torch.ones(s, s, dtype=torch.bool).tril()[None, None]


# --- token policies -------------------------------------------------------------------------------------

POLICY_SIGNALS = ("attention_entropy", "predictive_entropy", "context_dependency")


def policy_inputs(b=6, t=12, seed=0, p_valid=0.7, progress=0.3, step=0, constant=False, groups=3):
    """Random PolicyInputs: a random valid mask, the three POLICY_SIGNALS (zero where masked), `groups` groups."""
    from tokenfocus.types import PolicyInputs

    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, t, generator=g) < p_valid
    signals = {}
    for name in POLICY_SIGNALS:
        values = torch.full((b, t), 0.5) if constant else torch.rand(b, t, generator=g)
        signals[name] = values * mask
    group_ids = torch.arange(b) // max(1, b // groups)
    advantages = torch.randn(b, generator=g)
    return PolicyInputs(mask, signals, group_ids, advantages, progress, step)


def all_policy_specs():
    """One spec per registered policy (combinators wrap two others), with several scopes where they apply."""
    from tokenfocus.policies import POLICIES

    specs = []
    for name, info in POLICIES.entries.items():
        options = info.options()
        if "policies" in options:
            specs.append({"name": name, "policies": [{"name": "quantile", "side": "high"}, {"name": "random"}]})
        elif "scope" in options:
            specs += [{"name": name, "scope": s} for s in ("sequence", "group", "batch")]
        else:
            specs.append({"name": name})
    return specs


# The GSM8K data (openai/grade-school-math, MIT) shipped next to the checkout (/work/shared/data/gsm8k); a clone
# elsewhere uses the first 40 rows of each split, committed in tests/data/gsm8k.
_SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
GSM8K_DIR = _SHARED_GSM8K if (_SHARED_GSM8K / "test.jsonl").is_file() else Path(__file__).parent / "data" / "gsm8k"


def trl_loss_inputs(seed: int, batch: int = 8, prompt_width: int = 5, completion_width: int = 7, vocab: int = 90,
                    group_size: int | None = None) -> dict:
    """A synthetic TRL generation batch for ``_compute_loss``: left-padded prompts (every third row has 2 pads),
    right-padded completions of random length (0..C), random advantages; ``tf_group`` when ``group_size``."""
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(batch, prompt_width, dtype=torch.long)
    prompt_mask[::3, :2] = 0  # left padding
    lengths = torch.randint(0, completion_width + 1, (batch,), generator=g)
    completion_mask = (torch.arange(completion_width)[None] < lengths[:, None]).long()
    inputs = {
        "prompt_ids": torch.randint(3, vocab, (batch, prompt_width), generator=g) * prompt_mask + 2 * (1 - prompt_mask),
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(3, vocab, (batch, completion_width), generator=g),
        "completion_mask": completion_mask,
        "advantages": torch.randn(batch, generator=g),
        "num_items_in_batch": completion_mask.sum(),
    }
    if group_size:
        inputs["tf_group"] = torch.arange(batch) // group_size
    return inputs


def tiny_sft_trainer(tmp_path, trainer_class, max_steps: int = 1, **extra):
    """An SFT trainer (TRL's or a subclass) on a tiny llama and 8 chat prompt/completion rows, batch 4."""
    from datasets import Dataset
    from trl import SFTConfig

    torch.manual_seed(0)
    model, tok = tiny()
    model.train()
    rows = [{"prompt": [{"role": "user", "content": f"{i} plus {i}"}],
             "completion": [{"role": "assistant", "content": f"{2 * i}"}]} for i in range(8)]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=max_steps, learning_rate=1e-3,
                     report_to="none", save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True,
                     logging_steps=1, max_length=64, seed=0)
    return trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, **extra)


def tiny_grpo_args(tmp_path, **overrides):
    """GRPOConfig of the trainer tests: CPU, fp32, no saving or reporting, 8 rows of 4 generations of 5 tokens, one
    step at lr 1e-3, no KL term; ``overrides`` replace any of these."""
    from trl import GRPOConfig

    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                    max_completion_length=5, max_steps=1, learning_rate=1e-3, use_cpu=True, bf16=False, report_to=[],
                    logging_steps=1, save_strategy="no", disable_tqdm=True, beta=0.0, gradient_checkpointing=False)
    return GRPOConfig(**{**settings, **overrides})
