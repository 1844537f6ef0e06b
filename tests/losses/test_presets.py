"""Loss presets (losses/presets.py): a name -> a LossConfig; unknown names list the presets."""

from __future__ import annotations

import pytest

from tokenfocus.losses import LOSS_PRESETS, LossConfig, loss_preset


def test_unknown_preset_names_the_presets():
    with pytest.raises(ValueError, match="Unknown loss preset 'daapo'. Presets:"):
        loss_preset("daapo")


def test_presets_are_the_documented_configs_and_take_overrides():
    """TRL's loss types and the papers' settings, as LossConfig fields (presets.py lists the sources)."""
    assert loss_preset("dapo") == LossConfig(epsilon_low=0.2, epsilon_high=0.28, norm="token_mean",
                                             token_count="global")
    assert loss_preset("grpo") == LossConfig(epsilon_high=0.2, norm="seq_mean_token_mean")
    assert loss_preset("bnpo") == LossConfig(epsilon_high=0.2, norm="token_mean", token_count="local")
    assert loss_preset("dr_grpo") == LossConfig(epsilon_high=0.2, norm="seq_sum_const")
    assert loss_preset("gspo").ratio_level == "sequence" and loss_preset("cispo").objective == "cispo"
    assert loss_preset("dapo") is LOSS_PRESETS["dapo"]
    assert loss_preset("dapo", beta=0.04, normalizer="selected") == LossConfig(
        epsilon_high=0.28, beta=0.04, normalizer="selected")
    assert LOSS_PRESETS["dapo"].beta == 0.0  # an override never changes the preset itself
    with pytest.raises(ValueError, match="beta and entropy_coef must be >= 0"):
        loss_preset("dapo", beta=-1.0)
