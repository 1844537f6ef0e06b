"""TRL 1.16 DPOTrainer with per-token weights (TAB-PO, cDPO) and TAB-PO's barrier: TRL overrides only.

The path of a token weight (INTEGRATION_NOTES.md §3.2):
1. ``_prepare_dataset``: after TRL tokenizes, each pair gets ``tf_chosen_weights`` / ``tf_rejected_weights``, one
   weight per completion token: built from the ids (``diff``, ``pattern``, ``uniform``) or read from the dataset's
   ``chosen_weights`` / ``rejected_weights`` columns (``column``; cDPO's precomputed weights), whose lengths must
   equal the tokenized completions.
2. The collator (``WeightPlacingCollator`` around TRL's) places them at the completion positions of TRL's
   ``[chosen; rejected]`` right-padded rows, truncated exactly as TRL truncates: ``token_weights`` (2B, S).
3. ``_compute_loss`` pops ``token_weights`` before any forward (TRL forwards every other key into the model), shifts
   it by one (column j of the log-probs scores token j + 1) and computes ``losses.token_weighted_dpo`` from the
   policy's and the reference's per-token log-probs, plus ``barrier`` x ``losses.tab_barrier`` on the chosen rows.

Plain DPO (uniform weights, no barrier) is TRL's own ``_compute_loss`` untouched. The token-level path with
uniform weights equals it (tested to 1e-6 on the loss, 1e-4 on the gradient). The token-level path needs the
reference's per-token log-probs, so it runs the reference online: ``precompute_ref_log_probs`` (per-sequence sums)
is refused, as are the TRL loss options it does not implement (the config names them before any model loads).
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from ..losses.preference import tab_barrier, token_weighted_dpo
from ..policies.pairs import (
    PairWeighting,
    diff_weights,
    pattern_weights,
    token_level_conflicts,
)
from .checkpoints import AtomicCheckpoints

WEIGHTS_KEY = "token_weights"
CHOSEN, REJECTED = "tf_chosen_weights", "tf_rejected_weights"
USER_COLUMNS = ("chosen_weights", "rejected_weights")  # mode "column": one weight per completion token


def pair_token_weights(example: dict, weighting: PairWeighting, decode) -> dict:
    """``{tf_chosen_weights, tf_rejected_weights}`` of one tokenized pair (``chosen_ids``, ``rejected_ids``)."""
    chosen, rejected = example["chosen_ids"], example["rejected_ids"]
    if weighting.mode == "diff":
        w_chosen, w_rejected = diff_weights(chosen, rejected, weighting.hi, weighting.lo)
    elif weighting.mode == "pattern":
        w_chosen = pattern_weights([decode([t]) for t in chosen], weighting.pattern, weighting.hi, weighting.lo)
        w_rejected = pattern_weights([decode([t]) for t in rejected], weighting.pattern, weighting.hi, weighting.lo)
    elif weighting.mode == "column":
        w_chosen, w_rejected = (list(map(float, example[c] or [])) for c in USER_COLUMNS)
        for side, ids, weights in (("chosen", chosen, w_chosen), ("rejected", rejected, w_rejected)):
            if len(weights) != len(ids):
                raise ValueError(f"{side}_weights has {len(weights)} values but the tokenized {side} completion has "
                                 f"{len(ids)} tokens ({decode(ids)!r}); compute the weights with the model's tokenizer "
                                 "over the completion as DPOTrainer tokenizes it (tokenfocus cdpo-weights does)")
    else:
        w_chosen, w_rejected = [1.0] * len(chosen), [1.0] * len(rejected)
    if not weighting.weight_chosen:
        w_chosen = [1.0] * len(chosen)
    return {CHOSEN: w_chosen, REJECTED: w_rejected}


class WeightPlacingCollator:
    """TRL's preference collator plus ``token_weights`` (2B, S): each pair's weights at its completion positions,
    0 on the prompt and the padding, truncated as TRL truncates the rows."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.inner(examples)
        rows = [[0.0] * len(e["prompt_ids"]) + list(e[CHOSEN]) for e in examples]
        rows += [[0.0] * len(e["prompt_ids"]) + list(e[REJECTED]) for e in examples]
        if self.inner.max_length is not None:
            keep = slice(None, self.inner.max_length) if self.inner.truncation_mode == "keep_start" else \
                slice(-self.inner.max_length, None)
            rows = [row[keep] for row in rows]
        weights = torch.zeros(batch["input_ids"].shape, dtype=torch.float32)
        for i, row in enumerate(rows):
            weights[i, :len(row)] = torch.tensor(row, dtype=torch.float32)
        batch[WEIGHTS_KEY] = weights
        return batch


