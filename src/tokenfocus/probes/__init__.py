"""Mechanism probes: why some tokens matter (PRUNING_TOKENIZERS_MECHANISMS.md C1, C2, C3, C5, C9).

    sinks.py            attention received per key (never T x T), massive activations, cos to BOS   (C2)
    function_tokens.py  the frequency partition, the 4-way loss decomposition, steering            (C1)
    block_attention.py  block masks with block sinks, segmenters, per-token block sensitivity       (C9)
    ngram.py            random DFAs, n-gram-match attention, per-head n-gram scores, NgramHead       (C5)
    concepts.py         mean-difference directions vs logistic probes on embeddings                 (C3)

Probes are components: functions of a model, a tokenizer and tensors that return typed results with a
``to_json()``; ``recipes/probe.py`` composes them and ``tokenfocus probe ...`` writes their JSON and page.
"""
