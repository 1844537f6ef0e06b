"""One prompt forward per group: the rollouts of a GRPO group share their prompt, so its forward (and backward) can
run once and its KV cache serve every completion of the group.

A group of G rollouts of one prompt of P tokens with completions of W tokens costs G·(P+W) token positions in the
plain training forward and backward; with the prefix shared it costs (P-1) + G·(W+1). On the long distractor facts
task (P ≈ 230, W = 32, G = 8) that is 2,096 positions against 485.

The split is one token before the completion: the prefix is the prompt without its last token (its KV cache,
computed with gradient, is repeated to each row by index, which sums the rows' gradients back into the one prefix
forward), and each row's suffix is the prompt's last token followed by the completion, scored with labels as in the
plain forward. Positions and the attention mask are the plain forward's: the cache holds P-1 positions, so the
suffix continues at P-1, and the mask passed is the whole row's (prompt padding included). The log-probs and
entropies equal the plain forward's to float rounding and so do the gradients (tests/integrations/
test_shared_prefix.py).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from ..rollout import prompt_cache


def prefix_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int):
    """(representative rows (U,), row -> group (B,)) for rows whose prompt (ids and mask of the first
    ``prompt_width`` positions) is the same; None when no two rows share one (nothing to save)."""
    key = torch.cat([input_ids[:, :prompt_width], attention_mask[:, :prompt_width].to(input_ids.dtype)], dim=1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    if unique.size(0) == input_ids.size(0):
        return None
    first = torch.full((unique.size(0),), input_ids.size(0), dtype=torch.long, device=input_ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(input_ids.size(0), device=input_ids.device), "amin")
    return first, inverse


def shared_prefix_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        compute_entropy: bool = False):
    """Per-token log-probs (and entropies) of the last ``logits_to_keep`` tokens, as TRL's
    ``_get_per_token_logps_and_entropies`` computes them (fused LM head, labels), with one prefix forward per group
    of rows sharing a prompt. Returns None when it cannot save anything (no shared prompt, a one-token prompt):
    the caller runs the plain forward."""
    prompt_width = input_ids.size(1) - logits_to_keep
    if prompt_width < 2:
        return None
    groups = prefix_groups(input_ids, attention_mask, prompt_width)
    if groups is None:
        return None
    split = prompt_width - 1
    cache = _prefix_cache(model, input_ids, attention_mask, split, groups, logits_to_keep=1)
    suffix_ids = input_ids[:, split:]
    labels = suffix_ids.masked_fill(attention_mask[:, split:] == 0, -100)
    labels[:, 0] = -100  # the prompt's last token: not scored (as in the plain forward)
    out = model(input_ids=suffix_ids, attention_mask=attention_mask, cache=cache, labels=labels,
                fused_lm_head=True)
    logps = out.log_probs[:, -logits_to_keep:]
    entropies = out.entropy[:, -logits_to_keep:] if compute_entropy else None
    return logps, entropies


def shared_prefix_hidden(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int):
    """(B, width + 1, H) final hidden states of a decoder ``backbone`` at the last ``width + 1`` positions (those
    that predict the last ``width`` tokens and the one after), with one prefix forward per shared prompt; None when
    nothing is shared (the caller runs the plain forward and slices the same positions)."""
    prompt_width = input_ids.size(1) - width
    groups = prefix_groups(input_ids, attention_mask, prompt_width) if prompt_width >= 2 else None
    if groups is None:
        return None
    split = prompt_width - 1
    cache = _prefix_cache(backbone, input_ids, attention_mask, split, groups)
    return backbone(input_ids=input_ids[:, split:], attention_mask=attention_mask, cache=cache).last_hidden_state


def _prefix_cache(model, input_ids, attention_mask, split: int, groups, **options):
    """The KV cache of the first ``split`` positions of each group's representative row, repeated to every row by
    index (so the gradient of every row sums back into the one prefix forward)."""
    first, inverse = groups
    out = model(input_ids=input_ids[first, :split], attention_mask=attention_mask[first, :split], use_cache=True,
                **options)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    cache.batch_select_indices(inverse)
    return cache


def shared_prefill_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """For ``generate`` on left-padded prompts: each distinct prompt's KV cache but its last token, computed once and
    selected for every row that has it; None when no two rows share a prompt (or a prompt is one position wide)."""
    groups = prefix_groups(input_ids, attention_mask, input_ids.size(1)) if input_ids.size(1) >= 2 else None
    if groups is None:
        return None
    first, inverse = groups
    return prompt_cache(model, input_ids[first], attention_mask[first], inverse)


@contextmanager
def prefilling_shared_prompts(model):
    """``model.generate`` inside prefills each distinct prompt once (``shared_prefill_cache``) when it is called
    with prompts and a generation config only and that config asks for no cache of its own; any other call is
    passed through as it is."""
    original = model.generate

    def generate(*args, **kwargs):
        config = kwargs.get("generation_config")
        plain = (args or set(kwargs) != {"input_ids", "attention_mask", "generation_config"}
                 or getattr(config, "cache_implementation", None) is not None)
        cache = None if plain else shared_prefill_cache(model, kwargs["input_ids"], kwargs["attention_mask"])
        return original(*args, **kwargs) if cache is None else original(*args, **kwargs, cache=cache)

    model.generate = generate
    try:
        yield
    finally:
        del model.generate


class SharedPrefixMixin:
    """TRL's scorer (``_get_per_token_logps_and_entropies``) with each group's prompt run once, inside
    ``_sharing_prefix`` when the trainer's ``tf_shared_prefix`` is set: the training forward and the teacher's
    scoring, where no hook reads every row's prompt positions. ``tf_shared_last`` says whether the last call shared
    (then captured final hidden states are the rows' suffixes). With ``tf_shared_prefill``, TRL's transformers
    generation prefills each group's prompt once. Combined with GRPOTrainer in ``integrations.trl``."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        plain = (not self.tf_shared_prefill or self.use_vllm or self.use_transformers_continuous_batching
                 or images is not None or bool(multimodal_fields))
        with nullcontext() if plain else prefilling_shared_prompts(self.accelerator.unwrap_model(self.model)):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)

    @contextmanager
    def _sharing_prefix(self):
        """Forwards inside may run each group's shared prompt once (when ``shared_prefix``): the training forward
        and the teacher's scoring, where no hook reads the prompt positions of every row."""
        self.tf_sharing = self.tf_shared_prefix
        try:
            yield
        finally:
            self.tf_sharing = False

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        self.tf_shared_last = False
        if self.tf_sharing and not compute_aux_loss and all(v is None for v in multimodal.values()):
            step = batch_size or input_ids.size(0)
            parts = []
            for start in range(0, input_ids.size(0), step):  # TRL's chunks, each sharing its groups' prompts
                rows = slice(start, start + step)
                with self.accelerator.autocast():
                    shared = shared_prefix_logps(model, input_ids[rows], attention_mask[rows], logits_to_keep,
                                                 compute_entropy)
                if shared is None:
                    break
                parts.append(shared)
            else:
                self.tf_shared_last = True
                return (torch.cat([p[0] for p in parts]),
                        torch.cat([p[1] for p in parts]) if compute_entropy else None, None)
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                          batch_size, compute_entropy, compute_aux_loss, **multimodal)
