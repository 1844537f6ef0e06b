"""Named loss presets (objective + clipping + aggregation) and the token policy each pairs with.

Each preset reproduces a paper's or TRL loss_type's reduction; see configs/PAPERS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .objective import LossConfig


@dataclass(frozen=True)
class Preset:
    loss: LossConfig
    policy: dict = field(default_factory=lambda: {"name": "full"})
    source: str = ""


_CLIP = dict(objective="clipped", epsilon_low=0.2)
PRESETS: dict[str, Preset] = {
    # TRL 1.16 loss types (GRPOTrainer._compute_loss), uniform weights.
    "grpo": Preset(LossConfig(**_CLIP, epsilon_high=0.2, norm="seq_mean_token_mean"),
                   source="DeepSeekMath, arXiv 2402.03300; TRL loss_type='grpo'"),
    "bnpo": Preset(LossConfig(**_CLIP, epsilon_high=0.2, norm="token_mean", token_count="local"),
                   source="TRL loss_type='bnpo' (local token mean)"),
    "dr_grpo": Preset(LossConfig(**_CLIP, epsilon_high=0.2, norm="seq_sum_const"),
                      source="Understanding R1-Zero-Like Training, arXiv 2503.20783; TRL loss_type='dr_grpo'"),
    "dapo": Preset(LossConfig(**_CLIP, epsilon_high=0.28, norm="token_mean"),
                   source="DAPO, arXiv 2503.14476; TRL loss_type='dapo' (global token mean)"),
    "gspo": Preset(LossConfig(objective="clipped", epsilon_low=3e-4, epsilon_high=4e-4, ratio_level="sequence",
                              norm="seq_mean_token_mean"), source="GSPO, arXiv 2507.18071"),
    "cispo": Preset(LossConfig(objective="cispo", epsilon_high=5.0, norm="token_mean"),
                    source="MiniMax-M1, arXiv 2506.13585; TRL loss_type='cispo'"),
    # Beyond the 80/20 rule, arXiv 2506.01939: DAPO on the top-20% predictive-entropy tokens, selected-token mean.
    "8020": Preset(LossConfig(**_CLIP, epsilon_high=0.28, normalizer="selected"),
                   {"name": "quantile", "signal": "predictive_entropy", "ratio": 0.2, "side": "high"},
                   source="arXiv 2506.01939 (verl token-mean over response_mask x entropy_mask)"),
    # Not All Tokens Learn Alike, arXiv 2605.07660: hard subsets (selected-token mean) and Low2High.
    "random20": Preset(LossConfig(**_CLIP, epsilon_high=0.28, normalizer="selected"),
                       {"name": "random", "ratio": 0.2}, source="arXiv 2605.07660 §1.3"),
    "anchors20": Preset(LossConfig(**_CLIP, epsilon_high=0.28, normalizer="selected"),
                        {"name": "quantile", "signal": "attention_entropy", "ratio": 0.2, "side": "low"},
                        source="arXiv 2605.07660 §1.3"),
    "explorers20": Preset(LossConfig(**_CLIP, epsilon_high=0.28, normalizer="selected"),
                          {"name": "quantile", "signal": "attention_entropy", "ratio": 0.2, "side": "high"},
                          source="arXiv 2605.07660 §1.3"),
    "low2high": Preset(LossConfig(**_CLIP, epsilon_high=0.28),
                       {"name": "low2high", "signal": "attention_entropy"}, source="arXiv 2605.07660 §1.6"),
}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown loss preset {name!r}. Presets: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    return replace(preset, loss=replace(preset.loss, **overrides)) if overrides else preset
