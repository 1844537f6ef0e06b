"""In-context tasks as token sequences and a tiny llama trained on them from scratch (PRUNING_TOKENIZERS_MECHANISMS.md
C5; the heads it grows are scored by ``ngram.py``).

Paper: Akyurek et al., "In-Context Language Learning: Architectures and Algorithms", arXiv 2401.12973 (ICML 2024);
code github berlino/seq_icl. The paper's task (``dfa.py``): every sequence has its own random DFA, whose strings are
joined by a separator; the model must learn the language in context. The accuracy is the paper's
``train.py::_get_dfa_accuracy``: the greedy next symbol is correct iff the DFA accepts the current string extended by
it; separators are not predicted, and position 0 is not scored.

Our additions and defaults:
- ``walk`` task (ours): per row a random cyclic order of ``n_symbols`` letters (drawn from the first ``pool``
  letters), walked one step at a time; with probability ``jump`` the walk jumps to a uniformly random symbol instead.
  The next symbol is the successor of the current one, which only the context reveals: the task an induction (n = 1)
  head solves. Unlike a block repeated at one period, the jumps make the distance back to the previous occurrence
  vary within a row, so "attend k back" heads do not pay (a tiny llama trained on repeats at periods 3..14 in T = 32
  grew offset-12 / offset-11 heads that combine per period, and no induction head; ``head_ngram_scores``).
- ``train_icl_model``: AdamW (betas 0.9, 0.98, no weight decay), linear warm-up then constant lr, fresh sequences every
  step (the paper: a fixed set of 5000 DFAs, 200 epochs, cosine lr 5e-4, wd 0.1). ``task="mixed"`` (default): the walk
  alone for the first ``curriculum`` steps, then walk and DFA batches alternate. The DFA task distribution is smaller
  than the paper's (6 states, 6 letters, strings < 12) so that it is learnt on one CPU thread in minutes.
- Measured (one CPU thread of a busy 2-core machine, seeds 0-2; T = 32, batch 32, hidden 64, 4 heads, lr 3e-3): on
  the walk alone an induction head forms at step 625-750 (50-60 s); on the DFA task alone, and on DFA + walk mixed
  from step 0, no head forms in 2000+ steps (the DFA batches are learnt without it, to the 3-gram baseline's accuracy,
  and hold back the walk); on repeats of one block at random periods the model grows positional heads instead. The
  defaults' numbers are in ``train_icl_model``'s docstring.

Cost: a training step is one forward/backward of B x T tokens (~25-100 ms for the defaults on one busy thread);
sampling is O(B T) Python steps; ``icl_accuracy`` is one forward plus O(B T N |alphabet|) for the n-gram estimators.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import build_tiny_llama
from .dfa import DFA, allowed_per_position, ngram_probabilities, sample_string, task_dfa

SEP = -1  # the separator in symbol sequences (DFA symbols are ints >= 0)


def symbol_token_ids(tokenizer, n_symbols: int) -> tuple[list[int], int]:
    """Single-token ids for the letters a, b, ... (" a" if one token, else "a") and for the separator " |" / "|"."""
    def single(*forms: str) -> int:
        for form in forms:
            ids = tokenizer.encode(form, add_special_tokens=False)
            if len(ids) == 1:
                return ids[0]
        raise ValueError(f"none of {forms!r} is a single token of this tokenizer; the DFA probe needs one token each")

    if not 1 <= n_symbols <= 26:
        raise ValueError(f"n_symbols={n_symbols}: DFA symbols map to the letters a..z; use 1..26")
    letters = [single(" " + chr(97 + k), chr(97 + k)) for k in range(n_symbols)]
    sep = single(" |", "|")
    if len(set(letters + [sep])) != n_symbols + 1:
        raise ValueError("the letter / separator tokens are not distinct for this tokenizer")
    return letters, sep


@dataclass
class DfaBatch:
    """input_ids: (B, T) = [BOS] + symbols as tokens; symbols[b]: the DFA symbols of row b (``SEP`` = separator),
    starting at column ``offset``; dfas[b]: row b's DFA; token_ids[k]: the token of symbol k; sep_id."""

    input_ids: torch.Tensor
    symbols: list[list[int]]
    dfas: list[DFA]
    token_ids: list[int]
    sep_id: int
    offset: int