class TokenFocusDPOTrainer(AtomicCheckpoints, DPOTrainer):
    """DPOTrainer with token weights and TAB-PO's barrier (``PairWeighting``); see the module docstring."""

    def __init__(self, *args, weighting: PairWeighting | None = None, **kwargs):
        self.tf_weighting = weighting or PairWeighting()
        problems = self.tf_weighting.problems()
        if problems:
            raise ValueError("TokenFocusDPOTrainer: " + "; ".join(problems))
        super().__init__(*args, **kwargs)
        if self.args.padding_free:
            raise ValueError("TokenFocusDPOTrainer: padding_free is not supported (token weights ride in padded rows); "
                             "set padding_free: false")
        if self._is_vision_dataset:
            raise ValueError("TokenFocusDPOTrainer: token weights are for text pairs; vision datasets are not "
                             "supported")
        self.data_collator = WeightPlacingCollator(self.data_collator)
        # TRL's sigmoid loss ignores label_smoothing; the token-level loss applies it (cDPO's conservative form)
        self.tf_token_level = self.tf_weighting.token_level or (self.args.label_smoothing > 0
                                                                and list(self.args.loss_type) == ["sigmoid"])
        if self.tf_token_level:
            refused = token_level_conflicts(self.args) + (["an MoE router auxiliary loss; set router_aux_loss_coef: 0"]
                                                          if self.aux_loss_enabled else [])
            if refused:
                raise ValueError("TokenFocusDPOTrainer: the token-level loss does not implement " + "; ".join(refused))

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if self.tf_weighting.mode == "column":
            missing = [c for c in USER_COLUMNS if c not in dataset.column_names]
            if missing:
                raise ValueError(f"weights mode 'column' reads {list(USER_COLUMNS)} from the {dataset_name} dataset, "
                                 f"which lacks {missing}; add them, or choose another weights mode")
        return dataset.map(pair_token_weights, fn_kwargs={"weighting": self.tf_weighting, "decode": tokenizer.decode})

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for name in (CHOSEN, REJECTED):
            if name not in self._signature_columns:
                self._signature_columns.append(name)

    def _compute_loss(self, model, inputs, return_outputs):
        weights = inputs.pop(WEIGHTS_KEY, None)  # never reaches model(...)
        if not self.tf_token_level:
            return super()._compute_loss(model, inputs, return_outputs)
        if return_outputs:
            raise ValueError("TokenFocusDPOTrainer: return_outputs (compute_metrics logits) is not supported with "
                             "token weights; leave compute_metrics unset")
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        mask = completion_mask[:, 1:]
        model_kwargs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps",
                                                                       "ref_rejected_logps")}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True, use_cache=False)
        logps = outputs.log_probs[:, -mask.size(1):]
        ref_logps = self._reference_logps(model_kwargs, labels)[:, -mask.size(1):]
        shifted = torch.ones_like(logps) if weights is None else weights[:, 1:].to(logps.device, logps.dtype)
        terms = token_weighted_dpo(logps, ref_logps, mask, shifted, beta=self.beta,
                                   label_smoothing=self.args.label_smoothing)
        loss = terms.loss.mean()
        chosen_logps, _ = logps.chunk(2)
        chosen_mask, _ = mask.chunk(2)
        if self.tf_weighting.barrier > 0:
            barrier, gate = tab_barrier(chosen_logps, chosen_mask, self.tf_weighting.tau)
            loss = loss + self.tf_weighting.barrier * barrier.mean()
            self._log_mean(mode, "loss/barrier", barrier.detach())
            self._log_mean(mode, "policy/barrier_gated_frac", gate.sum() / chosen_mask.sum().clamp_min(1))
        self._log_pair_metrics(mode, terms, outputs, mask, shifted, inputs["attention_mask"])
        return loss

    def _reference_logps(self, model_kwargs: dict, labels: torch.Tensor) -> torch.Tensor:
        """The reference's per-token log-probs, as TRL obtains the reference (a model, or PEFT adapters off)."""
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if is_peft_model(self.model) and self.ref_model is None:
                unwrapped = self.accelerator.unwrap_model(self.model)
                context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
                reference = self.model
            else:
                context, reference = contextlib.nullcontext(), self.ref_model
            with context:
                return reference(**model_kwargs, labels=labels, fused_lm_head=True, use_cache=False).log_probs

    def _log_mean(self, mode: str, key: str, value: torch.Tensor) -> None:
        self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value.detach().reshape(-1)).float()
                                        .mean().item())

    def _log_pair_metrics(self, mode, terms, outputs, mask, weights, attention_mask) -> None:
        """TRL's DPO metric names (rewards are beta x the weighted log-ratios here), plus the weights' share."""
        chosen_rewards = self.beta * terms.chosen_logratio.detach()
        rejected_rewards = self.beta * terms.rejected_logratio.detach()
        self._log_mean(mode, "rewards/chosen", chosen_rewards)
        self._log_mean(mode, "rewards/rejected", rejected_rewards)
        self._log_mean(mode, "rewards/accuracies", (chosen_rewards > rejected_rewards).float())
        self._log_mean(mode, "rewards/margins", chosen_rewards - rejected_rewards)
        self._log_mean(mode, "logps/chosen", terms.chosen_logps.detach())
        self._log_mean(mode, "logps/rejected", terms.rejected_logps.detach())
        valid = mask.bool()
        if outputs.entropy is not None:
            self._log_mean(mode, "entropy", outputs.entropy[:, -mask.size(1):][valid].mean())
        self._log_mean(mode, "policy/weight_mean", weights[valid].mean())
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
