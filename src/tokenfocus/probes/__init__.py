"""Mechanism probes: why some tokens matter (PRUNING_TOKENIZERS_MECHANISMS.md C1, C2, C3, C5, C9).

    sinks.py            attention received per key (never T x T), massive activations, cos to the first token (C2)
    function_tokens.py  the frequency partition, the 4-way loss decomposition, steering                     (C1)
    block_attention.py  block masks with block sinks, positions, per-token block sensitivity KL(full||block) (C9)
    block_distill.py    block distillation toward a full-attention teacher, KL-weighted tokens              (C9)
    segment.py          heuristic segmenters (paragraph, sentence, fixed, TextTiling-like) -> token blocks   (C9)
    ngram.py            n-gram-match attention targets, per-head n-gram scores, NgramHead, a tiny ICL model  (C5)
    dfa.py              random DFAs, in-context strings, the in-context n-gram estimator                    (C5)
    concepts.py         mean-difference directions vs logistic probes on word vectors (+ concept_pairs.py)  (C3)

Probes are components: functions of a model, a tokenizer and tensors that return typed results with a
``to_json()``; ``recipes/probe.py`` composes them and ``tokenfocus probe ...`` writes their JSON and page. The
per-token outputs other modules use live in ``signals`` (``sink_score``, ``function_token``) and ``losses``
(``sink_decorrelation``).
"""