def dfa_token_sequences(
    tokenizer, n_sequences: int, length: int, seed: int | np.random.Generator, *, max_states: int = 12,
    n_letters: int = 18, max_outgoing: int = 4, max_string_len: int = 50, bos: bool = True,
) -> DfaBatch:
    """``n_sequences`` rows of ``length`` symbols, each from its own ``task_dfa``: strings of lengths
    1..max_string_len-1 joined by the separator and cut at ``length``; a BOS first if the tokenizer has one."""
    if n_sequences < 1 or length < 2:
        raise ValueError(f"need n_sequences >= 1 and length >= 2, got {n_sequences}, {length}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    letters, sep_id = symbol_token_ids(tokenizer, n_letters)
    symbols, dfas = [], []
    for _ in range(n_sequences):
        dfa = task_dfa(rng, max_states=max_states, n_letters=n_letters, max_outgoing=max_outgoing)
        row: list[int] = []
        while len(row) < length:
            row += ([SEP] if row else []) + sample_string(dfa, int(rng.integers(1, max_string_len)), rng)
        symbols.append(row[:length])
        dfas.append(dfa)
    ids = torch.tensor([[sep_id if s == SEP else letters[s] for s in row] for row in symbols])
    use_bos = bos and tokenizer.bos_token_id is not None
    if use_bos:
        ids = torch.cat([torch.full((n_sequences, 1), tokenizer.bos_token_id), ids], dim=1)
    return DfaBatch(ids, symbols, dfas, letters, sep_id, int(use_bos))


def walk_token_sequences(
    tokenizer, n_sequences: int, length: int, seed: int | np.random.Generator, *, n_symbols: int = 16,
    pool: int = 26, jump: float = 0.15, bos: bool = True,
) -> torch.Tensor:
    """(n_sequences, [1 +] length) ids of the walk task (module docstring): per row ``n_symbols`` of the first
    ``pool`` letters in a random cyclic order; each step goes to the successor, or w.p. ``jump`` to a random symbol."""
    if n_sequences < 1 or length < 2 or not 2 <= n_symbols <= pool or not 0.0 <= jump < 1.0:
        raise ValueError(f"need n_sequences >= 1, length >= 2, 2 <= n_symbols <= pool <= 26 and 0 <= jump < 1; got "
                         f"{n_sequences}, {length}, n_symbols={n_symbols}, pool={pool}, jump={jump}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    letters = np.array(symbol_token_ids(tokenizer, pool)[0])
    cycles = np.stack([rng.permutation(pool)[:n_symbols] for _ in range(n_sequences)])  # (B, n): row's cyclic order
    index = np.empty((n_sequences, length), dtype=np.int64)  # position of each step on its row's cycle
    index[:, 0] = rng.integers(n_symbols, size=n_sequences)
    jumps = rng.random((n_sequences, length)) < jump
    landing = rng.integers(n_symbols, size=(n_sequences, length))
    for t in range(1, length):
        index[:, t] = np.where(jumps[:, t], landing[:, t], (index[:, t - 1] + 1) % n_symbols)
    ids = torch.from_numpy(letters[np.take_along_axis(cycles, index, axis=1)])  # (B, T)
    if bos and tokenizer.bos_token_id is not None:
        ids = torch.cat([torch.full((n_sequences, 1), tokenizer.bos_token_id), ids], dim=1)
    return ids


# --------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainLog:
    """losses[s]: the loss of step s (on that step's task: ``tasks[s]``, "walk" or "dfa")."""

    losses: list[float]
    seconds: float
    settings: dict
    tasks: list[str]

    def to_json(self) -> dict:
        return {"steps": len(self.losses), "seconds": round(self.seconds, 2), "settings": self.settings,
                "losses": [round(v, 4) for v in self.losses], "tasks": self.tasks}


TASKS = ("walk", "dfa", "mixed")
DFA_DEFAULTS = {"max_states": 6, "n_letters": 6, "max_outgoing": 4, "max_string_len": 12}
WALK_DEFAULTS = {"n_symbols": 16, "pool": 16, "jump": 0.15}


def train_icl_model(
    *, task: str = "mixed", steps: int = 3000, max_seconds: float = 240.0, batch_size: int = 32, length: int = 48,
    layers: int = 2, hidden: int = 64, heads: int = 4, lr: float = 3e-3, weight_decay: float = 0.0, warmup: int = 50,
    curriculum: int = 1500, seed: int = 0, dfa: dict | None = None, walk: dict | None = None,
):
    """Train a tiny llama from scratch on ``task`` -> (model in eval mode, tokenizer, TrainLog). Stops after
    ``steps`` or ``max_seconds``. Loss: next-token cross-entropy, on symbol targets only for DFA rows (separators
    are not predicted, as in the paper). ``mixed``: walk only for ``curriculum`` steps, then walk / DFA alternate.

    Measured with the defaults (one CPU thread, 240 s, 2,171 steps): head L1.H2 puts 0.64 / 0.61 of its attention on
    the n = 1 targets at periods 13 / 16 (chance 0.054 / 0.045) and DFA accuracy is 0.81 (3-gram estimator 0.82).
    """
    dfa = _options("dfa", dfa, DFA_DEFAULTS)
    walk = _options("walk", walk, WALK_DEFAULTS)
    if task not in TASKS:
        raise ValueError(f"task={task!r}; valid: {TASKS}")
    if steps < 1 or max_seconds <= 0 or batch_size < 1 or length < 2 or curriculum < 0:
        raise ValueError(f"need steps >= 1, max_seconds > 0, batch_size >= 1, length >= 2, curriculum >= 0; got "
                         f"{steps}, {max_seconds}, {batch_size}, {length}, {curriculum}")
    model, tokenizer = build_tiny_llama(layers=layers, hidden=hidden, heads=heads, kv_heads=heads,
                                        intermediate=2 * hidden, max_positions=length + 1, seed=seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    rng = np.random.default_rng(seed)
    losses, tasks, start = [], [], time.perf_counter()
    for step in range(steps):
        kind = task if task != "mixed" else "walk" if step < curriculum or step % 2 == 0 else "dfa"
        if kind == "walk":
            ids = walk_token_sequences(tokenizer, batch_size, length, rng, **walk)
            keep = torch.ones_like(ids[:, 1:], dtype=torch.bool)
        else:
            batch = dfa_token_sequences(tokenizer, batch_size, length, rng, **dfa)
            ids = batch.input_ids
            keep = ids[:, 1:] != batch.sep_id  # separators are not predicted
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V): position t-1 predicts token t
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        loss = (loss * keep.flatten()).sum() / keep.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        tasks.append(kind)
        if time.perf_counter() - start > max_seconds:
            break
    model.eval()
    settings = {"task": task, "batch_size": batch_size, "length": length, "layers": layers, "hidden": hidden,
                "heads": heads, "lr": lr, "weight_decay": weight_decay, "warmup": warmup, "curriculum": curriculum,
                "seed": seed, "dfa": dfa, "walk": walk}
    return model, tokenizer, TrainLog(losses, time.perf_counter() - start, settings, tasks)


def _options(name: str, given: dict | None, defaults: dict) -> dict:
    unknown = set(given or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {name} option(s) {sorted(unknown)}; valid: {sorted(defaults)}")
    return {**defaults, **(given or {})}


# --------------------------------------------------------------------------------------------------------------
# In-context accuracy on the DFA task


@dataclass
class IclAccuracy:
    """Per-token accuracy of the greedy next symbol against the DFA's allowed set: the model, the in-context
    n-gram estimator per order, and a uniform guess over the DFA's symbols; tv_to_ngram: the mean total variation
    between the model's next-token distribution and the highest-order n-gram estimate."""

    model: float
    ngram: dict[int, float]
    uniform: float
    tv_to_ngram: float
    scored: int

    def to_json(self) -> dict:
        return {"model": round(self.model, 4), "ngram": {str(k): round(v, 4) for k, v in self.ngram.items()},
                "uniform": round(self.uniform, 4), "tv_to_ngram": round(self.tv_to_ngram, 4), "scored": self.scored}


def icl_accuracy(model: nn.Module, batch: DfaBatch, orders: Sequence[int] = (1, 2, 3)) -> IclAccuracy:
    """Score ``model`` and the n-gram baselines on ``batch`` (positions as in the paper; module docstring)."""
    if not orders:
        raise ValueError("orders must name at least one n-gram order, e.g. (1, 2, 3)")
    with torch.no_grad():
        probs = model(input_ids=batch.input_ids).logits.float().softmax(-1)  # (B, T, V)
    greedy = probs.argmax(-1)
    correct, uniform, tv, scored = 0, 0.0, 0.0, 0
    ngram_correct = {k: 0 for k in orders}
    for b, (row, dfa) in enumerate(zip(batch.symbols, batch.dfas)):
        allowed = allowed_per_position(dfa, row, SEP)
        estimates = {k: ngram_probabilities(row, SEP, k) for k in orders}
        used = {a for edges in dfa.transitions for a in edges}
        for t, ok in enumerate(allowed):
            if ok is None:
                continue
            p = probs[b, batch.offset + t - 1]  # the row that predicts symbol t
            correct += int(greedy[b, batch.offset + t - 1]) in {batch.token_ids[a] for a in ok}
            for k in orders:
                est = estimates[k][t]
                ngram_correct[k] += bool(est) and max(est, key=lambda s: (est[s], -s)) in ok
            q = torch.zeros_like(p)
            for s, v in estimates[max(orders)][t].items():
                q[batch.token_ids[s]] = v
            tv += 0.5 * float((p - q).abs().sum())
            uniform += len(ok) / len(used)
            scored += 1
    if scored == 0:
        raise ValueError("no position to score: the sequences need at least 2 symbols in some string")
    return IclAccuracy(correct / scored, {k: c / scored for k, c in ngram_correct.items()}, uniform / scored,
                       tv / scored, scored)
