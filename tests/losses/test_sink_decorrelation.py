"""The sink decorrelation term (arXiv 2510.22603): by hand, its gradient, and inside TRL's SFT and GRPO losses."""

from __future__ import annotations

import math

import pytest
import torch
from trl import SFTTrainer

from helpers import tiny, tiny_sft_trainer
from tokenfocus.capture import capture, layer_output_points
from tokenfocus.integrations.sft import TokenFocusSFTTrainer
from tokenfocus.losses import LossConfig, sink_decorrelation


def test_sink_decorrelation_by_hand():
    """h_first = e0. Position 1: e0 + e1 (cos^2 1/2); position 2: e1 (0); position 3 is padding (not counted).
    Two layers, the second with position 2 = e0 (cos^2 1): per-token means (1/2, 1/2), L = 1/2."""
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    a = torch.stack([e0, e0 + e1, e1, e0])[None]
    b = torch.stack([e0, e0 + e1, e0, e0])[None]
    mask = torch.tensor([[True, True, True, False]])
    term = sink_decorrelation([a, b], mask, torch.tensor([0]))
    torch.testing.assert_close(term.per_token, torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    assert term.metrics["loss/sink_decorrelation"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one layer"):
        sink_decorrelation([], mask, torch.tensor([0]))


def test_a_gradient_step_on_the_term_lowers_cos_to_the_first_token():
    model, _ = tiny()
    model.train()
    ids = torch.randint(3, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    points = layer_output_points(model, last=False)
    assert list(points) == ["layers.0.resid_post"]  # L = 2: every layer output but the last
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    values = []
    for _ in range(3):
        with capture(model, points, detach=False) as hidden:
            model(input_ids=ids)
        term = sink_decorrelation([torch.cat(hidden[n]) for n in points], mask, torch.zeros(2, dtype=torch.long))
        loss = term.per_token.sum() / (mask.sum() - 2)
        values.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert values[-1] < 0.5 * values[0]  # 0.027 -> 0.007 measured


def _sft(tmp_path, trainer_class, **extra):
    return tiny_sft_trainer(tmp_path, trainer_class, max_steps=1, **extra)


def test_sft_trainer_adds_lambda_times_the_naive_term_and_equals_trl_without_it(tmp_path):
    """lambda = 0: TRL's loss exactly; lambda > 0: TRL's loss + lambda * mean cos^2 over the prompt positions
    (labels -100, real, not the first) and hidden_states[1:L] (every layer output but the last)."""
    plain = _sft(tmp_path / "a", SFTTrainer)
    ours0 = _sft(tmp_path / "b", TokenFocusSFTTrainer)
    ours = _sft(tmp_path / "c", TokenFocusSFTTrainer, sink_decorrelation=3.0)
    batch = next(iter(plain.get_train_dataloader()))
    with torch.no_grad():
        reference = plain.compute_loss(plain.model, dict(batch))
        assert float(ours0.compute_loss(ours0.model, dict(batch))) == float(reference)
        got = ours.compute_loss(ours.model, dict(batch))
        out = ours.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         output_hidden_states=True)
    real = batch["attention_mask"].bool()
    counted = real & batch["labels"].eq(-100)
    first = real.to(torch.uint8).argmax(-1)
    counted[torch.arange(len(first)), first] = False
    hidden = out.hidden_states[1:-1]  # outputs of layers 1..L-1 (the last entry is after the final norm)
    cos2 = []
    for b, t in counted.nonzero().tolist():
        per_layer = [torch.nn.functional.cosine_similarity(h[b, t].double(), h[b, int(first[b])].double(), dim=0) ** 2
                     for h in hidden]
        cos2.append(sum(per_layer) / len(per_layer))
    naive = float(sum(cos2) / len(cos2))
    assert counted.sum() > 4 and math.isfinite(naive)
    assert float(got) == pytest.approx(float(reference) + 3.0 * naive, rel=1e-5)
    assert ours._metrics["train"]["sink_decorrelation"][-1] == pytest.approx(naive, rel=1e-5)


def test_sft_trainer_refuses_bad_options(tmp_path):
    with pytest.raises(ValueError, match=">= 0"):
        _sft(tmp_path, TokenFocusSFTTrainer, sink_decorrelation=-1.0)
    with pytest.raises(ValueError, match="decorrelated"):
        _sft(tmp_path, TokenFocusSFTTrainer, decorrelated="outputs")
    with pytest.raises(ValueError, match="sink_decorrelation is a loss coefficient >= 0"):
        LossConfig(sink_decorrelation=-1.0)
