"""Token-mean denominators across processes and accumulation steps (losses/normalization.py: token_counts).

Notation: N valid tokens in the generation batch (all processes), P processes, A accumulation steps per
optimizer step, S micro-steps per generation batch (TRL's ``steps_per_generation``; each process's share of a
generation batch is cut into S micro-batches, and an optimizer step takes A of them, so one generation
batch feeds S / A optimizer steps and one optimizer step sees N * A / S tokens).

The optimizer step's gradient is the mean over processes (DDP averages gradients) of the sum over its A
micro-steps of each call's ``sum(w l) / Z``; for it to be the token mean over the step's N * A / S tokens,
P * Z = N * A / S, i.e. Z = N * A / (P * S): TRL 1.16's ``num_items_in_batch / num_processes *
gradient_accumulation_steps / steps_per_generation`` (GRPOTrainer._compute_loss, loss_type="dapo").
When S = A (TRL's default) this is N / P.
"""

from __future__ import annotations

import pytest
import torch

from tokenfocus.losses import TokenCounts, compute_loss, loss_preset, token_counts

N = torch.tensor(120)
SELECTED = torch.tensor(24.5)


@pytest.mark.parametrize("processes, accumulation, steps, expected", [
    (1, 1, 1, 120.0),  # one process, no accumulation: the plain token mean
    (2, 4, 4, 60.0),   # S = A: one generation batch = one optimizer step; each process divides by N / P
    (4, 2, 2, 30.0),
    (2, 2, 4, 30.0),   # S = 2A: a generation batch feeds 2 optimizer steps of N / 2 tokens: N * A / (P * S)
    (2, 4, 2, 120.0),  # S = A / 2: an optimizer step spans 2 generation batches (2N tokens)
])
def test_generation_batch_counts_by_hand(processes, accumulation, steps, expected):
    """DAPO (token_mean, token_count global): global_count = N * A / (P * S), divisor 1 (module docstring)."""
    counts = token_counts(loss_preset("dapo"), N, SELECTED, num_processes=processes, accumulation=accumulation,
                          steps_per_generation=steps)
    assert isinstance(counts, TokenCounts)
    assert float(counts.global_count) == pytest.approx(expected)
    assert float(counts.global_valid_count) == pytest.approx(expected)
    assert counts.loss_divisor == 1


def test_selected_normalizer_counts_the_selected_mass():
    """normalizer='selected': the policy term divides by the selected weight mass (24.5), rescaled like N; the
    KL term still averages over valid tokens (global_valid_count = N / P)."""
    config = loss_preset("dapo", normalizer="selected")
    counts = token_counts(config, N, SELECTED, num_processes=2, accumulation=4, steps_per_generation=4)
    assert float(counts.global_count) == pytest.approx(24.5 / 2)
    assert float(counts.global_valid_count) == pytest.approx(60.0)
    micro = token_counts(config, N, SELECTED, num_processes=2, accumulation=3, counted_over="micro_batch")
    assert float(micro.global_count) == pytest.approx(12.25) and float(micro.global_valid_count) == pytest.approx(60.0)
    assert micro.loss_divisor == 3


def test_micro_batch_counts_by_hand():
    """Counted over this micro-batch (gathered over processes): Z = N / P, and the loss is divided by A."""
    counts = token_counts(loss_preset("dapo"), N, SELECTED, num_processes=4, accumulation=3,
                          counted_over="micro_batch")
    assert float(counts.global_count) == pytest.approx(30.0) and float(counts.global_valid_count) == pytest.approx(30.0)
    assert counts.loss_divisor == 3


@pytest.mark.parametrize("preset", ["grpo", "bnpo", "dr_grpo", "gspo"])
@pytest.mark.parametrize("counted_over", ["generation_batch", "micro_batch"])
def test_losses_without_a_global_token_mean_average_locally_and_divide_by_accumulation(preset, counted_over):
    """grpo / dr_grpo / gspo average inside the call and bnpo is a local token mean: no counts, divisor A."""
    counts = token_counts(loss_preset(preset), N, SELECTED, num_processes=2, accumulation=4, steps_per_generation=2,
                          counted_over=counted_over)
    assert counts == TokenCounts(None, None, 4)


def _batch(rows=24, width=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, width + 1, (rows,), generator=g)
    mask = torch.arange(width)[None] < lengths[:, None]
    logprobs = -torch.rand(rows, width, generator=g, dtype=torch.float64)
    old = logprobs + 0.2 * torch.randn(rows, width, generator=g, dtype=torch.float64)
    ref = logprobs + 0.3 * torch.randn(rows, width, generator=g, dtype=torch.float64)
    advantages = torch.randn(rows, generator=g, dtype=torch.float64)
    weights = (torch.rand(rows, width, generator=g, dtype=torch.float64) < 0.3).double() * 2.5 * mask
    return logprobs, old, ref, advantages, mask, weights


