"""The teacher side of ``TokenFocusGRPOTrainer`` (RL_TOKEN_CREDIT.md §4 HyperEyes, §5 dGRPO, §6 SCOPE): attaching a
teacher with the student's vocabulary, scoring the student's rollout with it after generation (forms "advantage"
and "scope"), SCOPE's per-group perplexity weights, and the per-token reverse KL of form "loss" from the training
forward's final hidden states. A mixin: it reads the trainer's ``tf_teacher``, ``tf_distill``, ``accelerator``,
``args``, ``model`` and TRL's scorer, and is combined with GRPOTrainer in ``integrations.trl``.
"""

from __future__ import annotations

import time

import torch
from trl.models.utils import disable_gradient_checkpointing

from ..losses.distill import weighted_reverse_kl
from ..policies.dual_path import scope_weights
from ..signals.teacher import teacher_scores
from .shared_prefix import shared_prefix_hidden


class TeacherMixin:
    """Teacher scoring, SCOPE weights and the teacher KL of ``TokenFocusGRPOTrainer`` (module docstring)."""

    def _attach_teacher(self, teacher) -> None:
        from trl.trainer.utils import add_fused_lm_head

        student = self.accelerator.unwrap_model(self.model).get_output_embeddings().weight.shape[0]
        vocabulary = teacher.get_output_embeddings().weight.shape[0]
        if vocabulary != student:
            raise ValueError(f"the teacher's vocabulary has {vocabulary} tokens and the student's {student}: "
                             "on-policy distillation scores the student's own token ids, so both need one tokenizer")
        teacher.eval().requires_grad_(False)
        add_fused_lm_head(teacher, temperature=self.temperature)  # TRL's scorer calls it with fused_lm_head=True
        device = torch.device(self.tf_distill.device) if self.tf_distill.device else self.accelerator.device
        self.tf_teacher = teacher.to(device)
        self.tf_teacher_device = device
        head = teacher.get_output_embeddings().weight
        # form "loss" multiplies the teacher's final hidden states by its head beside the student's, in chunks on
        # the student's device: one frozen copy of the head there when the teacher lives elsewhere
        self.tf_teacher_head = head.detach().to(self.accelerator.device) if head.device != torch.device(
            self.accelerator.device) and self.tf_distill.form == "loss" else head

    @torch.no_grad()
    def _teacher_scores(self, out) -> None:
        """The teacher's (B, C) log-probs of the student's completion tokens (``tf_teacher_logps``), and which rows
        failed (``tf_failed``: summed reward <= 0) for the "failed" gate."""
        started = time.perf_counter()
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        batch_size = (self.args.per_device_train_batch_size if self.model.training
                      else self.args.per_device_eval_batch_size)
        device = self.tf_teacher_device  # the teacher's inputs go to its device, its scores come back
        if self.tf_weighting.teacher_kls:  # a vocabulary-KL signal needs the teacher's hidden states: one forward
            self._teacher_signal_scores(out)  # gives both its log-probs and the KLs
        else:
            with self._sharing_prefix():
                out["tf_teacher_logps"] = self._get_per_token_logps_and_entropies(
                    self.tf_teacher, ids.to(device), mask.to(device), out["completion_ids"].size(1), batch_size)[0].to(
                    ids.device)
        rewards = self.tf_local_rewards
        if rewards is None or len(rewards) != len(ids):
            raise ValueError("the teacher's failure gate needs this process's rewards, one row per completion")
        out["tf_failed"] = rewards.sum(-1).to(ids.device) <= 0
        if self.tf_distill.form == "scope":  # sequence weights on whole prompt groups, before TRL splits the batch
            student = out.get("old_per_token_logps")
            if student is None and not self._scope_weights_in_loss():
                with self._sharing_prefix():
                    student = self._get_per_token_logps_and_entropies(self.model, ids, mask,
                                                                      out["completion_ids"].size(1), batch_size)[0]
            if student is not None:
                out["tf_w_student"], out["tf_w_teacher"] = self._scope_weights(student, out)
        self._log({"time/teacher_s": time.perf_counter() - started})

    @torch.no_grad()
    def _teacher_signal_scores(self, out) -> None:
        """What the method's teacher signals read, into ``out``: the teacher's (B, C) log-probs of the rollout
        (``tf_teacher_logps``, shared with forms "advantage" and "scope") and each vocabulary KL the signals need
        (``tf_teacher_kl:<key>``, from one more no-grad forward of the rollout policy for its hidden states)."""
        weighting = self.tf_weighting
        if "tf_teacher_logps" in out and all(f"tf_teacher_kl:{key}" in out for key in weighting.teacher_kls):
            return  # scored already, with the teacher forward of form "advantage" or "scope"
        started = time.perf_counter()
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        batch_size = (self.args.per_device_train_batch_size if self.model.training
                      else self.args.per_device_eval_batch_size)
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, kls = teacher_scores(self.accelerator.unwrap_model(self.model), self.tf_teacher, ids, mask,
                                        out["completion_ids"].size(1), weighting.teacher_kl_options,
                                        temperature=self.temperature, batch_size=batch_size)
        out.setdefault("tf_teacher_logps", logps.to(ids.device))
        for key, values in kls.items():
            out[f"tf_teacher_kl:{key}"] = values.to(ids.device)
        self._log({"time/teacher_signals_s": time.perf_counter() - started})

    def _teacher_record(self, batch):
        """(teacher log-probs, {KL key: values}) of ``batch`` for ``signals_from_forward``; None when no signal
        reads the teacher."""
        if not self.tf_weighting.teacher_needed:
            return None
        return batch["tf_teacher_logps"], {key: batch[f"tf_teacher_kl:{key}"] for key in self.tf_weighting.teacher_kls}

    def _scope_weights_in_loss(self) -> bool:
        """Whether SCOPE's weights can wait for the loss: in training with one optimizer step per generation batch
        and no PPO iterations, the loss receives the whole local generation batch (every prompt group whole) and
        TRL keeps no old log-probs, so the loss's own detached log-probs (the rollout policy's) give the student's
        perplexity without a second forward."""
        return self.model.training and self.args.steps_per_generation == 1

    def _scope_weights(self, student: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """SCOPE's (w_stu, w_tea) per row from the student's (B, C) log-probs of its tokens (no gradient).

        A prompt's G rollouts may sit on several processes (TRL splits the generation batch by rows, and G need not
        divide a process's share), so the per-row perplexities, outcomes and group ids of every process are gathered,
        the weights computed on whole groups, and this process's rows taken back (its rows are contiguous and in
        process order in the gather, as in TRL's own advantage split)."""
        valid = batch["completion_mask"].to(student.dtype)
        lengths = valid.sum(-1).clamp_min(1)
        rows = torch.stack([(student * valid).sum(-1) / lengths, (batch["tf_teacher_logps"] * valid).sum(-1) / lengths,
                            (~batch["tf_failed"]).to(student.dtype), batch["tf_group"].to(student.dtype)], dim=1)
        whole = self.accelerator.gather(rows.double())
        config = self.tf_distill
        w_student, w_teacher = scope_weights(whole[:, 0], whole[:, 1], whole[:, 2] > 0.5, whole[:, 3].round().long(),
                                             tau=config.tau, student_direction=config.student_direction,
                                             teacher_direction=config.teacher_direction)
        mine = slice(self.accelerator.process_index * len(rows), (self.accelerator.process_index + 1) * len(rows))
        return w_student[mine].to(student.dtype), w_teacher[mine].to(student.dtype)

    def _teacher_kl(self, student_final, input_ids, attention_mask, mask, width, completion_ids,
                    coefficients):
        """(sum of ``coefficients`` x KL, the (B, C) KL(pi_S || pi_T) per completion token, detached): the student's
        final hidden states (with grad) and a no-grad teacher forward, both at the rows that predict the completion
        tokens; the gradient is formed in the forward pass (``weighted_reverse_kl``)."""
        with torch.no_grad():
            backbone = self.tf_teacher.get_decoder() if hasattr(self.tf_teacher, "get_decoder") else \
                self.tf_teacher.model
            device = self.tf_teacher_device
            ids, seen = input_ids.to(device), attention_mask.to(device)
            teacher_final = shared_prefix_hidden(backbone, ids, seen, width) if self.tf_shared_prefix else None
            if teacher_final is None:
                teacher_final = backbone(input_ids=ids, attention_mask=seen).last_hidden_state
            teacher_final = teacher_final.to(input_ids.device)
        # row t - 1 predicts token t; counted from the end, as the hidden states may be the shared-prefix suffixes
        rows = slice(-width - 1, -1)
        student_head = self.accelerator.unwrap_model(self.model).get_output_embeddings().weight
        return weighted_reverse_kl(student_final[:, rows], student_head, teacher_final[:, rows], self.tf_teacher_head,
                                   mask, coefficients, completion_ids, estimator=self.tf_distill.estimator,
                                   topk=self.tf_distill.topk, temperature=self.temperature)
