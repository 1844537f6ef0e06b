"""Concept directions: mean differences vs logistic probes on word vectors (PRUNING_TOKENIZERS_MECHANISMS.md C3).

Paper: "I Predict Therefore I Am: Is Next Token Prediction Enough to Learn Human-Interpretable Concepts from
Data?", Liu et al., ICLR 2026 (OpenReview vVYD74U5KE; code yuhangliu01/I-Predict-Therefore-I-Am, word pairs and
helpers from KihoPark/linear_rep_geometry, Park et al., "The Linear Representation Hypothesis and the Geometry of
Large Language Models", ICML 2024). The theory says next-token representations are, up to one invertible linear
map, log-posteriors of latent concepts; so for each concept k the unit **mean difference** of its counterfactual
pairs (king -> queen, ...) and the unit weight of a **logistic probe** separating base words from counterfactual
words point the same way, and the K x K matrix M[i, j] = <probe_i, meandiff_j> is close to the identity on the
diagonal and dominated by it.

Verified in ``linear_property/1_store_matrices_Lin.py`` and ``linear_rep_geometry.py`` (Liu et al.):
- vectors: saved last-layer hidden states of each word's last token, the word encoded alone
  (``get_embedding_pairs`` -> ``get_embeddings``); our ``token_states``. The script loads an embedding matrix
  only for its width d, and Park et al.'s "causal inner product" whitening g = Cov(gamma)^{-1/2} gamma is
  commented out, so the paper's space is **raw** (``space="raw"``, our default). Park et al.'s
  ``store_matrices.py`` uses the unembedding rows gamma (our ``unembedding``) in both spaces;
  ``space="causal"`` is theirs.
- mean difference: mean over pairs of (base - counterfactual), unit-normalized; probe:
  ``sklearn.linear_model.LogisticRegression(max_iter=500, C=1e-4)`` on all 2N words with label 1 = base,
  coef unit-normalized; the matrix is meandiffs (K, d) @ probes (d, K); the printed score is training accuracy.
- a "holdout" variant (commented out) takes the mean difference from one part of the pairs and fits the probe on
  the rest; ``2_heatmap_stats_F.py`` also reports ||A W - P_S||_F, A = mean differences (d, K), W = probes
  (K, d), P_S the projection onto span(A) (our ``projection_gap``).
- pair filter (Park et al., ``get_counterfactual_pairs``): both words one token, the two ids different.

Our defaults: direction counterfactual - base and probe label 1 = counterfactual (both signs flip, so M is the
same); rows = probes, columns = mean differences (the transpose of the paper's); the probe is our own
float64 Newton solver for sklearn's exact objective (no sklearn at run time); the held-out check splits each
concept's pairs into two random halves (``seed``): the probe from half A, the mean difference from half B
(the held-out matrix) and probe accuracy on half B's words. Note: with C = 1e-4 and n words of squared norm
about s, the probe is, to first order in C*n*s, C * sum_i (y_i - 1/2) x_i, i.e. the class-mean difference,
which for matched pairs *is* the mean difference; so the full-data diagonal is near 1 partly by construction
(the held-out matrix and a larger C are the harder checks).

Measured on SmolLM2-135M, 17 concepts (raw unembedding, C = 1e-4): mean diagonal 1.000, mean |off-diagonal| 0.29,
every row and column dominant; held out 0.84 / 0.27, 16 of 17 rows dominant, probe accuracy 0.89. Its
``token_states`` without a BOS prefix (each word alone at position 0) share a large common component:
|off-diagonal| 0.80 and 11 of 17 held-out rows dominant; with ``prefix_ids=[bos]`` 0.28.

Cost: per concept one SVD of the (2n, d) word matrix (O(n^2 d)) and Newton steps in the (<= 2n + 1)-dim row
space (O(n^3) each); ``space="causal"`` adds one (d, d) covariance over the V rows (O(V d^2)) and an eigh.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .concept_pairs import CONCEPT_PAIRS

SPACES = ("raw", "causal")
Pair = tuple[str, str]
Vectors = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def single_token_pairs(
    tokenizer, pairs: Sequence[Pair], prefix: str = " "
) -> tuple[torch.Tensor, list[Pair], list[Pair]]:
    """``(ids (N, 2) long, kept, dropped)``: pairs whose two words, each written ``prefix + word``, are one token
    each (not the unknown token) and two different tokens; a repeat of an already kept id pair is dropped too."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    ids, kept, dropped, seen = [], [], [], set()
    for pair in pairs:
        words_ok = isinstance(pair, (tuple, list)) and len(pair) == 2
        if not (words_ok and all(isinstance(w, str) and w.strip() for w in pair)):
            raise ValueError(f"each concept pair must be two non-empty words like ('king', 'queen'), got {pair!r}; "
                             "fix or remove it")
        encoded = [tokenizer.encode(prefix + w, add_special_tokens=False) for w in pair]
        # a word-level vocabulary maps an unknown word to one token too: that is not the word
        key = tuple(e[0] for e in encoded) if all(len(e) == 1 and e[0] != unknown for e in encoded) else None
        if key is None or key[0] == key[1] or key in seen:
            dropped.append(tuple(pair))
            continue
        seen.add(key)
        ids.append(key)
        kept.append(tuple(pair))
    return torch.tensor(ids, dtype=torch.long).view(-1, 2), kept, dropped