def _step_losses(config, processes, accumulation, steps, batch, counted_over="generation_batch"):
    """Split the generation batch into P * S equal row pieces (piece p * S + s: process p, micro-step s) and
    return each optimizer step's loss: the mean over processes of the sum over its A micro-steps."""
    logprobs, old, ref, advantages, mask, weights = batch
    rows = logprobs.shape[0] // (processes * steps)

    def piece(p, s):
        return slice((p * steps + s) * rows, (p * steps + s + 1) * rows)

    losses = []
    for first in range(0, steps, accumulation):
        total = 0.0
        for s in range(first, first + accumulation):
            if counted_over == "micro_batch":  # counts of this micro-step, gathered over processes
                valid = sum(mask[piece(p, s)].sum() for p in range(processes))
                selected = sum(weights[piece(p, s)][mask[piece(p, s)]].sum() for p in range(processes))
            else:
                valid, selected = mask.sum(), weights[mask].sum()
            counts = token_counts(config, valid, selected, num_processes=processes, accumulation=accumulation,
                                  steps_per_generation=steps, counted_over=counted_over)
            for p in range(processes):
                at = piece(p, s)
                loss, _ = compute_loss(config, logprobs[at], old[at], advantages[at], mask[at], weights[at],
                                       ref_logprobs=ref[at], global_count=counts.global_count,
                                       global_valid_count=counts.global_valid_count)
                total = total + loss / counts.loss_divisor / processes
        losses.append(float(total))
    return losses


@pytest.mark.parametrize("processes, accumulation", [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (3, 2), (2, 4)])
@pytest.mark.parametrize("normalizer", ["all", "selected"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_split_batch_equals_one_call_on_the_whole_batch(processes, accumulation, normalizer, beta):
    """S = A: P * A equal pieces with these counts give exactly the whole batch's token mean (policy and KL)."""
    config = loss_preset("dapo", normalizer=normalizer, beta=beta)
    batch = _batch()
    logprobs, old, ref, advantages, mask, weights = batch
    whole, _ = compute_loss(config, logprobs, old, advantages, mask, weights, ref_logprobs=ref)
    (split,) = _step_losses(config, processes, accumulation, accumulation, batch)
    assert split == pytest.approx(float(whole), abs=1e-6)


@pytest.mark.parametrize("processes, accumulation", [(1, 1), (1, 2), (2, 2), (3, 1)])
def test_a_generation_batch_feeding_two_optimizer_steps_keeps_the_token_mean(processes, accumulation):
    """S = 2A: averaged over the two optimizer steps the generation batch feeds, the loss is its token mean."""
    config = loss_preset("dapo")
    batch = _batch()
    logprobs, old, ref, advantages, mask, weights = batch
    whole, _ = compute_loss(config, logprobs, old, advantages, mask, weights)
    steps = _step_losses(config, processes, accumulation, 2 * accumulation, batch)
    assert len(steps) == 2
    assert sum(steps) / 2 == pytest.approx(float(whole), abs=1e-6)


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_fused_micro_batch_counts_equal_the_whole_batch(processes):
    """The fused pass (A = S = 1, counts gathered over this micro-batch) gives the whole batch's token mean."""
    config = loss_preset("dapo", normalizer="selected", beta=0.04)
    batch = _batch()
    logprobs, old, ref, advantages, mask, weights = batch
    whole, _ = compute_loss(config, logprobs, old, advantages, mask, weights, ref_logprobs=ref)
    (split,) = _step_losses(config, processes, 1, 1, batch, counted_over="micro_batch")
    assert split == pytest.approx(float(whole), abs=1e-6)


def test_local_token_mean_divides_each_micro_step_by_accumulation():
    """bnpo (local token mean): with equal pieces, A calls each divided by A average the pieces' token means."""
    config = loss_preset("bnpo")
    batch = _batch()
    logprobs, old, ref, advantages, mask, weights = batch
    pieces = [slice(i * 6, (i + 1) * 6) for i in range(4)]
    means = [float(compute_loss(config, logprobs[s], old[s], advantages[s], mask[s], weights[s])[0]) for s in pieces]
    assert _step_losses(config, 1, 4, 4, batch)[0] == pytest.approx(sum(means) / 4, abs=1e-12)
