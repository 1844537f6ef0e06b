"""Concept probe (C3): planted concept directions, the Newton logistic probe against sklearn, mean differences
against a loop, causal-space invariance, single-token pair filtering on a real BPE, bad input, and SmolLM2."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import tiny
from tokenfocus.probes.concept_pairs import CONCEPT_PAIRS
from tokenfocus.probes.concepts import (
    causal_space,
    concept_matrix,
    fit_logistic,
    logistic_probe,
    mean_difference,
    pair_words,
    projection_gap,
    single_token_pairs,
    token_states,
    unembedding,
)


class WordTokenizer:
    """One token per known word written with a leading space; anything else splits into one token per byte
    (ids offset past the words), like an unseen word in a BPE."""

    unk_token_id = None

    def __init__(self, words):
        self.vocab = {" " + w: i for i, w in enumerate(words)}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[text]] if text in self.vocab else [len(self.vocab) + b for b in text.encode()]


def planted(directions, n_pairs=40, delta=4.0, noise=0.3, base_scale=None, seed=0):
    """Concept k: base words x ~ N(0, diag(base_scale^2)), counterfactual x + delta * directions[k] + N(0, noise^2 I).
    Returns (vectors (V, d), concepts, tokenizer)."""
    g = torch.Generator().manual_seed(seed)
    d = directions.shape[1]
    scale = torch.ones(d, dtype=torch.float64) if base_scale is None else base_scale
    rows, concepts, words = [], {}, []
    for k, u in enumerate(directions):
        base = torch.randn(n_pairs, d, generator=g, dtype=torch.float64) * scale
        counterfactual = base + delta * u + noise * torch.randn(n_pairs, d, generator=g, dtype=torch.float64)
        concepts[f"c{k}"] = [(f"b{k}_{i}", f"t{k}_{i}") for i in range(n_pairs)]
        words += [f"b{k}_{i}" for i in range(n_pairs)] + [f"t{k}_{i}" for i in range(n_pairs)]
        rows += [base, counterfactual]
    return torch.cat(rows), concepts, WordTokenizer(words)


def orthonormal(k, d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T  # (k, d)


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_planted_orthogonal_concepts_give_a_dominant_unit_diagonal():
    """Pairs differ by exactly delta*u_k + eps (matched pairs cancel the base words), so meandiff_k = delta*u_k +
    mean(eps), |mean(eps)| ~ noise*sqrt(d/n) = 0.3*sqrt(16/40) = 0.19 << delta = 4: cos(meandiff_k, u_k) >= 0.99.
    The probe at C = 1e-4 is, to first order, the class-mean difference = meandiff_k, so M[k, k] ~ 1 and
    M[i, j] ~ <u_i, u_j> + noise ~ 0 for i != j (orthonormal u). Held out: same directions from disjoint halves,
    and the base/counterfactual projections on u_k are N(0, 1) vs N(4, 1.09): accuracy ~ Phi(2) = 0.98."""
    vectors, concepts, tok = planted(orthonormal(4, 16))
    result = concept_matrix(vectors, tok, concepts)
    assert result.names == ["c0", "c1", "c2", "c3"] and not result.skipped
    assert result.diagonal.min() > 0.98
    assert result.summary["mean_abs_off_diagonal"] < 0.1
    assert result.summary["row_dominance"] == 1.0 and result.summary["column_dominance"] == 1.0
    assert result.heldout_matrix.diagonal().min() > 0.9
    assert result.heldout_summary["row_dominance"] == 1.0 and result.heldout_summary["column_dominance"] == 1.0
    assert min(result.heldout_accuracy.values()) > 0.85
    # the paper's ||A W - P_S||_F: ~0 when probes = mean differences are orthonormal (A W = sum m_k m_k^T = P_S)
    assert result.projection_gap < 0.3


def test_two_concepts_on_one_direction_give_an_off_diagonal_near_one():
    """c0 and c1 are both planted on u_0, c2 on u_1: probe_0, probe_1, meandiff_0, meandiff_1 all ~ u_0, so
    M[0, 1] ~ M[1, 0] ~ 1 while M[0, 2], M[2, 0] ~ <u_0, u_1> = 0; mean |off-diagonal| ~ (1 + 1 + 4*0) / 6 = 1/3."""
    u = orthonormal(2, 16)
    vectors, concepts, tok = planted(torch.stack([u[0], u[0], u[1]]))
    m = concept_matrix(vectors, tok, concepts).matrix
    assert m[0, 1] > 0.97 and m[1, 0] > 0.97
    assert abs(m[0, 2]) < 0.1 and abs(m[2, 0]) < 0.1 and abs(m[1, 2]) < 0.1
    off = concept_matrix(vectors, tok, concepts).summary["mean_abs_off_diagonal"]
    assert off == pytest.approx(1 / 3, abs=0.05)


def test_heldout_uses_disjoint_halves_by_hand():
    """Two pairs: (e3 -> e3 + e1) and (e4 -> e4 + e2). A probe from one pair alone is exactly along e1 (an e3
    component shifts both words' logits alike, which the free intercept does unpenalized), and the other half's
    mean difference is e2: held-out M[0, 0] = 0. That probe puts both held-out words at logit b = -w1/2 < 0, so
    both are called base: accuracy 1/2. From both pairs the probe and the mean difference are along e1 + e2
    (the e3 + e4 component is again an intercept): full M[0, 0] = 1."""
    e = torch.eye(4, dtype=torch.float64)
    vectors = torch.stack([e[2], e[2] + e[0], e[3], e[3] + e[1]])
    tok = WordTokenizer(["a", "b", "c", "d"])
    result = concept_matrix(vectors, tok, {"x": [("a", "b"), ("c", "d")]}, min_pairs=2)
    assert result.matrix[0, 0].item() == pytest.approx(1.0, abs=1e-9)
    assert result.heldout_matrix[0, 0].item() == pytest.approx(0.0, abs=1e-9)
    assert result.heldout_accuracy["x"] == 0.5 and result.train_accuracy["x"] == 1.0


def test_rows_are_probes_and_columns_mean_differences():
    """With anisotropic base words and C = 1 the probe tilts away from the mean difference, so M is not symmetric;
    each entry must equal cos(probe of row concept, mean difference of column concept)."""
    scale = torch.linspace(0.2, 3.0, 12, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.randn(3, 12, generator=torch.Generator().manual_seed(1),
                                                           dtype=torch.float64), dim=1)
    vectors, concepts, tok = planted(directions, n_pairs=30, delta=2.0, base_scale=scale)
    result = concept_matrix(vectors, tok, concepts, C=1.0)
    ids = [single_token_pairs(tok, concepts[n])[0] for n in result.names]
    for i in range(3):
        for j in range(3):
            expected = cos(logistic_probe(vectors, ids[i], C=1.0), mean_difference(vectors, ids[j]))
            assert result.matrix[i, j].item() == pytest.approx(expected, abs=1e-9)
    assert (result.matrix - result.matrix.T).abs().max() > 1e-2  # so a transposed matrix would fail above


@pytest.mark.parametrize("C", [1e-4, 1e-2, 1.0, 100.0])
@pytest.mark.parametrize("n,d", [(60, 8), (30, 50)])
def test_fit_logistic_matches_sklearn(C, n, d):
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5
    y = (x[:, 0] + torch.randn(n, generator=g, dtype=torch.float64) > 0.5).double()
    w, b = fit_logistic(x, y, C)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(x.numpy(), y.numpy())
    ref_w = torch.from_numpy(ref.coef_[0])
    assert (w - ref_w).norm() <= 1e-4 * ref_w.norm()
    assert abs(b - ref.intercept_[0]) <= 1e-4 * max(1.0, abs(ref.intercept_[0]))


def test_logistic_probe_labels_counterfactual_one_and_matches_sklearn_on_pairs():
    from sklearn.linear_model import LogisticRegression

    vectors, concepts, tok = planted(orthonormal(1, 10), n_pairs=25)
    ids = single_token_pairs(tok, concepts["c0"])[0]
    probe = logistic_probe(vectors, ids, C=1e-4)
    x = torch.cat([vectors[ids[:, 0]], vectors[ids[:, 1]]])
    y = [0] * len(ids) + [1] * len(ids)
    ref = torch.from_numpy(LogisticRegression(C=1e-4, tol=1e-12, max_iter=10_000).fit(x.numpy(), y).coef_[0])
    assert (probe - ref).norm() <= 1e-4 * ref.norm()
    assert cos(probe, mean_difference(vectors, ids)) > 0.99  # same sign: both point base -> counterfactual


def test_mean_difference_matches_a_loop():
    vectors = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([[0, 5], [3, 1], [7, 7], [19, 2]])
    naive = [0.0] * 6
    for base, counterfactual in ids.tolist():
        for k in range(6):
            naive[k] += (float(vectors[counterfactual, k]) - float(vectors[base, k])) / len(ids)
    assert torch.allclose(mean_difference(vectors, ids), torch.tensor(naive, dtype=torch.float64), atol=1e-12)


def test_fit_logistic_all_zero_features_gives_zero_weight_and_the_base_rate_intercept():
    """x = 0: only the intercept acts, and the optimum is logit(mean y) = log(3/1)."""
    w, b = fit_logistic(torch.zeros(8, 3), torch.tensor([1.0, 1, 1, 0, 1, 1, 1, 0]), C=0.5)
    assert torch.equal(w, torch.zeros(3, dtype=torch.float64)) and b == pytest.approx(math.log(3), abs=1e-9)


def test_causal_space_whitens_and_makes_the_matrix_invariant_to_invertible_maps():
    """g = (gamma - mean) Cov^{-1/2} has identity covariance. For gamma' = gamma A (A invertible), g' = g Q with
    Q = Cov^{1/2} A (A^T Cov A)^{-1/2} orthogonal; mean differences rotate by Q, and so do L2 logistic probes
    (||w Q|| = ||w||), so every cosine in M is unchanged -- in the causal space only, not the raw one."""
    vectors, concepts, tok = planted(orthonormal(3, 8), n_pairs=20)
    g = causal_space(vectors)
    assert torch.allclose(g.T @ g / len(g), torch.eye(8, dtype=torch.float64), atol=1e-9)
    a = torch.randn(8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 2 * torch.eye(8)
    causal = concept_matrix(vectors, tok, concepts, space="causal", C=1.0).matrix
    causal_mapped = concept_matrix(vectors @ a, tok, concepts, space="causal", C=1.0).matrix
    assert torch.allclose(causal, causal_mapped, atol=1e-6)
    raw, raw_mapped = (concept_matrix(v, tok, concepts, C=1.0).matrix for v in (vectors, vectors @ a))
    assert (raw - raw_mapped).abs().max() > 1e-2


def test_causal_space_refuses_singular_vectors():
    with pytest.raises(ValueError, match="space='raw'"):
        causal_space(torch.randn(5, 8))  # V < d: the covariance is singular


def test_projection_gap_matches_the_dense_formula():
    g = torch.Generator().manual_seed(3)
    meandiffs = torch.nn.functional.normalize(torch.randn(4, 10, generator=g, dtype=torch.float64), dim=1)
    noise = torch.randn(4, 10, generator=g, dtype=torch.float64)
    probes = torch.nn.functional.normalize(meandiffs + 0.3 * noise, dim=1)
    a, w = meandiffs.T, probes  # (d, K), (K, d)
    dense = torch.linalg.matrix_norm(a @ w - a @ torch.linalg.inv(a.T @ a) @ a.T)
    assert projection_gap(probes, meandiffs) == pytest.approx(float(dense), rel=1e-9)


def bpe_words(words):
    """A BPE whose merges build each ' word' left to right, so exactly those words (and their prefixes) are
    single tokens; any other word splits into several."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = {"<unk>": 0}, []
    for word in words:
        text = " " + word
        for ch in text:
            vocab.setdefault(ch, len(vocab))
        for i in range(2, len(text) + 1):
            if text[:i] not in vocab:
                merges.append((text[: i - 1], text[i - 1]))
                vocab[text[:i]] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_next")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>"), vocab