def unembedding(model) -> torch.Tensor:
    """(V, d) detached float copy of the LM head weight (SmolLM2 ties it to the input embedding)."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (LM head); pass a causal LM, or pass "
                         "your own (V, d) vectors to concept_matrix")
    return head.weight.detach().float().clone()


@torch.no_grad()
def token_states(model, ids: torch.Tensor, *, prefix_ids: Sequence[int] = (), batch_size: int = 256) -> torch.Tensor:
    """(n, d) final hidden state (after the final norm) of each token id fed alone after ``prefix_ids`` (e.g. a
    BOS id): the paper's word vectors for single-token words. Use as ``lambda ids: token_states(model, ids)``."""
    ids = torch.as_tensor(ids, dtype=torch.long).view(-1)
    device = next(model.parameters()).device
    prefix = torch.tensor(list(prefix_ids), dtype=torch.long).view(1, -1)
    rows = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size, None]  # (b, 1)
        input_ids = torch.cat([prefix.expand(len(chunk), -1), chunk], dim=1).to(device)  # (b, 1 + P)
        out = model(input_ids=input_ids, output_hidden_states=True)
        rows.append(out.hidden_states[-1][:, -1].float().cpu())  # (b, d)
    return torch.cat(rows) if rows else torch.zeros(0, model.config.hidden_size)


