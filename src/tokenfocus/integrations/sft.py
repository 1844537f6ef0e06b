"""TRL 1.16 SFTTrainer with one-token rollouts (OTR, arXiv 2509.26313) or the sink decorrelation term
(arXiv 2510.22603): TRL overrides only.

OTR (``otr=OTRConfig(...)``, ``losses.otr``): the loss at every supervised token is a one-step policy gradient over
K tokens sampled from the model's own (detached) distribution there, rewarded 1 for the gold token and -beta_neg
otherwise. One forward (through the wrapped model, returning the final hidden states, not the logits); the LM head
runs in checkpointed tiles over the supervised positions only. Normalized like TRL's SFT loss (tokens in the
batch, or ``num_items_in_batch`` across accumulation). Sampling is seeded by (seed, step, micro-batch), so a
resumed run draws the same tokens. With K = 1 and the gold token forced it is TRL's SFT loss (tested).

Sink decorrelation:

    loss = TRL's SFT loss + lambda * mean_{l < L-1} mean_i cos(h_{l,first}, h_{l,i})^2

over the input positions i (``positions="prompt"``: the tokens without a label, i.e. the prompt under TRL's
completion-only loss; ``"all"``: every real token), the first real token excluded (``losses.sink_decorrelation``).
The layer outputs are captured in the graph (``capture(..., detach=False)``) during TRL's own forward, so
nothing is computed twice. With lambda = 0 the trainer is TRL's SFTTrainer unchanged. Checkpoints are published
whole (``AtomicCheckpoints``).
"""

from __future__ import annotations

from typing import Literal

import torch
from trl import SFTTrainer

from ..capture import capture, layer_output_points
from ..losses import sink_decorrelation
from ..losses.otr import OTRConfig, otr_loss_sum
from ..options import check_choice
from .checkpoints import AtomicCheckpoints

DecorrelatedPositions = Literal["prompt", "all"]


class TokenFocusSFTTrainer(AtomicCheckpoints, SFTTrainer):
    """SFTTrainer (+ OTR, or + ``sink_decorrelation`` lambda on the hidden states of ``decorrelated`` positions)."""

    def __init__(self, *args, sink_decorrelation: float = 0.0, decorrelated: DecorrelatedPositions = "prompt",
                 otr: OTRConfig | None = None, **kwargs):
        check_choice("decorrelated", decorrelated, DecorrelatedPositions, owner="TokenFocusSFTTrainer")
        if sink_decorrelation < 0:
            raise ValueError(f"sink_decorrelation is a loss coefficient >= 0, got {sink_decorrelation}")
        if otr is not None and (otr.problems() or sink_decorrelation):
            raise ValueError("TokenFocusSFTTrainer: " + ("; ".join(otr.problems()) or "OTR and sink_decorrelation "
                                                         "cannot be combined; choose one"))
        super().__init__(*args, **kwargs)
        if otr is not None and (self.args.loss_type != "nll" or self.label_smoother is not None or
                                self.compute_loss_func is not None or self.args.padding_free):
            raise ValueError("TokenFocusSFTTrainer: OTR replaces the NLL loss; leave loss_type 'nll', "
                             "label_smoothing_factor 0, compute_loss_func unset and padding_free false")
        self.tf_sink_decorrelation = float(sink_decorrelation)
        self.tf_decorrelated = decorrelated
        self.tf_otr = otr
        self._tf_draw = (-1, 0)  # (global step, micro-batches drawn in it): the sampling seed

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.tf_otr is not None:
            if return_outputs:
                raise ValueError("TokenFocusSFTTrainer: OTR does not return logits; leave compute_metrics unset")
            return self._otr_loss(model, inputs, num_items_in_batch)
        if self.tf_sink_decorrelation == 0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        unwrapped = self.accelerator.unwrap_model(model)
        points = layer_output_points(unwrapped, last=False)
        ids = inputs["input_ids"]
        real = inputs.get("attention_mask", torch.ones_like(ids)).bool()
        counted = real & inputs["labels"].eq(-100) if self.tf_decorrelated == "prompt" else real
        with capture(unwrapped, points, detach=False) as hidden:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        term = sink_decorrelation([torch.cat(hidden[name]) for name in points], counted,
                                  real.to(torch.uint8).argmax(-1))
        mean = term.per_token.sum() / term.per_token.ne(0).sum().clamp_min(1)
        # TRL's loss is already normalized over the accumulation window when it gets num_items_in_batch
        scale = 1.0 if num_items_in_batch is None else 1.0 / self.current_gradient_accumulation_steps
        loss = loss + self.tf_sink_decorrelation * scale * mean
        mode = "train" if model.training else "eval"
        self._metrics[mode]["sink_decorrelation"].append(term.metrics["loss/sink_decorrelation"])
        return (loss, result[1]) if return_outputs else loss

    def _otr_loss(self, model, inputs, num_items_in_batch):
        mode = "train" if model.training else "eval"
        labels = inputs["labels"]
        kwargs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**kwargs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        hidden = outputs.hidden_states[-1][:, :-1]  # after the final norm; row t predicts token t + 1
        targets = labels[:, 1:].to(hidden.device)
        valid = targets != -100
        step, drawn = self._tf_draw
        self._tf_draw = (self.state.global_step, drawn + 1 if step == self.state.global_step else 1)
        generator = torch.Generator(device=hidden.device).manual_seed(
            (self.args.seed * 1_000_003 + self.state.global_step * 1_009 + self._tf_draw[1]) % 2**63)
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        total, stats = otr_loss_sum(hidden[valid], head.weight, head.bias, targets[valid], self.tf_otr, generator)
        count = valid.sum() if num_items_in_batch is None else num_items_in_batch
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as TRL's SFT loss
        for key, value in stats.items():
            self._metrics[mode][key].append(value)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss
