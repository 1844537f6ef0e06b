"""TRL 1.16 GRPOTrainer with token signals, token policies and tokenfocus losses: TRL overrides only.

Where the signals come from (shared/methods/INTEGRATION_NOTES.md §2.5, §2.7):
  * ``signal_source="rollout"`` (default): signals of the rollout (old) policy, fixed for every PPO iteration
    and micro-batch of a generation batch.
      - When the generation batch is one micro-batch per process trained in one optimizer step
        (gradient_accumulation_steps == steps_per_generation == num_iterations == 1), the training forward
        *is* a rollout-policy forward (same weights, no dropout in these models): the signals are captured
        inside it (the attention-entropy recorder on the chosen layers, TRL's fused head for predictive
        entropy and log-probs) and cost no extra forward ("fused" pass).
      - Otherwise one extra no-grad forward through TRL's own scorer runs in ``_generate_and_score_completions``
        (before TRL shuffles and splits the batch), with the recorder active if needed ("separate" pass).
  * ``signal_source="current"``: the training forward's predictive entropy of the current policy, selected per
    micro-batch (the 80/20 reference behaviour).
Counterfactual signals (PGPO's context dependency, Video-KTR's attributions) add one no-grad forward of the rollout
policy per counterfactual context, right after generation: the prompts' span marks (dataset column ``tf_spans``)
become token marks, and TRL's own scorer scores the completions with the evidence hidden (attention mask, same
positions) or the steps shuffled (re-tokenized prompt). Their (B, C) log-probs ride in the batch like TRL's columns.
Weights: ``TokenWeighting`` (policy on the generation batch gathered across processes). Loss:
``losses.compute_loss`` with the denominators of ``losses.token_counts``. Diagnostics: ``diagnostics.diagnose``.
A teacher (``teacher=`` a model with the student's vocabulary, ``distill=losses.DistillConfig``): form "advantage"
scores the rollout with the teacher after generation (TRL's scorer, no grad) and adds coef x (log pi_T - log pi_old)
to the advantages of all or only failed rollouts (dGRPO B, HyperEyes); form "loss" adds coef x the token-mean
reverse KL to the teacher, from the student's final hidden states captured in the training forward (gradient
through the student only) and a no-grad teacher forward (dGRPO A); the teacher side is ``teacher.TeacherMixin``.
``shared_prefix=True``: the training forward and the teacher's scoring run each group's shared prompt once
(``shared_prefix.SharedPrefixMixin``); not with attention signals recorded in the training forward or sink
decorrelation, which read every row's prompt positions. ``shared_prefill=True``: TRL's transformers generation
prefills each group's prompt once and hands its KV cache to the group's rows. Span marks, counterfactual forwards and the separate signal
pass are ``rollout_signals.RolloutSignalsMixin``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from ..capture import capture, layer_output_points
from ..diagnostics import DiagnosticsConfig, diagnose, diagnosis_signals, informative_groups, trainable_parameters
from ..io import POLICY_WEIGHTS_FILE, append_jsonl
from ..losses import (LossConfig, aggregate_coefficients, compute_loss, sink_decorrelation, token_counts,
                      zero_weight_rows_droppable)
from ..losses.distill import DistillConfig, teacher_advantage
from ..options import check_choice
from ..signals import SignalPass, SignalSource, parse_signal_specs
from ..types import PolicyInputs
from .checkpoints import AtomicCheckpoints
from .rollout_signals import RolloutSignalsMixin
from .shared_prefix import SharedPrefixMixin
from .teacher import TeacherMixin
from .token_weights import TokenWeighting


class TokenFocusGRPOTrainer(AtomicCheckpoints, TeacherMixin, RolloutSignalsMixin, SharedPrefixMixin, GRPOTrainer):
    """GRPOTrainer whose loss applies a token policy's weights; generation, rewards and logging are TRL's;
    checkpoints are published whole (``AtomicCheckpoints``)."""

    def __init__(self, *args, signals=(), policy=None, loss: LossConfig | None = None,
                 signal_source: SignalSource = "rollout", signal_pass: SignalPass = "auto",
                 diagnostics: DiagnosticsConfig | None = None, teacher=None, distill: DistillConfig | None = None,
                 shared_prefix: bool = False, shared_prefill: bool = False, **kwargs):
        check_choice("signal_source", signal_source, SignalSource)
        check_choice("signal_pass", signal_pass, SignalPass)
        if (teacher is None) != (distill is None):
            raise ValueError("a teacher and its distill settings go together: pass both or neither")
        if distill is not None and distill.problems():
            raise ValueError("distill: " + "; ".join(distill.problems()))
        super().__init__(*args, **kwargs)
        self.tf_teacher, self.tf_distill = None, distill
        if teacher is not None:
            self._attach_teacher(teacher)
        if self.aux_loss_enabled:  # TRL's loss would add it; ours does not, and must not drop it silently
            raise ValueError(f"{type(self.model).__name__} returns router logits and TRL would add its MoE auxiliary "
                             f"loss (coefficient {self.router_aux_loss_coef}); tokenfocus's loss does not add it. Set "
                             "trl.router_aux_loss_coef: 0 to train without it")
        layers = self.accelerator.unwrap_model(self.model).config.num_hidden_layers
        self.tf_weighting = TokenWeighting(signals, policy, layers, seed=self.args.seed)
        if self.tf_weighting.teacher_needed and self.tf_teacher is None:
            names = [spec.label for spec in self.tf_weighting.signals if "teacher" in spec.entry.requires]
            raise ValueError(f"signals {names} read a teacher's scores: pass teacher= and distill= (in a config, "
                             "teacher: {model: SPEC}; coef: 0 uses it for the signals only)")
        self.tf_loss = loss or LossConfig()
        if signal_source == "current" and any(s.name != "predictive_entropy" for s in self.tf_weighting.signals):
            raise ValueError("signal_source='current' reads the training forward's predictive entropy only")
        one_step = (self.args.gradient_accumulation_steps == 1 and self.args.steps_per_generation == 1
                    and self.num_iterations == 1)
        if signal_pass == "fused" and not one_step:
            raise ValueError("signal_pass='fused' needs gradient_accumulation_steps = steps_per_generation = "
                             "num_iterations = 1 (the training forward must see the rollout weights and the whole "
                             "generation batch); use 'auto' or 'separate'")
        self.tf_in_loss = signal_source == "current" or (signal_pass != "separate" and one_step)
        self.tf_pass = "current" if signal_source == "current" else ("fused" if self.tf_in_loss else "separate")
        if isinstance(diagnostics, dict):
            diagnostics = DiagnosticsConfig(**diagnostics)
        if diagnostics and self.accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
            raise ValueError("gradient diagnostics run on the main process only; they support single-process and "
                             "DDP runs, not FSDP / DeepSpeed (sharded parameters)")
        self.tf_diagnostics = diagnostics
        self.tf_drop_rows = True  # skip the forward of rows the policy cannot weight, where exact (_rows_to_forward)
        if shared_prefix and self.tf_in_loss and self.tf_weighting.plan.layers:
            raise ValueError("shared_prefix: the method records attention in the training forward (fused signal pass), "
                             "which needs every row's whole sequence; use signal_pass: separate, or drop shared_prefix")
        if shared_prefix and self.tf_loss.sink_decorrelation > 0:
            raise ValueError("shared_prefix: sink decorrelation reads every row's prompt hidden states; drop one of "
                             "them")
        if shared_prefill and (self.use_vllm or self.use_transformers_continuous_batching
                               or self.rollout_func is not None):
            raise ValueError("shared_prefill shares the prompt prefill of TRL's transformers generation; vLLM and "
                             "continuous batching cache prompts themselves, and a rollout_func generates itself: "
                             "drop shared_prefill")
        self.tf_shared_prefix = shared_prefix
        self.tf_shared_prefill = shared_prefill
        self.tf_sharing = False  # inside a forward that may share prompts (``_sharing_prefix``)
        self.tf_shared_last = False  # whether the last scoring call shared them
        self.tf_last_diag_step = -1
        self.tf_diag_pending = False
        self.tf_local_rewards = None

    # -- shared -------------------------------------------------------------------------------------------

    def _progress(self) -> float:
        """Training progress p of the batch being weighted: its optimizer step over the optimizer step of the run's
        last weighted batch, so the schedule covers both ends (p = 0 on the first batch, p = 1 on the last).

        Weights are computed once per generation batch, at the start of every ``steps_per_generation *
        num_iterations`` micro-steps (optimizer step ``global_step`` = micro-step // gradient_accumulation_steps),
        so with one generation batch per k optimizer steps p runs over steps 0, k, 2k, ... up to the last
        generation's step, not ``max_steps - 1``; with ``signal_source="current"`` every micro-batch is weighted
        and the last is at step ``max_steps - 1``. A run with a single weighted batch (``max_steps = 1``, or one
        generation batch for the whole run) has p = 0: its one batch is the first, and the schedule's start is
        what any run's first batch gets. A resumed run that regenerates off the grid keeps p = step / last <= 1.
        """
        max_steps, accumulation = max(1, int(self.state.max_steps or 1)), self.args.gradient_accumulation_steps
        every = accumulation if self.tf_pass == "current" else self.args.steps_per_generation * self.num_iterations
        last = (max_steps * accumulation - 1) // every * every // accumulation  # optimizer step of the last batch
        return min(1.0, self.state.global_step / last) if last > 0 else 0.0

    def _weights(self, mask, signals, advantages, groups, measured=None):
        progress = self._progress()
        weights, stats, selected, histogram = self.tf_weighting.weights(
            self.accelerator, mask, signals, advantages, groups, progress, self.state.global_step, measured)
        if self.model.training and self.accelerator.is_main_process:
            append_jsonl(Path(self.args.output_dir) / POLICY_WEIGHTS_FILE,
                         {"step": self.state.global_step, "progress": progress, **histogram})
        return weights, stats, selected

    def _log(self, stats: dict[str, float]) -> None:
        mode = "train" if self.model.training else "eval"
        for name, value in stats.items():
            self._metrics[mode][name].append(value)

    # -- rollout side -------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.tf_local_rewards = rewards.detach()  # (B_local, n_funcs), kept for the diagnostics' correct split
        return rewards

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        b_local = out["completion_ids"].shape[0]
        rows = torch.arange(b_local, device=out["completion_ids"].device) + self.accelerator.process_index * b_local
        out["tf_group"] = rows // self.num_generations  # survives TRL's shuffle (batch-first)
        if self.tf_weighting.roles:
            started = time.perf_counter()
            self._prompt_context(inputs, out)
            self._log({"time/counterfactual_s": time.perf_counter() - started})
        self._maybe_diagnose(out)
        if self.tf_teacher is not None and self.tf_distill.form in ("advantage", "scope"):
            self._teacher_scores(out)
        if self.tf_weighting.teacher_needed:
            self._teacher_signal_scores(out)
        if self.tf_in_loss:
            return out
        started = time.perf_counter()
        mask = out["completion_mask"].bool()
        if "tool_mask" in out:
            mask = mask & out["tool_mask"].bool()
        signals = self._rollout_signals(out) if self.tf_weighting.signals else {}
        out["tf_weights"], stats, out["tf_num_selected"] = self._weights(mask, signals, out["advantages"],
                                                                         out["tf_group"])
        stats["time/signal_pass_s"] = time.perf_counter() - started
        self._log(stats)
        return out

    # -- diagnostics --------------------------------------------------------------------------------------

    def _maybe_diagnose(self, out) -> None:
        """Schedule a diagnosis every ``every`` steps; run it on the first batch with ``min_groups`` informative
        prompt groups (a batch whose groups all have equal rewards has no gradient to split), clamped with a
        warning to the groups this process's batch holds (``DiagnosticsConfig.groups_required``)."""
        config, step = self.tf_diagnostics, self.state.global_step
        if config is None or not self.model.training:
            return
        if config.due(step) and step != self.tf_last_diag_step:
            self.tf_last_diag_step = step
            self.tf_diag_pending = True
        if self.tf_diag_pending and self.accelerator.is_main_process:
            required = config.groups_required(int(out["tf_group"].unique().numel()))
            if len(informative_groups(out["advantages"], out["tf_group"])) >= max(1, required):
                self.tf_diag_pending = False
                started = time.perf_counter()
                metrics = self._diagnose(out)
                metrics["diag/min_groups"] = float(required)
                metrics["time/diagnostics_s"] = time.perf_counter() - started
                self._log(metrics)

    def _diagnose(self, out) -> dict[str, float]:
        """``diagnostics.diagnose`` on this process's rows of the generation batch, with the current (= rollout)
        weights; TRL's scorer computes each prompt group's log-probs with gradient."""
        config = self.tf_diagnostics
        signals = self._rollout_signals(out, parse_signal_specs(diagnosis_signals(config)))
        mask = out["completion_mask"].bool()
        inputs = PolicyInputs(mask.cpu(), {k: v.float().cpu() for k, v in signals.items()}, out["tf_group"].cpu(),
                              out["advantages"].detach().float().cpu(), step=self.state.global_step,
                              seed=self.args.seed)
        rewards = self.tf_local_rewards
        correct = (rewards.sum(-1) >= 0.5).cpu() if rewards is not None and len(rewards) == len(mask) else None
        unwrapped = self.accelerator.unwrap_model(self.model)
        input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)

        def logprobs_fn(rows):
            return self._get_per_token_logps_and_entropies(unwrapped, input_ids[rows], attention_mask[rows],
                                                           out["completion_ids"].size(1))[0]

        def logit_norm_fn(rows):  # ||e_y - softmax(z / T)|| per completion token: one extra no-grad forward
            from ..diagnostics import completion_logit_gradient_norm

            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                return completion_logit_gradient_norm(unwrapped, input_ids[rows], attention_mask[rows],
                                                      out["completion_ids"].size(1), temperature=self.temperature)

        params = [p for _, p in trainable_parameters(unwrapped, config.exclude_embeddings)]
        metrics = diagnose(config, inputs, out["advantages"], mask, logprobs_fn, params,
                           old_logprobs=out.get("old_per_token_logps"), correct=correct,
                           completion_ids=out["completion_ids"], logit_norm_fn=logit_norm_fn,
                           epsilon_low=self.tf_loss.epsilon_low, epsilon_high=self.tf_loss.epsilon_high)
        unwrapped.zero_grad(set_to_none=True)
        return metrics

    # -- loss side ----------------------------------------------------------------------------------------

    @staticmethod
    def _loss_mask(inputs) -> torch.Tensor:
        completion_mask = inputs["completion_mask"]
        return (completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]).bool()

    def _rows_to_forward(self, inputs, mask) -> torch.Tensor | None:
        """(B,) bool: the rows of this micro-batch that can carry weight, when the others can skip the forward and
        backward without changing the loss or its gradient (``zero_weight_rows_droppable``, no teacher, training);
        None = all rows. Known before the forward in the separate pass (its weights) and for a policy with a
        rollout-level stage (D3S); at least one row stays, so every process runs a forward and a backward."""
        if not (self.tf_drop_rows and self.model.training and self.tf_teacher is None
                and zero_weight_rows_droppable(self.tf_loss)):
            return None
        if self.tf_in_loss:
            rows = self.tf_weighting.rows_before_forward(self.accelerator, mask, inputs["advantages"],
                                                         inputs["tf_group"], self._progress(), self.state.global_step)
        else:
            rows = None if inputs.get("tf_weights") is None else ((inputs["tf_weights"] * mask) > 0).any(-1)
        if rows is None or bool(rows.all()):
            return None
        if not rows.any():
            rows = rows.clone()
            rows[0] = True
        return rows

    def _compute_loss(self, model, inputs):
        full_mask, whole = self._loss_mask(inputs), inputs
        rows = self._rows_to_forward(inputs, full_mask)
        if rows is not None:  # the zero-weight rows leave the batch: same loss, less forward and backward
            b = full_mask.shape[0]
            inputs = {k: v[rows] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == b else v
                      for k, v in inputs.items()}
            self._log({"policy/rows_forwarded": float(rows.double().mean())})
        completion_mask = inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        width = inputs["completion_ids"].size(1)
        mask = self._loss_mask(inputs)
        unwrapped = self.accelerator.unwrap_model(self.model)
        recording = (self.tf_weighting.recorder(unwrapped, inputs["prompt_mask"], width,
                                                evidence=inputs.get("tf_evidence"))
                     if self.tf_in_loss else nullcontext(None))
        decorrelate = self.tf_loss.sink_decorrelation > 0
        hidden_points = layer_output_points(unwrapped, last=False) if decorrelate else {}
        distill_loss = self.tf_teacher is not None and self.tf_distill.form == "loss"
        if distill_loss:
            hidden_points = {**hidden_points, "final_norm": None}
        with recording as recorder, capture(unwrapped, hidden_points, detach=False) as hidden, self._sharing_prefix():
            logps, entropies, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask, width,
                                                                          compute_entropy=True)
        shared = self.tf_shared_last  # then the last captured final hidden states are the rows' suffixes
        training = self.model.training
        acc = self.accelerator
        accumulation = self.current_gradient_accumulation_steps if training else 1
        if self.tf_in_loss:
            # Selection and the token mean over this micro-batch (= the generation batch in the fused pass).
            started = time.perf_counter()
            records = recorder.result() if recorder is not None else {}
            signals = self.tf_weighting.signals_from_forward(
                input_ids, attention_mask, completion_mask, logps, entropies, records,
                counterfactual=self._counterfactual(inputs), evidence=inputs.get("tf_evidence"),
                teacher=self._teacher_record(inputs))
            if rows is not None:  # the policy sees the whole batch (dropped rows: zero signals, zero weight)
                signals = {k: v.new_zeros(full_mask.shape).index_put((rows,), v) for k, v in signals.items()}
                weights, stats, selected = self._weights(full_mask, signals, whole["advantages"], whole["tf_group"],
                                                         measured=rows)
                weights = weights[rows]
            else:
                weights, stats, selected = self._weights(mask, signals, inputs["advantages"], inputs["tf_group"])
            stats["time/signal_pass_s"] = time.perf_counter() - started
            self._log(stats)
            counts = token_counts(self.tf_loss, acc.gather(full_mask.sum()).sum(), selected,
                                  num_processes=acc.num_processes, accumulation=accumulation,
                                  counted_over="micro_batch")
        else:
            # The generation batch's global count, rescaled as TRL rescales num_items_in_batch.
            weights = inputs.get("tf_weights")
            counts = token_counts(self.tf_loss, inputs["num_items_in_batch"], inputs["tf_num_selected"],
                                  num_processes=acc.num_processes, accumulation=accumulation,
                                  steps_per_generation=self.args.steps_per_generation if training else 1)
        old = inputs.get("old_per_token_logps")
        advantages = inputs["advantages"]
        if self.tf_teacher is not None and self.tf_distill.form == "advantage":
            gate = inputs["tf_failed"] if self.tf_distill.gate == "failed" else None
            advantages = teacher_advantage(advantages, inputs["tf_teacher_logps"],
                                           logps.detach() if old is None else old, mask, self.tf_distill.coef, gate)
        elif self.tf_teacher is not None and self.tf_distill.form == "scope":
            if "tf_w_student" not in inputs:  # deferred to the loss (``_scope_weights_in_loss``)
                inputs = dict(inputs)
                inputs["tf_w_student"], inputs["tf_w_teacher"] = self._scope_weights(logps.detach(), inputs)
            # failed rollouts: w_tea x (log pi_T - log pi_old) as token advantage (+ A_i when rl); correct: A_i or 0
            base = advantages if self.tf_distill.rl else torch.zeros_like(advantages)
            advantages = teacher_advantage(base, inputs["tf_teacher_logps"], logps.detach() if old is None else old,
                                           mask, 1.0, inputs["tf_failed"])
            advantages = torch.where(inputs["tf_failed"][:, None], base[:, None] + (advantages - base[:, None])
                                     * inputs["tf_w_teacher"][:, None], advantages)
        # vLLM sampler correction, computed (truncated or masked, and logged as sampling/importance_sampling_ratio/*)
        # by TRL's _generate_and_score_completions; TRL's loss multiplies its policy term by it under this condition.
        correct = self.use_vllm and self.vllm_importance_sampling_correction
        loss, metrics = compute_loss(
            self.tf_loss, logps, logps.detach() if old is None else old, advantages, mask, weights,
            ref_logprobs=inputs.get("ref_per_token_logps"), entropies=entropies,
            max_length=self.max_completion_length, global_count=counts.global_count,
            global_valid_count=counts.global_valid_count,
            importance_ratio=inputs.get("importance_sampling_ratio") if correct else None,
        )
        loss = loss / counts.loss_divisor
        if self.tf_teacher is not None and self.tf_distill.form == "scope" and self.tf_distill.mle_coef > 0:
            # SCOPE's correct path: w_stu-weighted NLL over the correct rollouts' tokens (a mean over this
            # micro-batch's correct tokens, averaged over the accumulation steps)
            correct = mask & ~inputs["tf_failed"][:, None]
            nll = -(logps * correct * inputs["tf_w_student"][:, None]).sum() / correct.sum().clamp_min(1)
            loss = loss + self.tf_distill.mle_coef * nll / accumulation
            metrics["loss/scope_mle"] = float(nll.detach())
        if distill_loss:  # dGRPO form A: + coef x token-mean KL(pi_S || pi_T), gradient through the student only
            final = hidden["final_norm"][-1] if shared else torch.cat(hidden["final_norm"])
            count = counts.global_valid_count if counts.global_valid_count is not None else (  # as the KL term of
                counts.global_count if self.tf_loss.normalizer == "all" else None)            # compute_loss
            coefficients = aggregate_coefficients(mask, self.tf_loss.norm, "all", global_count=count,
                                                  max_length=self.max_completion_length)
            term, kl = self._teacher_kl(final, input_ids, attention_mask, mask, width, inputs["completion_ids"],
                                        coefficients)
            distilled = self.tf_distill.coef * term / counts.loss_divisor
            loss = loss + distilled if self.tf_distill.rl else distilled  # rl false: on-policy distillation only
            metrics["loss/teacher_kl"] = float(kl.detach()[mask].mean()) if mask.any() else 0.0
        if decorrelate:  # a mean over this micro-batch's prompt positions, averaged over the accumulation steps
            prompt = torch.cat([inputs["prompt_mask"].bool(), torch.zeros_like(mask)], dim=1)
            term = sink_decorrelation([torch.cat(hidden[name]) for name in hidden_points if name != "final_norm"],
                                      prompt,
                                      attention_mask.bool().to(torch.uint8).argmax(-1))
            counted = term.per_token.ne(0).sum().clamp_min(1)
            loss = loss + self.tf_loss.sink_decorrelation * term.per_token.sum() / counted / accumulation
            metrics.update(term.metrics)
        with torch.no_grad():
            metrics["signal/predictive_entropy_train/mean"] = float(entropies[mask].mean()) if mask.any() else 0.0
        self._log(metrics)
        return loss