def mean_difference(vectors: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(d,) float64 mean over pairs of vectors[counterfactual] - vectors[base] (not normalized)."""
    x = vectors.double()
    return (x[ids[:, 1]] - x[ids[:, 0]]).mean(0)


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, C: float = 1.0, *, max_iter: int = 100
) -> tuple[torch.Tensor, float]:
    """``(w (d,), b)`` minimizing sklearn's L2 objective 0.5 ||w||^2 + C * sum_i logloss(y_i, w.x_i + b), intercept
    unpenalized, labels y in {0, 1}; float64 Newton with backtracking, run in the row space of x (exact: a
    component of w orthogonal to every x_i only adds to the penalty)."""
    if not C > 0:
        raise ValueError(f"C must be > 0 (inverse L2 strength; the paper uses 1e-4), got {C}")
    x, y = x.double(), y.double()
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"expected x (n, d) with n > 0 and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    r = int((s > s.max() * max(x.shape) * torch.finfo(s.dtype).eps).sum()) if s.numel() else 0
    a = torch.cat([u[:, :r] * s[:r], torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # (n, r + 1): [x V_r, 1]
    reg = torch.ones(r + 1, dtype=x.dtype)
    reg[-1] = 0.0  # the intercept is not penalized

    def objective(theta):
        z = a @ theta
        return 0.5 * (reg * theta * theta).sum() + C * (torch.nn.functional.softplus(z) - y * z).sum()

    theta = torch.zeros(r + 1, dtype=x.dtype)
    mean_y = float(y.mean().clamp(1e-6, 1 - 1e-6))
    theta[-1] = math.log(mean_y / (1 - mean_y))  # the optimum when w = 0
    f = objective(theta)
    for _ in range(max_iter):
        p = torch.sigmoid(a @ theta)
        grad = reg * theta + C * a.T @ (p - y)
        hess = torch.diag(reg) + C * (a.T * (p * (1 - p))) @ a  # (r + 1, r + 1)
        hess += 1e-12 * torch.eye(r + 1, dtype=x.dtype)  # keeps a saturated intercept solvable
        step = -torch.linalg.solve(hess, grad)
        decrement = float(-(grad @ step))
        if decrement <= 1e-24 + 1e-16 * abs(float(f)):
            break
        t = 1.0
        while True:  # Armijo backtracking; a full Newton step is taken near the optimum
            candidate = objective(theta + t * step)
            if candidate <= f - 1e-4 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        theta, f = theta + t * step, candidate
    return vh[:r].T @ theta[:-1], float(theta[-1])


def pair_words(vectors: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (2N, d), y (2N,))``: the base words (label 0) then the counterfactual words (label 1)."""
    x = torch.cat([vectors[ids[:, 0]], vectors[ids[:, 1]]]).double()
    y = torch.cat([torch.zeros(len(ids)), torch.ones(len(ids))]).double()
    return x, y


def logistic_probe(vectors: torch.Tensor, ids: torch.Tensor, C: float = 1e-4, *, max_iter: int = 100) -> torch.Tensor:
    """(d,) float64 weight of the L2 logistic probe (counterfactual = 1, base = 0) on the pairs' word vectors."""
    return fit_logistic(*pair_words(vectors, ids), C, max_iter=max_iter)[0]


def causal_space(vectors: torch.Tensor) -> torch.Tensor:
    """(V, d) Park et al.'s g = (gamma - mean gamma) Cov(gamma)^{-1/2}, Cov over the V rows (centering does not
    change differences, and only moves a probe's intercept)."""
    gamma = vectors.double()
    centered = gamma - gamma.mean(0)
    evals, evecs = torch.linalg.eigh(centered.T @ centered / len(gamma))  # (d,), (d, d)
    if evals.min() <= 1e-12 * evals.max():
        raise ValueError(f"Cov(vectors) is singular (V = {len(gamma)} rows, d = {gamma.shape[1]}, smallest eigenvalue "
                         f"{float(evals.min()):.3g}); whitening needs full-rank vectors: use space='raw'")
    return centered @ (evecs * evals.rsqrt()) @ evecs.T


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm().clamp_min(1e-300)


def summarize(matrix: torch.Tensor) -> dict:
    """Diagonal statistics of a (K, K) probe x mean-difference matrix: mean diagonal, mean |off-diagonal| (None
    when K = 1), and the fractions of rows and of columns whose maximum is on the diagonal."""
    k = matrix.shape[0]
    eye = torch.eye(k, dtype=torch.bool)
    return {
        "mean_diagonal": float(matrix.diagonal().mean()),
        "mean_abs_off_diagonal": float(matrix[~eye].abs().mean()) if k > 1 else None,
        "row_dominance": float((matrix.argmax(1) == torch.arange(k)).double().mean()),
        "column_dominance": float((matrix.argmax(0) == torch.arange(k)).double().mean()),
    }


def projection_gap(probes: torch.Tensor, meandiffs: torch.Tensor) -> float:
    """||A W - P_S||_F with A = meandiffs^T (d, K), W = probes (K, d), P_S the projection onto span(A); from
    K x K Grams: ||AW||^2 - 2 tr(W A) + rank(A), since P_S A = A and P_S is idempotent."""
    gram_a, gram_w = meandiffs @ meandiffs.T, probes @ probes.T  # (K, K)
    rank = int(torch.linalg.matrix_rank(meandiffs))
    squared = float((gram_a * gram_w).sum() - 2 * (probes @ meandiffs.T).trace() + rank)
    return math.sqrt(max(squared, 0.0))


@dataclass
class ConceptResult:
    """names: the K concepts used (rows and columns of both matrices, in this order).
    matrix: (K, K) float64 <unit probe_i, unit meandiff_j>, probes and mean differences from all kept pairs.
    heldout_matrix: (K, K) the same with probe_i from half A of concept i's pairs and meandiff_j from half B of j's.
    kept / dropped: per concept, the pairs kept (one token each side) and dropped; skipped: concept -> reason.
    train_accuracy / heldout_accuracy: probe accuracy on its own words / on half B's words (probe from half A)."""

    names: list[str]
    matrix: torch.Tensor
    heldout_matrix: torch.Tensor
    projection_gap: float
    kept: dict[str, list[Pair]]
    dropped: dict[str, list[Pair]]
    skipped: dict[str, str]
    train_accuracy: dict[str, float]
    heldout_accuracy: dict[str, float]
    C: float
    space: str
    seed: int
    prefix: str = " "
    summary: dict = field(init=False)
    heldout_summary: dict = field(init=False)

    def __post_init__(self):
        self.summary = summarize(self.matrix)
        self.heldout_summary = summarize(self.heldout_matrix)

    @property
    def diagonal(self) -> torch.Tensor:
        """(K,) M[k, k]: the cosine of concept k's probe and its own mean difference."""
        return self.matrix.diagonal()

    def to_json(self) -> dict:
        def r(v):
            return None if v is None else round(float(v), 4)

        return {
            "C": self.C, "space": self.space, "seed": self.seed, "prefix": self.prefix, "names": self.names,
            "matrix": [[r(v) for v in row] for row in self.matrix],
            "heldout_matrix": [[r(v) for v in row] for row in self.heldout_matrix],
            "diagonal": {n: r(v) for n, v in zip(self.names, self.diagonal)},
            "summary": {k: r(v) for k, v in self.summary.items()},
            "heldout_summary": {k: r(v) for k, v in self.heldout_summary.items()},
            "projection_gap": r(self.projection_gap),
            "train_accuracy": {k: r(v) for k, v in self.train_accuracy.items()},
            "heldout_accuracy": {k: r(v) for k, v in self.heldout_accuracy.items()},
            "pairs_kept": {k: len(v) for k, v in self.kept.items()},
            "kept": {k: [list(p) for p in v] for k, v in self.kept.items()},
            "dropped": {k: [list(p) for p in v] for k, v in self.dropped.items()},
            "skipped": dict(self.skipped),
        }


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: float) -> float:
    return float(((x @ w + b > 0).double() == y).double().mean())


