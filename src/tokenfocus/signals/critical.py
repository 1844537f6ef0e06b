"""Critical tokens by contrastive estimation (cDPO, arXiv 2411.19943; RL_TOKEN_CREDIT.md §8).

A positive model (fine-tuned on correct trajectories) and a negative one (on incorrect ones) score each response
token at its predicting position (row t - 1 predicts token t):

    p_ce(y_t) = softmax((1 + beta) z_pos - beta z_neg)[y_t]         (beta = 1: 2 z_pos - z_neg)

A token the positive model disfavours relative to the negative one (low p_ce) is a candidate critical token; cDPO
weights rejected tokens by 1 - p_ce and (optionally) chosen ones by p_ce. The logits are taken in position chunks,
so no (B, T, V) tensor of both models exists at once.

``first_wrong_digit`` is the programmatic label the weights are checked against: the first character where a
response departs from the gold worked solution, when that character is a digit of the response.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..types import ForwardCapture
from .registry import register_signal


@torch.no_grad()
def contrastive_token_probs(positive, negative, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            beta: float = 1.0, chunk: int = 128) -> torch.Tensor:
    """(B, S) p_ce of each token at its own position (column 0 is 0: nothing predicts it); padding gives 0."""
    if beta < 0:
        raise ValueError(f"beta (the contrast strength) must be >= 0, got {beta}")
    hidden = {}
    for name, model in (("pos", positive), ("neg", negative))[:1 if beta == 0 else 2]:  # beta 0: positive's own p
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
        hidden[name] = (out.hidden_states[-1], model.get_output_embeddings())
    probs = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    targets = input_ids[:, 1:]
    for start in range(0, input_ids.size(1) - 1, chunk):
        end = min(start + chunk, input_ids.size(1) - 1)
        z = {name: head(h[:, start:end]).float() for name, (h, head) in hidden.items()}
        logp = torch.log_softmax((1 + beta) * z["pos"] - beta * z["neg"] if beta else z["pos"], dim=-1)
        probs[:, start + 1:end + 1] = logp.gather(-1, targets[:, start:end, None]).squeeze(-1).exp()
    return probs * attention_mask.to(probs.dtype)


def first_wrong_digit(response: str, gold: str) -> int | None:
    """Character index in ``response`` of the first character where it departs from ``gold``, when that character
    is a digit (an arithmetic slip, not a change of format); None otherwise or when they do not differ."""
    for i, (a, b) in enumerate(zip(response, gold)):
        if a != b:
            return i if a.isdigit() else None
    return None


@lru_cache(maxsize=2)
def _contrast_model(path: str):
    """A saved model directory (``tokenfocus cdpo-weights`` writes ``positive/`` and ``negative/``), loaded once."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    if not (Path(path) / "config.json").is_file():
        raise ValueError(f"critical_token: {path!r} is not a model directory (no config.json); pass the positive/ "
                         "and negative/ directories that tokenfocus cdpo-weights writes beside its pairs file")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@register_signal("critical_token", cost="extra-models")
def critical_token(capture: ForwardCapture, positive: str = "", negative: str = "", beta: float = 1.0) -> torch.Tensor:
    """cDPO's criticality 1 - p_ce(y_t), p_ce = softmax((1 + beta) z_pos - beta z_neg)[y_t] from the positive and
    negative models (directories) at the predicting position; high where the positive model disfavours the token."""
    if not positive or not negative:
        raise ValueError("critical_token needs positive and negative model directories: "
                         "{name: critical_token, positive: runs/cdpo-pairs/positive, negative: runs/cdpo-pairs/negative}"
                         " (tokenfocus cdpo-weights writes them)")
    batch = capture.batch
    models = [_contrast_model(str(p)).to(batch.input_ids.device) for p in (positive, negative)]
    probs = contrastive_token_probs(*models, batch.input_ids, batch.attention_mask.long(), beta=beta)
    return torch.where(batch.response_mask, 1.0 - probs, torch.zeros_like(probs))