def test_single_token_pairs_keeps_and_drops_on_a_real_bpe():
    tok, vocab = bpe_words(["king", "queen", "man", "woman", "cat"])
    assert tok.encode(" kings", add_special_tokens=False) == [vocab[" king"], vocab["s"]]
    pairs = [("king", "queen"), ("man", "woman"), ("king", "queen"), ("king", "kings"), ("cat", "cat"),
             ("man", "queen"), ("dog", "cat")]
    ids, kept, dropped = single_token_pairs(tok, pairs)
    assert kept == [("king", "queen"), ("man", "woman"), ("man", "queen")]
    # a repeat, two tokens (" king" "s"), one id twice, two tokens (" dog" is not in the vocabulary)
    assert dropped == [("king", "queen"), ("king", "kings"), ("cat", "cat"), ("dog", "cat")]
    assert ids.tolist() == [[vocab[" king"], vocab[" queen"]], [vocab[" man"], vocab[" woman"]],
                            [vocab[" man"], vocab[" queen"]]]
    none, kept, _ = single_token_pairs(tok, pairs, prefix="")  # 'king' without the space is k, i, n, g
    assert none.shape == (0, 2) and kept == []


def test_single_token_pairs_drops_words_that_encode_to_the_unknown_token():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "king": 1, "queen": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    ids, _, dropped = single_token_pairs(tok, [("king", "queen"), ("king", "prince")])
    assert ids.tolist() == [[1, 2]] and dropped == [("king", "prince")]


