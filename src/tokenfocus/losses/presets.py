"""Loss presets: objective + clipping + aggregation, one per paper or TRL ``loss_type``.

A loss preset is only the loss. A *method* (signals + token policy + loss) is defined once, in
``tokenfocus/config/methods/<name>.yaml``, and refers to one of these by name (``loss: {preset: dapo}``).
"""

from __future__ import annotations

from dataclasses import replace

from .objective import LossConfig

_CLIP = dict(objective="clipped", epsilon_low=0.2)
LOSS_PRESETS: dict[str, LossConfig] = {
    # TRL 1.16 loss types (GRPOTrainer._compute_loss); tested equal to TRL with uniform weights.
    "grpo": LossConfig(**_CLIP, epsilon_high=0.2, norm="seq_mean_token_mean"),  # arXiv 2402.03300
    "bnpo": LossConfig(**_CLIP, epsilon_high=0.2, norm="token_mean", token_count="local"),  # local token mean
    "dr_grpo": LossConfig(**_CLIP, epsilon_high=0.2, norm="seq_sum_const"),  # arXiv 2503.20783
    "dapo": LossConfig(**_CLIP, epsilon_high=0.28, norm="token_mean"),  # arXiv 2503.14476, global token mean
    "gspo": LossConfig(objective="clipped", epsilon_low=3e-4, epsilon_high=4e-4, ratio_level="sequence",
                       norm="seq_mean_token_mean"),  # arXiv 2507.18071
    "cispo": LossConfig(objective="cispo", epsilon_high=5.0, norm="token_mean"),  # MiniMax-M1, arXiv 2506.13585
}


def loss_preset(name: str, **overrides) -> LossConfig:
    """The named loss with ``overrides`` (any ``LossConfig`` field) applied."""
    if name not in LOSS_PRESETS:
        raise ValueError(f"Unknown loss preset {name!r}. Presets: {', '.join(sorted(LOSS_PRESETS))}")
    return replace(LOSS_PRESETS[name], **overrides) if overrides else LOSS_PRESETS[name]