def _vector_table(vectors: Vectors, ids: torch.Tensor, space: str) -> torch.Tensor:
    """A (V', d) table indexable by every id in ``ids``: the given tensor (whitened for space='causal'), or the
    callable's rows placed at their ids (only the rows needed are computed)."""
    if callable(vectors) and not isinstance(vectors, torch.Tensor):
        if space != "raw":
            raise ValueError("space='causal' whitens with the covariance of all V rows; pass the full (V, d) tensor "
                             "(e.g. unembedding(model)) or use space='raw' with a callable")
        unique = ids.unique()
        rows = torch.as_tensor(vectors(unique)).double()  # (u, d)
        if rows.shape[0] != len(unique):
            raise ValueError(f"the vectors callable returned {rows.shape[0]} rows for {len(unique)} ids; it must "
                             "return one (d,) row per id")
        table = torch.zeros(int(unique.max()) + 1, rows.shape[1], dtype=torch.float64)
        table[unique] = rows
        return table
    if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2:
        raise ValueError("vectors must be a (V, d) tensor indexed by token id (e.g. unembedding(model)) or a "
                         "callable ids -> (n, d)")
    if len(ids) and int(ids.max()) >= vectors.shape[0]:
        raise ValueError(f"token id {int(ids.max())} is outside the {vectors.shape[0]} vector rows; pass the "
                         "vectors of the same model as the tokenizer")
    return causal_space(vectors) if space == "causal" else vectors.detach().double()