def test_sparse_concepts_are_reported_as_skipped_not_dropped_silently():
    vectors, concepts, tok = planted(orthonormal(2, 8), n_pairs=12)
    concepts["unseen"] = [("never", "seen"), ("nor", "this")] + concepts["c0"][:3]  # 3 single-token pairs
    result = concept_matrix(vectors, tok, concepts, min_pairs=4)
    assert result.names == ["c0", "c1"] and result.matrix.shape == (2, 2)
    assert set(result.skipped) == {"unseen"} and "3 single-token pairs" in result.skipped["unseen"]
    assert result.dropped["unseen"] == [("never", "seen"), ("nor", "this")]
    data = json.loads(json.dumps(result.to_json()))
    assert data["skipped"] == result.skipped and data["pairs_kept"] == {"c0": 12, "c1": 12, "unseen": 3}
    assert data["diagonal"].keys() == {"c0", "c1"} and len(data["heldout_matrix"]) == 2
    with pytest.raises(ValueError, match="lower min_pairs"):
        concept_matrix(vectors, tok, {"unseen": concepts["unseen"]}, min_pairs=4)


@pytest.mark.parametrize("kwargs,match", [
    ({"concepts": {}}, "concepts is empty"),
    ({"concepts": {"c": [("king", "")]}}, "non-empty words"),
    ({"concepts": {"c": [("king",)]}}, "non-empty words"),
    ({"C": 0.0}, "C must be > 0"),
    ({"C": -1.0}, "C must be > 0"),
    ({"space": "whitened"}, "space must be one of"),
    ({"min_pairs": 1}, "min_pairs must be >= 2"),
])
def test_bad_arguments_raise_value_errors_naming_the_fix(kwargs, match):
    vectors, concepts, tok = planted(orthonormal(1, 8), n_pairs=6)
    with pytest.raises(ValueError, match=match):
        concept_matrix(vectors, tok, **{"concepts": concepts, **kwargs})


