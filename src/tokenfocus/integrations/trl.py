"""TRL 1.16 GRPOTrainer with token signals, token policies and tokenfocus losses.

Override points (shared/methods/INTEGRATION_NOTES.md §2.7):
  * ``_generate_and_score_completions``: after TRL generates and scores, one no-grad forward of the rollout
    (old) policy through TRL's own fused-head scorer, with the attention-entropy recorder active when a
    signal needs it, gives attention entropy, predictive entropy (at the sampling temperature) and
    log-probs in one pass. Signals and the policy are computed on the whole generation batch, gathered
    across processes (groups can straddle ranks); each rank keeps its rows. Weights stay fixed for every
    PPO iteration and micro-batch of that generation batch.
  * ``_compute_loss``: TRL's training forward, then ``tokenfocus.losses.compute_loss`` with the policy
    weights and the normalizer of the config, rescaled exactly as TRL rescales ``num_items_in_batch``
    (global count / processes x accumulation steps / steps per generation).
A policy may instead read the *current* policy's predictive entropy (``signal_source="current"``, the 80/20
reference behaviour): then selection runs per micro-batch on the training forward's entropies.
"""

from __future__ import annotations

import time

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from ..capture.entropy_attention import record_attention_entropy
from ..losses import LossConfig, compute_loss
from ..policies import apply_policy
from ..signals.engine import _attention_plan
from ..signals.registry import evaluate, parse_signal_specs
from ..types import AttentionRecord, ForwardCapture, PolicyInputs, TokenBatch

SIGNAL_SOURCES = ("rollout", "current")


def gather_padded(accelerator, tensor: torch.Tensor, pad_value=0) -> torch.Tensor:
    """Gather (B_local, C_local) tensors of every process into (B_total, C_max), padding dim 1."""
    padded = accelerator.pad_across_processes(tensor, dim=1, pad_index=pad_value)
    return accelerator.gather(padded)


def local_rows(accelerator, batch_local: int) -> slice:
    start = accelerator.process_index * batch_local
    return slice(start, start + batch_local)


def signal_summary(values: torch.Tensor, mask: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean and quantiles of a signal over the tokens of ``mask``."""
    selected = values[mask].double()
    if selected.numel() == 0:
        return {}
    q = torch.quantile(selected, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {f"{prefix}/mean": float(selected.mean()), f"{prefix}/q10": float(q[0]), f"{prefix}/q50": float(q[1]),
            f"{prefix}/q90": float(q[2])}


class TokenFocusGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose loss applies a token policy's weights; everything else is TRL's."""

    def __init__(self, *args, signals=(), policy=None, loss: LossConfig | None = None,
                 signal_source: str = "rollout", **kwargs):
        if signal_source not in SIGNAL_SOURCES:
            raise ValueError(f"signal_source={signal_source!r} is not one of {SIGNAL_SOURCES}")
        super().__init__(*args, **kwargs)
        self.tf_signals = parse_signal_specs(signals) if signals else []
        self.tf_policy = policy or {"name": "full"}
        self.tf_loss = loss or LossConfig()
        self.tf_signal_source = signal_source
        if signal_source == "current" and any(s.name != "predictive_entropy" for s in self.tf_signals):
            raise ValueError("signal_source='current' reads the training forward's predictive entropy only")
        self.tf_generation_index = 0

    # -- rollout side ------------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.tf_signal_source == "current":
            return out
        started = time.perf_counter()
        mode = "train" if self.model.training else "eval"
        completion_mask = out["completion_mask"].bool()
        if "tool_mask" in out:
            completion_mask = completion_mask & out["tool_mask"].bool()
        signals = self._rollout_signals(out) if self.tf_signals else {}
        progress = self._progress()
        weights, stats, selected = self._policy_across_processes(completion_mask, signals, out["advantages"],
                                                                 progress)
        out["tf_weights"] = weights
        out["tf_num_selected"] = selected
        for name, value in stats.items():
            self._metrics[mode][name].append(value)
        self._metrics[mode]["time/signals_policy_s"].append(time.perf_counter() - started)
        self.tf_generation_index += 1
        return out

    def _progress(self) -> float:
        max_steps = max(1, int(self.state.max_steps or 1))
        return min(1.0, self.state.global_step / max_steps)

    @torch.no_grad()
    def _rollout_signals(self, out) -> dict[str, torch.Tensor]:
        """(B_local, C) signals from one no-grad forward of the rollout policy (TRL's fused-head scorer)."""
        prompt_ids, prompt_mask = out["prompt_ids"], out["prompt_mask"]
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        width = completion_ids.size(1)
        unwrapped = self.accelerator.unwrap_model(self.model)
        num_layers = unwrapped.config.num_hidden_layers
        layers, record_sink, backend, precision = _attention_plan(self.tf_signals, num_layers)
        batch_size = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        recorder_cm = (record_attention_entropy(unwrapped, layers, backend=backend, record_sink=record_sink,
                                                precision=precision) if layers else None)
        was_training = self.model.training
        self.model.eval()  # no dropout in the signal pass
        try:
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                if recorder_cm is None:
                    logps, entropies, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, width, batch_size, compute_entropy=True)
                    records = {}
                else:
                    with recorder_cm as recorder:
                        logps, entropies, _ = self._get_per_token_logps_and_entropies(
                            self.model, input_ids, attention_mask, width, batch_size, compute_entropy=True)
                    records = recorder.result()
        finally:
            self.model.train(was_training)
        full = attention_mask.shape[1]
        response_mask = torch.zeros_like(attention_mask, dtype=torch.bool)
        response_mask[:, full - width:] = completion_mask.bool()
        batch = TokenBatch(input_ids, attention_mask.bool(), response_mask)

        def to_full(values):  # (B, C) completion layout -> (B, T) token layout (same token index)
            padded = torch.zeros(attention_mask.shape, dtype=torch.float32, device=values.device)
            padded[:, full - width:] = values.float()
            return padded

        capture = ForwardCapture(
            batch=batch, num_layers=num_layers,
            attention={k: AttentionRecord(r.entropy, r.n_keys, r.sink_prob) for k, r in records.items()},
            logprobs=to_full(logps), predictive_entropy=to_full(entropies),
        )
        return {spec.label: evaluate(spec, capture)[:, full - width:] for spec in self.tf_signals}

    def _policy_across_processes(self, mask, signals, advantages, progress):
        """Gather the generation batch, apply the policy on all of it, keep this rank's rows."""
        acc = self.accelerator
        b_local, c_local = mask.shape
        mask_all = gather_padded(acc, mask.long()).bool()
        signals_all = {k: gather_padded(acc, v.float()) for k, v in signals.items()}
        advantages_all = acc.gather(advantages.detach().float())
        groups = torch.arange(mask_all.shape[0], device=mask.device) // self.num_generations
        inputs = PolicyInputs(mask_all.cpu(), {k: v.cpu() for k, v in signals_all.items()}, groups.cpu(),
                              advantages_all.cpu(), progress, step=self.state.global_step)
        policy = apply_policy(self.tf_policy, inputs)
        weights_all = policy.weights.to(mask.device)
        selected_mass = weights_all.sum()
        stats = dict(policy.stats)
        kept = (policy.weights > 0) & inputs.mask
        for name, values in inputs.signals.items():
            stats.update(signal_summary(values, inputs.mask, f"signal/{name}"))
            stats.update(signal_summary(values, kept, f"signal/{name}/selected"))
            stats.update(signal_summary(values, inputs.mask & ~kept, f"signal/{name}/unselected"))
        weights = weights_all[local_rows(acc, b_local), :c_local]
        return weights, stats, selected_mass

    # -- loss side -----------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        width = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        mask = mask.bool()
        logps, entropies, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask, width,
                                                                      compute_entropy=True)
        mode = "train" if self.model.training else "eval"
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        acc = self.accelerator
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        valid = acc.gather(mask.sum()).sum().float()
        if self.tf_signal_source == "current":
            # Selection and the token mean are per micro-batch (80/20 reference), then averaged over steps.
            weights, stats, selected = self._policy_across_processes(
                mask, {s.label: entropies.detach() for s in self.tf_signals}, inputs["advantages"], self._progress())
            for name, value in stats.items():
                self._metrics[mode][name].append(value)
            count = selected.float() if self.tf_loss.normalizer == "selected" else valid
            rescale, divisor = acc.num_processes, accumulation
            items = valid
        else:
            # The generation batch's global count, rescaled as TRL rescales num_items_in_batch.
            weights = inputs.get("tf_weights")
            items = inputs["num_items_in_batch"].float()
            count = inputs["tf_num_selected"].float() if self.tf_loss.normalizer == "selected" else items
            rescale = acc.num_processes * (accumulation / self.args.steps_per_generation if mode == "train" else 1)
            divisor = 1
        token_global = self.tf_loss.norm == "token_mean" and self.tf_loss.token_count == "global"
        loss, metrics = compute_loss(
            self.tf_loss, logps, old, inputs["advantages"], mask, weights,
            ref_logprobs=inputs.get("ref_per_token_logps"), entropies=entropies,
            max_length=self.max_completion_length,
            global_count=count / rescale if token_global else None,
            global_valid_count=items / rescale if token_global else None,
        )
        loss = loss / (divisor if token_global else accumulation)
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        with torch.no_grad():
            self._metrics[mode]["entropy"].append(float(entropies[mask].mean()) if mask.any() else 0.0)
        return loss
