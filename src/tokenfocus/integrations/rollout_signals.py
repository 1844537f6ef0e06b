"""The rollout side of ``TokenFocusGRPOTrainer``'s signals (shared/methods/INTEGRATION_NOTES.md §2.5, §2.7): the
prompts' span marks and the counterfactual forwards of the rollout policy (PGPO's context dependency, Video-KTR's
attributions), and the separate signal pass (one no-grad forward through TRL's fused-head scorer, with the attention
recorder when a signal needs it). A mixin: it reads the trainer's ``tf_weighting``, ``accelerator``, ``args``,
``model``, TRL's tokenization and scorer, and the teacher record of ``TeacherMixin``; combined with GRPOTrainer in
``integrations.trl``.
"""

from __future__ import annotations

import torch
from trl.models.utils import disable_gradient_checkpointing

from ..signals import Context, counterfactual_scores
from .prompt_marks import evidence_masked_mask, left_pad, prompt_marks, shuffled_prompts


class RolloutSignalsMixin:
    """Span marks, counterfactual log-probs and the separate signal pass of ``TokenFocusGRPOTrainer``."""

    @torch.no_grad()
    def _prompt_context(self, rows, out) -> None:
        """Span marks of the prompts (``tf_evidence``: (B, P) bool) and the counterfactual forwards' (B, C) log-probs
        (``tf_cf_<kind>``, and ``tf_cf_<kind>_kl`` for the exact KL) of the rollout policy, into ``out``."""
        weighting = self.tf_weighting
        prompt_ids, prompt_mask = out["prompt_ids"], out["prompt_mask"]
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        template = {"chat_template": self.chat_template, **self.chat_template_kwargs}
        marks = prompt_marks(self.processing_class, rows, prompt_ids, prompt_mask, list(weighting.roles), **template)
        if "evidence" in marks:
            out["tf_evidence"] = marks["evidence"]
        full_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        full_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        width = completion_ids.size(1)
        batch_size = (self.args.per_device_train_batch_size if self.model.training
                      else self.args.per_device_eval_batch_size)
        for kind, exact in weighting.counterfactuals.items():
            if kind == "evidence_masked":
                ids, mask = full_ids, evidence_masked_mask(prompt_mask, completion_mask, marks["evidence"])
            else:  # steps_shuffled: TRL's own tokenization of the shuffled prompts
                shuffled = self._tokenize_prompts(shuffled_prompts(rows, self.args.seed, self.state.global_step))[0]
                pad_width = max(prompt_ids.size(1), max(len(r) for r in shuffled))
                ids, mask = left_pad([list(r) for r in shuffled], pad_width, self._tokenizer.pad_token_id,
                                     prompt_ids.device)
                ids, mask = torch.cat([ids, completion_ids], dim=1), torch.cat([mask, completion_mask], dim=1)
            was_training = self.model.training
            self.model.eval()
            try:
                with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                    if exact:
                        logps, kl = counterfactual_scores(
                            self.accelerator.unwrap_model(self.model), Context(full_ids, full_mask),
                            Context(ids, mask), width, exact_kl=True, temperature=self.temperature,
                            batch_size=batch_size)
                        out[f"tf_cf_{kind}_kl"] = kl.to(completion_ids.device)
                    else:
                        logps = self._get_per_token_logps_and_entropies(self.model, ids, mask, width, batch_size)[0]
            finally:
                self.model.train(was_training)
            out[f"tf_cf_{kind}"] = logps.to(completion_ids.device)

    def _counterfactual(self, batch) -> dict:
        """{kind: ((B, C) log-probs, (B, C) KL or None)} of the counterfactual forwards stored in ``batch``."""
        return {kind: (batch[f"tf_cf_{kind}"], batch.get(f"tf_cf_{kind}_kl"))
                for kind in self.tf_weighting.counterfactuals}

    @torch.no_grad()
    def _rollout_signals(self, out, specs=None) -> dict[str, torch.Tensor]:
        """The separate pass: one no-grad forward of the rollout policy through TRL's fused-head scorer."""
        input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        width = out["completion_ids"].size(1)
        batch_size = (self.args.per_device_train_batch_size if self.model.training
                      else self.args.per_device_eval_batch_size)
        was_training = self.model.training
        self.model.eval()  # no dropout in the signal pass
        unwrapped = self.accelerator.unwrap_model(self.model)
        try:
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                with self.tf_weighting.recorder(unwrapped, out["prompt_mask"], width, specs,
                                                evidence=out.get("tf_evidence")) as recorder:
                    logps, entropies, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, width, batch_size, compute_entropy=True)
        finally:
            self.model.train(was_training)
        records = recorder.result() if recorder is not None else {}
        return self.tf_weighting.signals_from_forward(
            input_ids, attention_mask, out["completion_mask"], logps, entropies, records, specs,
            counterfactual=self._counterfactual(out) if specs is None else None, evidence=out.get("tf_evidence"),
            teacher=self._teacher_record(out) if specs is None else None)