def test_vectors_out_of_range_and_fit_logistic_bad_C_raise():
    vectors, concepts, tok = planted(orthonormal(1, 8), n_pairs=6)
    with pytest.raises(ValueError, match="same model as the tokenizer"):
        concept_matrix(vectors[:5], tok, concepts)
    with pytest.raises(ValueError, match="C must be > 0"):
        fit_logistic(*pair_words(vectors, torch.tensor([[0, 6]])), C=0)


def test_a_callable_gives_the_same_result_as_the_table_and_refuses_causal():
    vectors, concepts, tok = planted(orthonormal(3, 8), n_pairs=10)
    asked = []

    def rows(ids):
        asked.append(ids.clone())
        return vectors[ids]

    from_table = concept_matrix(vectors, tok, concepts)
    from_callable = concept_matrix(rows, tok, concepts)
    assert torch.allclose(from_table.matrix, from_callable.matrix, atol=1e-12)
    assert torch.allclose(from_table.heldout_matrix, from_callable.heldout_matrix, atol=1e-12)
    assert len(asked) == 1 and len(asked[0]) == 60  # one call, each needed id once
    with pytest.raises(ValueError, match="full \\(V, d\\) tensor"):
        concept_matrix(rows, tok, concepts, space="causal")


def test_token_states_and_unembedding_on_a_tiny_llama():
    model, _ = tiny()
    ids = torch.tensor([5, 9, 40, 7])
    states = token_states(model, ids, batch_size=3)  # two batches
    with torch.no_grad():
        direct = model(input_ids=ids[:, None], output_hidden_states=True).hidden_states[-1][:, 0]
        with_bos = model(input_ids=torch.tensor([[1, 9]]), output_hidden_states=True).hidden_states[-1][0, -1]
    assert states.shape == (4, 32) and torch.allclose(states, direct, atol=1e-6)
    assert torch.allclose(token_states(model, ids[1:2], prefix_ids=[1])[0], with_bos, atol=1e-6)
    head = unembedding(model)
    assert torch.equal(head, model.lm_head.weight.detach()) and not head.requires_grad


def test_fixtures_are_well_formed():
    assert len(CONCEPT_PAIRS) >= 12
    for name, pairs in CONCEPT_PAIRS.items():
        assert len(set(pairs)) == len(pairs), name
        assert all(a != b and a.strip() == a and b.strip() == b and a and b for a, b in pairs), name


@pytest.mark.slow
def test_smollm2_concept_matrix_on_the_unembedding():
    from tokenfocus.models import load_model

    model, tok = load_model("default")
    result = concept_matrix(unembedding(model), tok)
    enough = [name for name, pairs in result.kept.items() if len(pairs) >= 5]
    assert len(enough) >= 10
    assert result.names == enough and set(result.skipped) == set(CONCEPT_PAIRS) - set(enough)
    # measured: diagonal 1.000, held-out diagonal 0.84 with 16 of 17 rows dominant (margins left for CI)
    assert result.summary["mean_diagonal"] > 0.95
    assert result.heldout_summary["row_dominance"] >= 0.7
