"""Function-token tag: 1 where a response token is a function token, else 0 (PRUNING_TOKENIZERS_MECHANISMS.md C1).

Paper: "Memory Retrieval and Consolidation in Large Language Models through Function Tokens", arXiv 2510.08203.
Function tokens are the most frequent tokens of a reference collection that together cover 40 % of its token
occurrences (punctuation, articles, prepositions, the space; on math text also the digits); the rest are content
tokens. The partition is tokenizer-specific: ``tokenfocus probe function-tokens`` writes one
(``function_tokens.json``) for any model, and the package ships SmolLM2's on GSM8K plus generated task texts
(``partition: smollm2``). A token's tag is stored at its own index. Cost: free (a table lookup).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..types import ForwardCapture
from .registry import register_signal

PACKAGED = {"smollm2": Path(__file__).parent / "data" / "function_tokens_smollm2.json"}


@dataclass
class FunctionPartition:
    """The function tokens of one tokenizer on one collection.

    ids:       function token ids, most frequent first.
    share:     each one's share of all token occurrences (same order).
    documents: each one's document coverage (share of documents containing it).
    coverage:  the occurrence share the function tokens cover together (>= the asked coverage).
    total:     token occurrences counted; n_documents: documents; vocab_size: the tokenizer's vocabulary size.
    """

    ids: list[int]
    share: list[float]
    documents: list[float]
    coverage: float
    total: int
    n_documents: int
    vocab_size: int
    tokenizer: str = ""

    def mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool tensor like ``input_ids``: True where the token is a function token."""
        table = torch.zeros(max(self.vocab_size, int(input_ids.max()) + 1 if input_ids.numel() else 1),
                            dtype=torch.bool)
        table[torch.tensor(self.ids, dtype=torch.long)] = True
        return table[input_ids.cpu()].to(input_ids.device)

    def to_json(self, tokenizer=None) -> dict:
        out = {"tokenizer": self.tokenizer, "vocab_size": self.vocab_size, "coverage": self.coverage,
               "total": self.total, "n_documents": self.n_documents, "ids": self.ids,
               "share": [round(s, 6) for s in self.share], "documents": [round(d, 4) for d in self.documents]}
        if tokenizer is not None:
            out["tokens"] = tokenizer.convert_ids_to_tokens(self.ids)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "FunctionPartition":
        missing = [k for k in ("ids", "share", "documents", "coverage", "total", "n_documents", "vocab_size")
                   if k not in data]
        if missing:
            raise ValueError(f"not a function-token partition (missing {missing}); write one with "
                             "`tokenfocus probe function-tokens`")
        return cls(list(data["ids"]), list(data["share"]), list(data["documents"]), float(data["coverage"]),
                   int(data["total"]), int(data["n_documents"]), int(data["vocab_size"]), data.get("tokenizer", ""))

    @classmethod
    def load(cls, path: str | Path) -> "FunctionPartition":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the function-token partition {path}: {error}") from error
        return cls.from_json(data.get("partition", data))




@lru_cache(maxsize=8)
def _load(path: str) -> FunctionPartition:
    return FunctionPartition.load(path)


def load_partition(partition: str) -> FunctionPartition:
    """A packaged partition by name (``smollm2``) or a ``function_tokens.json`` path."""
    path = PACKAGED.get(partition, Path(partition).expanduser())
    if not path.is_file():
        raise ValueError(f"function-token partition {partition!r} is neither packaged ({', '.join(PACKAGED)}) nor a "
                         "file; write one for your tokenizer with `tokenfocus probe function-tokens --out DIR`")
    return _load(str(path))


@register_signal("function_token", cost="free")
def function_token(capture: ForwardCapture, partition: str = "smollm2") -> torch.Tensor:
    """1.0 where the response token is a function token of ``partition`` (packaged name or JSON path), else 0."""
    batch = capture.batch
    tags = load_partition(partition).mask(batch.input_ids).float()
    return torch.where(batch.response_mask, tags, torch.zeros_like(tags))
