"""cDPO's pair-making settings (``tokenfocus cdpo-weights``, and ``pairs.cdpo`` of a DPO config): read by
``recipes.cdpo``, validated here so a DPO config can check them before any model loads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CDPOWeightsConfig:
    model: str = "smollm2-135m-instruct"
    n_prompts: int = 64
    samples: int = 16
    max_new_tokens: int = 32
    temperature: float = 1.0
    pairs_per_prompt: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_lr: float = 3e-4
    lora_epochs: float = 1.0
    beta_ce: float = 1.0
    only_neg: bool = True
    continuations: int = 16
    check_responses: int = 8
    save_models: bool = True  # positive/ and negative/ beside the pairs file (the critical_token signal reads them)
    seed: int = 0

    def problems(self) -> list[str]:
        found = [f"{name} must be >= 1, got {getattr(self, name)}" for name in
                 ("n_prompts", "samples", "max_new_tokens", "pairs_per_prompt", "lora_r", "lora_alpha")
                 if getattr(self, name) < 1]
        found += [f"{name} must be > 0, got {getattr(self, name)}" for name in ("temperature", "lora_lr", "lora_epochs")
                  if getattr(self, name) <= 0]
        found += [f"{name} must be >= 0, got {getattr(self, name)}" for name in
                  ("beta_ce", "continuations", "check_responses") if getattr(self, name) < 0]
        return found
