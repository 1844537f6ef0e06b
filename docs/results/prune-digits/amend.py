"""Amend the committed digits sweep (run before these fields existed) and judge it again, without re-running it:

1. every embedlens row gains ``alive_share`` = kept_context / 16 (the number of image tokens the lens left, which
   the row already holds; ``kept_share`` is random's budget at the same cell, at least one token);
2. summary.json's testbed_info gains the EmbedLens attractors per layer, recomputed with the sweep's own function
   (``recipes.prune._attractors``: deterministic given the model, the projector and the 48 images);
3. summary, claims and page again from the files: ``recipes.prune.rejudge`` (= ``tokenfocus prune DIR --rejudge``).

    python docs/results/prune-digits/amend.py
"""

import json
from pathlib import Path

import torch

from tokenfocus.config.prune import load_prune_config
from tokenfocus.io import read_jsonl, write_json, write_jsonl
from tokenfocus.models import load_model
from tokenfocus.prune import LayerRunner
from tokenfocus.recipes.prune import (
    _attractors,
    encode_examples,
    rejudge,
    testbed_examples,
)

HERE = Path(__file__).parent
IMAGE_TOKENS = 16

rows = read_jsonl(HERE / "results.jsonl")
for row in rows:
    if row["method"] == "embedlens":
        row["alive_share"] = row["kept_context"] / IMAGE_TOKENS
write_jsonl(HERE / "results.jsonl", rows)

config = load_prune_config(HERE / "prune.yaml")
model, tokenizer = load_model(config.model)
model.eval()
with torch.no_grad():
    encoded, _, _ = encode_examples(config, model, tokenizer, testbed_examples(config))
    _, record = _attractors(LayerRunner(model), encoded, config, tokenizer)
summary = json.loads((HERE / "summary.json").read_text())
summary["testbed_info"]["attractors"] = record
write_json(HERE / "summary.json", summary)
rejudge(HERE)
