"""Token weights for preference pairs (TAB-PO's omega, RL_TOKEN_CREDIT.md §7): per completion token, from the
two completions' token ids or their text, before any model runs.

- ``diff``: align chosen and rejected ids with a sequence matcher; tokens inside the non-equal opcodes (what makes
  the pair differ) get ``hi``, the shared scaffolding ``lo``.
- ``pattern``: tokens whose text matches a regular expression (default: a digit, the values of a JSON answer) get
  ``hi``, the rest ``lo``.

Both return plain lists of the completions' lengths; the collator places them at the completion positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

WEIGHT_MODES = ("uniform", "diff", "pattern", "column")


def diff_weights(chosen: list[int], rejected: list[int], hi: float = 1.0, lo: float = 0.2
                 ) -> tuple[list[float], list[float]]:
    """(chosen weights, rejected weights): ``hi`` on the tokens the two sequences do not share, ``lo`` elsewhere."""
    w_chosen, w_rejected = [lo] * len(chosen), [lo] * len(rejected)
    for tag, a0, a1, b0, b1 in SequenceMatcher(None, chosen, rejected, autojunk=False).get_opcodes():
        if tag != "equal":
            w_chosen[a0:a1] = [hi] * (a1 - a0)
            w_rejected[b0:b1] = [hi] * (b1 - b0)
    return w_chosen, w_rejected


def pattern_weights(pieces: list[str], pattern: str = r"\d", hi: float = 1.0, lo: float = 0.2) -> list[float]:
    """``hi`` on the tokens (their decoded text ``pieces``) in which ``pattern`` matches, ``lo`` elsewhere."""
    regex = re.compile(pattern)
    return [hi if regex.search(piece) else lo for piece in pieces]


@dataclass(frozen=True)
class PairWeighting:
    """How each pair's tokens are weighted (``policies.pairs``) and TAB-PO's barrier (lambda, tau).
    ``weight_chosen=False`` keeps the chosen rows at 1 (cDPO's ``only_neg``)."""

    mode: str = "uniform"
    hi: float = 1.0
    lo: float = 0.2
    pattern: str = r"\d"
    weight_chosen: bool = True
    barrier: float = 0.0
    tau: float = 0.5

    def problems(self) -> list[str]:
        found = [] if self.mode in WEIGHT_MODES else [f"mode must be one of {list(WEIGHT_MODES)}, got {self.mode!r}"]
        if self.hi < 0 or self.lo < 0:
            found.append(f"hi and lo are token weights >= 0, got {self.hi}, {self.lo}")
        if self.barrier < 0:
            found.append(f"barrier is a loss coefficient >= 0, got {self.barrier}")
        if not 0 < self.tau <= 1:
            found.append(f"tau is a probability threshold in (0, 1], got {self.tau}")
        try:
            re.compile(self.pattern)
        except re.error as error:
            found.append(f"pattern {self.pattern!r} is not a regular expression ({error})")
        return found

    @property
    def token_level(self) -> bool:
        """Whether the loss leaves TRL's path: any weighting or a barrier (or, see the trainer, label smoothing)."""
        return self.mode != "uniform" or self.barrier > 0


def token_level_conflicts(args) -> list[str]:
    """DPOConfig settings (``args``: a DPOConfig) the token-level loss would otherwise ignore, each with the fix."""
    found = []
    if list(args.loss_type) != ["sigmoid"]:
        found.append(f"loss_type {list(args.loss_type)}: it is the sigmoid DPO loss; set loss_type: [sigmoid]")
    if args.f_divergence_type != "reverse_kl":
        found.append(f"f_divergence_type {args.f_divergence_type!r}: leave it at 'reverse_kl'")
    if args.precompute_ref_log_probs:
        found.append("precompute_ref_log_probs (TRL keeps per-sequence sums, which cannot be re-weighted); set it "
                     "false: the reference runs online")
    if args.use_weighting:
        found.append("use_weighting (WPO sequence weights); leave it false")
    if args.ld_alpha is not None:
        found.append("ld_alpha (LD-DPO); leave it unset")
    if args.loss_weights is not None:
        found.append("loss_weights (one loss only); leave it unset")
    return found
