"""TRL 1.16 SFTTrainer with the sink decorrelation term (arXiv 2510.22603): TRL overrides only.

    loss = TRL's SFT loss + lambda * mean_{l < L-1} mean_i cos(h_{l,first}, h_{l,i})^2

over the input positions i (``positions="prompt"``: the tokens without a label, i.e. the prompt under TRL's
completion-only loss; ``"all"``: every real token), the first real token excluded (``losses.sink_decorrelation``).
The layer outputs are captured in the graph (``capture(..., detach=False)``) during TRL's own forward, so
nothing is computed twice. With lambda = 0 the trainer is TRL's SFTTrainer unchanged. Checkpoints are published
whole (``AtomicCheckpoints``). Issue 14 extends this class with one-token rollouts.
"""

from __future__ import annotations

from typing import Literal

import torch
from trl import SFTTrainer

from ..capture import capture, layer_output_points
from ..losses import sink_decorrelation
from ..options import check_choice
from .checkpoints import AtomicCheckpoints

DecorrelatedPositions = Literal["prompt", "all"]


class TokenFocusSFTTrainer(AtomicCheckpoints, SFTTrainer):
    """SFTTrainer (+ ``sink_decorrelation`` lambda on the hidden states of ``decorrelated`` positions)."""

    def __init__(self, *args, sink_decorrelation: float = 0.0, decorrelated: DecorrelatedPositions = "prompt",
                 **kwargs):
        check_choice("decorrelated", decorrelated, DecorrelatedPositions, owner="TokenFocusSFTTrainer")
        if sink_decorrelation < 0:
            raise ValueError(f"sink_decorrelation is a loss coefficient >= 0, got {sink_decorrelation}")
        super().__init__(*args, **kwargs)
        self.tf_sink_decorrelation = float(sink_decorrelation)
        self.tf_decorrelated = decorrelated

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
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