def concept_matrix(vectors: Vectors, tokenizer, concepts: Mapping[str, Sequence[Pair]] = CONCEPT_PAIRS, *,
                   C: float = 1e-4, space: str = "raw", min_pairs: int = 5, seed: int = 0,
                   prefix: str = " ") -> ConceptResult:
    """Probe-vs-mean-difference matrix over the concepts with at least ``min_pairs`` single-token pairs.

    vectors: (V, d) word vectors by token id (``unembedding(model)``) or a callable ids (n,) -> (n, d)
    (``lambda ids: token_states(model, ids)``, the paper's choice). space: "raw" (the paper) or "causal" (Park
    et al.'s whitening; needs the full tensor). Concepts with fewer pairs are listed in ``skipped``."""
    if not concepts:
        raise ValueError("concepts is empty; pass a dict name -> [(base, counterfactual), ...], e.g. CONCEPT_PAIRS")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if not C > 0:
        raise ValueError(f"C must be > 0 (inverse L2 strength; the paper uses 1e-4), got {C}")
    if min_pairs < 2:
        raise ValueError(f"min_pairs must be >= 2 (the held-out check needs a pair in each half), got {min_pairs}")
    kept, dropped, skipped, pair_ids = {}, {}, {}, {}
    for name, pairs in concepts.items():
        ids, kept[name], dropped[name] = single_token_pairs(tokenizer, pairs, prefix)
        if len(ids) < min_pairs:
            skipped[name] = f"{len(ids)} single-token pairs < min_pairs={min_pairs}"
        else:
            pair_ids[name] = ids
    if not pair_ids:
        raise ValueError(f"no concept has >= {min_pairs} single-token pairs ({skipped}); lower min_pairs, change "
                         "prefix, or add pairs whose words are single tokens for this tokenizer")
    table = _vector_table(vectors, torch.cat(list(pair_ids.values())), space)
    names = list(pair_ids)
    generator = torch.Generator().manual_seed(seed)
    probes, meandiffs, half_probes, half_meandiffs = [], [], [], []
    train_accuracy, heldout_accuracy = {}, {}
    for name in names:
        ids = pair_ids[name]
        x, y = pair_words(table, ids)
        w, b = fit_logistic(x, y, C)
        probes.append(_unit(w))
        meandiffs.append(_unit(mean_difference(table, ids)))
        train_accuracy[name] = _accuracy(x, y, w, b)
        order = torch.randperm(len(ids), generator=generator)
        half_a, half_b = ids[order[: len(ids) // 2]], ids[order[len(ids) // 2:]]
        w_a, b_a = fit_logistic(*pair_words(table, half_a), C)
        half_probes.append(_unit(w_a))
        half_meandiffs.append(_unit(mean_difference(table, half_b)))
        heldout_accuracy[name] = _accuracy(*pair_words(table, half_b), w_a, b_a)
    probes, meandiffs = torch.stack(probes), torch.stack(meandiffs)  # (K, d) each
    return ConceptResult(
        names=names,
        matrix=probes @ meandiffs.T,  # (K, K): rows probes, columns mean differences
        heldout_matrix=torch.stack(half_probes) @ torch.stack(half_meandiffs).T,
        projection_gap=projection_gap(probes, meandiffs),
        kept=kept, dropped=dropped, skipped=skipped,
        train_accuracy=train_accuracy, heldout_accuracy=heldout_accuracy,
        C=C, space=space, seed=seed, prefix=prefix,
    )
