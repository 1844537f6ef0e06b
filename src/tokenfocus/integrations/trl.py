"""TRL 1.16 GRPOTrainer with token signals, token policies and tokenfocus losses.

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
Selection runs on the whole generation batch gathered across processes (groups may straddle ranks; each row
carries its group id through TRL's shuffle); each rank keeps its rows. The loss is
``tokenfocus.losses.compute_loss`` with the configured normalizer, rescaled exactly as TRL rescales
``num_items_in_batch`` (global count / processes x accumulation steps / steps per generation).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from ..capture.entropy_attention import record_attention_entropy
from ..diagnostics import (CountSketch, entropy_dynamics, geometry, group_subset_gradients, informative_groups,
                           trainable_parameters)
from ..losses import LossConfig, clipped_surrogate, compute_loss
from ..policies import apply_policy
from ..signals.engine import _attention_plan, needs_key_mass
from ..signals.registry import evaluate, parse_signal_specs
from ..types import AttentionRecord, ForwardCapture, PolicyInputs, TokenBatch, prompt_keys

SIGNAL_SOURCES = ("rollout", "current")
# Gradient geometry + entropy dynamics every `every` optimizer steps from step `start`, on the current generation batch
# (RL_TOKEN_CREDIT.md §1.7-1.8): subsets of `ratio` by attention entropy of `layers`, gradients count-sketched
# to `project_dim` (None: exact), `bootstrap` resamples of prompt groups.
DIAGNOSTIC_DEFAULTS = {"every": 10, "start": 0, "ratio": 0.2, "layers": "middle", "project_dim": 4096, "bootstrap": 8,
                       "exclude_embeddings": True, "seed": 0, "min_groups": 2}
SIGNAL_PASSES = ("auto", "separate", "fused")


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
    """GRPOTrainer whose loss applies a token policy's weights; generation, rewards and logging are TRL's."""

    def __init__(self, *args, signals=(), policy=None, loss: LossConfig | None = None,
                 signal_source: str = "rollout", signal_pass: str = "auto", diagnostics: dict | None = None,
                 **kwargs):
        if signal_source not in SIGNAL_SOURCES:
            raise ValueError(f"signal_source={signal_source!r} is not one of {SIGNAL_SOURCES}")
        if signal_pass not in SIGNAL_PASSES:
            raise ValueError(f"signal_pass={signal_pass!r} is not one of {SIGNAL_PASSES}")
        super().__init__(*args, **kwargs)
        self.tf_signals = parse_signal_specs(signals) if signals else []
        marked = [spec.label for spec in self.tf_signals if "key_mass" in spec.entry.requires
                  and {**spec.entry.options(), **spec.options}.get("keys") != "prompt"]
        if marked:  # the trainer can mark the prompt, not caller-given spans: refuse rather than mark the wrong keys
            raise ValueError(f"signals {marked}: in training, attention_mass supports keys='prompt' only; "
                             "keys='marked' needs key_marks, which only compute_signals(..., key_marks=...) takes")
        self.tf_policy = policy or {"name": "full"}
        self.tf_loss = loss or LossConfig()
        self.tf_signal_source = signal_source
        if signal_source == "current" and any(s.name != "predictive_entropy" for s in self.tf_signals):
            raise ValueError("signal_source='current' reads the training forward's predictive entropy only")
        one_step = (self.args.gradient_accumulation_steps == 1 and self.args.steps_per_generation == 1
                    and self.num_iterations == 1)
        if signal_pass == "fused" and not one_step:
            raise ValueError("signal_pass='fused' needs gradient_accumulation_steps = steps_per_generation = "
                             "num_iterations = 1 (the training forward must see the rollout weights and the whole "
                             "generation batch); use 'auto' or 'separate'")
        self.tf_in_loss = signal_source == "current" or (signal_pass != "separate" and one_step)
        self.tf_pass = "current" if signal_source == "current" else ("fused" if self.tf_in_loss else "separate")
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.tf_layers, self.tf_record_sink, self.tf_backend, self.tf_precision = _attention_plan(
            self.tf_signals, unwrapped.config.num_hidden_layers)
        self.tf_diagnostics = {**DIAGNOSTIC_DEFAULTS, **diagnostics} if diagnostics else None
        unknown = sorted(set(diagnostics or {}) - set(DIAGNOSTIC_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown diagnostics option(s) {unknown}; valid: {sorted(DIAGNOSTIC_DEFAULTS)}")
        if self.tf_diagnostics and self.accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
            raise ValueError("gradient diagnostics run on the main process only; they support single-process and "
                             "DDP runs, not FSDP / DeepSpeed (sharded parameters)")
        self.tf_last_diag_step = -1
        self.tf_diag_pending = False
        self.tf_local_rewards = None

    # -- shared -------------------------------------------------------------------------------------------

    @contextmanager
    def _recorder(self, specs=None, prompt_mask=None, width: int = 0):
        """The attention recorder the specs need (None when they need none). With ``prompt_mask`` (B, P) and
        signals that read attention mass (``attention_mass``), the prompt keys are marked for it."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if specs is None:
            layers, sink, backend, precision = self.tf_layers, self.tf_record_sink, self.tf_backend, self.tf_precision
        else:
            layers, sink, backend, precision = _attention_plan(specs, unwrapped.config.num_hidden_layers)
        if not layers:
            yield None
            return
        with record_attention_entropy(unwrapped, layers, backend=backend, record_sink=sink,
                                      precision=precision) as recorder:
            if prompt_mask is not None and needs_key_mass(self.tf_signals if specs is None else specs):
                completion = torch.zeros(prompt_mask.shape[0], width, dtype=torch.bool, device=prompt_mask.device)
                recorder.key_marks = torch.cat([prompt_mask.bool(), completion], dim=1)
            yield recorder

    def _progress(self) -> float:
        return min(1.0, self.state.global_step / max(1, int(self.state.max_steps or 1)))

    def _signals_from_forward(self, input_ids, attention_mask, completion_mask, logps, entropies, records,
                              specs=None):
        """(B, C) signals from one forward's captures: attention records, TRL's log-probs and entropies."""
        full, width = attention_mask.shape[1], completion_mask.shape[1]
        response_mask = torch.zeros_like(attention_mask, dtype=torch.bool)
        response_mask[:, full - width:] = completion_mask.bool()

        def to_tokens(values):  # (B, C) completion layout -> (B, T) token layout, same token index
            out = torch.zeros(attention_mask.shape, dtype=torch.float32, device=values.device)
            out[:, full - width:] = values.detach().float()
            return out

        batch = TokenBatch(input_ids, attention_mask.bool(), response_mask)
        marked = any(r.key_mass is not None for r in records.values())
        capture = ForwardCapture(
            batch=batch,
            num_layers=self.accelerator.unwrap_model(self.model).config.num_hidden_layers,
            attention={k: AttentionRecord(r.entropy, r.n_keys, r.sink_prob, r.key_mass) for k, r in records.items()},
            logprobs=to_tokens(logps), predictive_entropy=to_tokens(entropies),
            key_marks=prompt_keys(batch) if marked else None,
        )
        specs = self.tf_signals if specs is None else specs
        return {spec.label: evaluate(spec, capture)[:, full - width:] for spec in specs}

    def _policy_across_processes(self, mask, signals, advantages, groups, progress):
        """Gather the generation batch from every process, apply the policy on all of it, keep this rank's rows.

        Returns (local weights (B_local, C_local), stats, global selected mass (0-d))."""
        acc = self.accelerator
        b_local, c_local = mask.shape
        mask_all = gather_padded(acc, mask.long()).bool()
        signals_all = {k: gather_padded(acc, v.float()) for k, v in signals.items()}
        inputs = PolicyInputs(mask_all.cpu(), {k: v.cpu() for k, v in signals_all.items()},
                              acc.gather(groups).cpu(), acc.gather(advantages.detach().float()).cpu(), progress,
                              step=self.state.global_step)
        policy = apply_policy(self.tf_policy, inputs)
        stats = dict(policy.stats)
        kept = (policy.weights > 0) & inputs.mask
        for name, values in inputs.signals.items():
            stats.update(signal_summary(values, inputs.mask, f"signal/{name}"))
            stats.update(signal_summary(values, kept, f"signal/{name}/selected"))
            stats.update(signal_summary(values, inputs.mask & ~kept, f"signal/{name}/unselected"))
        weights_all = policy.weights.to(mask.device)
        return weights_all[local_rows(acc, b_local), :c_local], stats, weights_all.sum()

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
        diag = self.tf_diagnostics
        step = self.state.global_step
        if (diag and self.model.training and step >= diag["start"] and (step - diag["start"]) % diag["every"] == 0
                and step != self.tf_last_diag_step):
            self.tf_last_diag_step = self.state.global_step
            self.tf_diag_pending = True
        # A batch where fewer than `min_groups` (default 2: split-half volatility needs two) prompt groups have
        # unequal rewards has (almost) no gradient to split: the diagnosis waits for the next batch that has them.
        if self.tf_diag_pending and self.model.training and self.accelerator.is_main_process:
            if len(informative_groups(out["advantages"], out["tf_group"])) >= max(1, diag["min_groups"]):
                self.tf_diag_pending = False
                self._log(self._diagnose(out))
        if self.tf_in_loss:
            return out
        started = time.perf_counter()
        mask = out["completion_mask"].bool()
        if "tool_mask" in out:
            mask = mask & out["tool_mask"].bool()
        signals = self._rollout_signals(out) if self.tf_signals else {}
        weights, stats, selected = self._policy_across_processes(mask, signals, out["advantages"], out["tf_group"],
                                                                 self._progress())
        out["tf_weights"] = weights
        out["tf_num_selected"] = selected
        stats["time/signal_pass_s"] = time.perf_counter() - started
        self._log(stats)
        return out

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
        try:
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                with self._recorder(specs, out["prompt_mask"], width) as recorder:
                    logps, entropies, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, width, batch_size, compute_entropy=True)
        finally:
            self.model.train(was_training)
        records = recorder.result() if recorder is not None else {}
        return self._signals_from_forward(input_ids, attention_mask, out["completion_mask"], logps, entropies, records,
                                          specs)

    # -- diagnostics --------------------------------------------------------------------------------------

    def _diagnose(self, out) -> dict[str, float]:
        """Gradient geometry of anchors / middle / explorers / random vs full, and entropy dynamics, on this
        process's rows of the generation batch, with the current (= rollout) weights."""
        diag = self.tf_diagnostics
        started = time.perf_counter()
        specs = parse_signal_specs([{"name": "attention_entropy", "layers": diag["layers"]}, "predictive_entropy",
                                    {"name": "attention_mass", "layers": diag["layers"], "keys": "prompt"}])
        signals = self._rollout_signals(out, specs)
        mask = out["completion_mask"].bool()
        groups = out["tf_group"].cpu()
        inputs = PolicyInputs(mask.cpu(), {k: v.float().cpu() for k, v in signals.items()}, groups,
                              out["advantages"].detach().float().cpu(), step=self.state.global_step)
        ratio, seed = diag["ratio"], diag["seed"]

        def subset(spec):
            return apply_policy({**spec, "ratio": ratio, "seed": seed}, inputs).weights > 0

        anchors = subset({"name": "quantile", "signal": "attention_entropy", "side": "low"})
        explorers = subset({"name": "quantile", "signal": "attention_entropy", "side": "high"})
        subsets = {"full": inputs.mask, "random": subset({"name": "random"}), "anchors": anchors,
                   "middle": inputs.mask & ~anchors & ~explorers, "explorers": explorers}
        rewards = self.tf_local_rewards
        correct = (rewards.sum(-1) >= 0.5).cpu() if rewards is not None and len(rewards) == len(mask) else None
        informative = informative_groups(out["advantages"], out["tf_group"])
        metrics = entropy_dynamics(
            inputs.signals["attention_entropy"], inputs.mask, anchors, explorers, inputs.signals["predictive_entropy"],
            correct, subset({"name": "quantile", "signal": "predictive_entropy", "side": "low"}),
            subset({"name": "quantile", "signal": "predictive_entropy", "side": "high"}),
            mass=inputs.signals["attention_mass"])
        unwrapped = self.accelerator.unwrap_model(self.model)
        params = [p for _, p in trainable_parameters(unwrapped, diag["exclude_embeddings"])]
        input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        # Groups whose advantages are all zero contribute exactly zero gradient: only the others are run.
        keep = torch.isin(groups, torch.tensor(informative, dtype=groups.dtype))[:, None]
        subsets = {k: v & keep for k, v in subsets.items()}
        projector = CountSketch(diag["project_dim"], diag["seed"]) if diag["project_dim"] else None
        normalizer = float(mask.sum().clamp(min=1))
        old = out.get("old_per_token_logps")
        grads: dict[str, dict[int, torch.Tensor]] = {k: {} for k in subsets if k != "middle"}
        for group in informative:
            # One forward per prompt group, so each (group, subset) backward runs through that group's rows
            # only (a row's loss depends on its own sequence alone: same gradients, ~B/G times less work).
            rows = (groups == group).nonzero().squeeze(-1).to(input_ids.device)
            with torch.enable_grad():
                logps, _, _ = self._get_per_token_logps_and_entropies(unwrapped, input_ids[rows], attention_mask[rows],
                                                                      out["completion_ids"].size(1))
                terms = clipped_surrogate(logps, logps.detach() if old is None else old[rows], out["advantages"][rows],
                                          mask[rows], epsilon_low=self.tf_loss.epsilon_low,
                                          epsilon_high=self.tf_loss.epsilon_high).per_token
                computed = {k: v[rows.cpu()].to(terms.device).float() for k, v in subsets.items() if k != "middle"}
                part = group_subset_gradients(terms, normalizer, computed, groups[rows.cpu()].to(terms.device), params,
                                              projector, only=[group])
            for name, per_group in part.items():
                grads[name].update(per_group)
        # g_middle = g_full - g_anchors - g_explorers exactly (one normalizer): one backward saved per group.
        grads["middle"] = {g: grads["full"][g] - grads["anchors"][g] - grads["explorers"][g] for g in grads["full"]}
        unwrapped.zero_grad(set_to_none=True)
        counts = {k: int(v.sum()) for k, v in subsets.items()}
        for result in geometry(grads, counts, bootstrap=diag["bootstrap"], seed=diag["seed"]):
            for key, value in result.to_dict().items():
                if key != "name":
                    metrics[f"diag/grad/{result.name}/{key}"] = float(value)
        metrics["diag/informative_groups"] = float(len(informative))
        metrics["time/diagnostics_s"] = time.perf_counter() - started
        return metrics

    # -- loss side ----------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        completion_mask = inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        width = inputs["completion_ids"].size(1)
        mask = (completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]).bool()
        recorder_cm = self._recorder(None, inputs["prompt_mask"], width) if self.tf_in_loss else nullcontext(None)
        with recorder_cm as recorder:
            logps, entropies, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask, width,
                                                                          compute_entropy=True)
        mode = "train" if self.model.training else "eval"
        acc = self.accelerator
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        if self.tf_in_loss:
            # Selection and the token mean over this micro-batch (= the generation batch in the fused pass).
            started = time.perf_counter()
            records = recorder.result() if recorder is not None else {}
            signals = self._signals_from_forward(input_ids, attention_mask, completion_mask, logps, entropies, records)
            weights, stats, selected = self._policy_across_processes(mask, signals, inputs["advantages"],
                                                                     inputs["tf_group"], self._progress())
            stats["time/signal_pass_s"] = time.perf_counter() - started
            self._log(stats)
            items = acc.gather(mask.sum()).sum().float()
            count = selected.float() if self.tf_loss.normalizer == "selected" else items
            rescale, divisor = acc.num_processes, accumulation
        else:
            # The generation batch's global count, rescaled as TRL rescales num_items_in_batch.
            weights = inputs.get("tf_weights")
            items = inputs["num_items_in_batch"].float()
            count = inputs["tf_num_selected"].float() if self.tf_loss.normalizer == "selected" else items
            rescale = acc.num_processes * (accumulation / self.args.steps_per_generation if mode == "train" else 1)
            divisor = 1
        old = inputs.get("old_per_token_logps")
        token_global = self.tf_loss.norm == "token_mean" and self.tf_loss.token_count == "global"
        loss, metrics = compute_loss(
            self.tf_loss, logps, logps.detach() if old is None else old, inputs["advantages"], mask, weights,
            ref_logprobs=inputs.get("ref_per_token_logps"), entropies=entropies,
            max_length=self.max_completion_length,
            global_count=count / rescale if token_global else None,
            global_valid_count=items / rescale if token_global else None,
        )
        loss = loss / (divisor if token_global else accumulation)
        with torch.no_grad():
            metrics["signal/predictive_entropy_train/mean"] = float(entropies[mask].mean()) if mask.any() else 0.0
        self._log(metrics)
        return loss
