"""`tokenfocus analyze`: generate responses, compute per-token signals, save them, render a token page.

Run directory:
    analysis.json          what was asked (model, signals, generation settings)
    manifest.json          git commit, package versions, seeds, device
    signals.safetensors    input_ids, attention_mask, response_mask and one (B, T) tensor per signal
    tokens.jsonl           per response: prompt, completion, token pieces, char offsets, ids, signal values
    tokens.html            the self-contained page (rendered from tokens.jsonl alone)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..io import manifest, prepare_output_dir, write_json, write_jsonl
from ..report.token_page import render_token_page
from ..rollout import PromptError, generate_rollout, token_pieces
from ..signals import compute_signals, parse_signal_specs, required_roles

DEFAULT_SIGNALS = ("attention_entropy", "predictive_entropy", "logprobs", "position")


@dataclass
class AnalyzeConfig:
    model: str = "smollm2-135m-instruct"
    prompts: list[str] = field(default_factory=list)
    signals: list = field(default_factory=lambda: list(DEFAULT_SIGNALS))
    color_by: str | None = None
    ratio: float = 0.2
    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 8
    out: str = "runs/analyze"
    overwrite: bool = False  # replace a non-empty out directory (never a training run)
    # Span marks per prompt ({role: [(start, end)]}, as ``Example.spans``; [] or {} for unmarked prompts): what the
    # counterfactual signals hide or shuffle. Prompts drawn from a task (``--task facts:8``) carry theirs.
    spans: list = field(default_factory=list)
    # A model with the same tokenizer that scores the responses for the teacher signals (teacher_logprobs,
    # teacher_logratio, teacher_kl); None when no signal reads one.
    teacher: str | None = None


def _prompt_of(row, where: str) -> str:
    text = row if isinstance(row, str) else row.get("prompt", row.get("question")) if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise PromptError(f"{where}: a row needs a string 'prompt' (or 'question') field, or is a string")
    return text


def load_prompt_file(path: Path) -> list[str]:
    """Prompts from a file: one per non-empty line of a text file; the 'prompt' / 'question' field of each JSONL
    row; or, for ``.json``, a JSON list of strings or rows (a JSONL file saved as ``.json`` is read as JSONL)."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"Prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PromptError(f"Prompt file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    lines = text.splitlines()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # perhaps JSON lines saved as .json
        if isinstance(data, list):
            prompts = [_prompt_of(row, f"{path}: item {i}") for i, row in enumerate(data)]
        elif isinstance(data, dict):
            prompts = [_prompt_of(data, str(path))]
        else:
            prompts = _jsonl_prompts(path, lines)
    elif path.suffix == ".jsonl":
        prompts = _jsonl_prompts(path, lines)
    else:
        prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise PromptError(f"Prompt file {path} holds no prompts (one per line, or JSONL with a 'prompt' field)")
    return prompts


def _jsonl_prompts(path: Path, lines: list[str]) -> list[str]:
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptError(f"{path}:{number}: not valid JSON ({error.msg})") from error
        prompts.append(_prompt_of(row, f"{path}:{number}"))
    return prompts


def run_analyze(config: AnalyzeConfig, progress: bool = True, log=print) -> Path:
    """Run the whole analysis; return the path of the HTML page."""
    specs = parse_signal_specs(config.signals)  # fails before any model loads
    labels = [s.label for s in specs]
    if config.color_by is not None and config.color_by not in labels:
        raise ValueError(f"--color-by {config.color_by!r} is not among the requested signals {labels}")
    if not 0 <= config.ratio <= 0.5:
        raise ValueError(f"ratio must be in [0, 0.5], got {config.ratio}")
    if not config.prompts:
        raise PromptError("No prompts: pass --prompt, --prompts-file, --arithmetic N or --task NAME:N")
    roles = required_roles(specs)
    spans = list(config.spans) + [{}] * (len(config.prompts) - len(config.spans))
    unmarked = [i for i, row in enumerate(spans) if any(role not in row for role in roles)]
    if roles and unmarked:
        raise PromptError(f"signals {sorted({label for labels in roles.values() for label in labels})} need the "
                          f"prompts' {sorted(roles)} spans marked; prompts {unmarked[:10]} have none. Draw prompts "
                          "from a task that marks them (--task facts:8, --task steps:8)")
    reading = [s.label for s in specs if "teacher" in s.entry.requires]
    if reading and config.teacher is None:
        raise ValueError(f"signals {reading} read a teacher's scores: pass --teacher SPEC, a model with the same "
                         "tokenizer (e.g. a longer-trained or larger model of the same family)")
    from ..models import check_model_spec, load_model

    for problem in check_model_spec(config.teacher) if config.teacher is not None else []:
        raise ValueError(f"--teacher: {problem}")
    out = prepare_output_dir(Path(config.out), config.overwrite, "--out")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    model, tokenizer = load_model(config.model)
    log(f"loaded {config.model} in {time.perf_counter() - started:.1f}s")
    teacher = None
    if config.teacher is not None:
        from .train import vocabulary_mismatch

        teacher, teacher_tokenizer = load_model(config.teacher)
        problem = vocabulary_mismatch(tokenizer, teacher_tokenizer)
        if problem:
            raise ValueError(f"--teacher {config.teacher!r} and --model {config.model!r} tokenize differently "
                             f"({problem}); teacher signals score the model's own token ids with the teacher")
    rollout = generate_rollout(
        model, tokenizer, config.prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        seed=config.seed, batch_size=config.batch_size, progress=progress,
    )
    marks, contexts = counterfactual_inputs(tokenizer, rollout, spans, roles, specs, config.seed) if roles else ({}, {})
    values = compute_signals(model, rollout.batch, specs, batch_size=config.batch_size, progress=progress,
                             marks=marks, contexts=contexts, teacher=teacher)
    batch = rollout.batch
    tensors = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "response_mask": batch.response_mask}
    tensors.update({f"signal.{name}": v.contiguous() for name, v in values.items()})
    save_file(tensors, str(out / "signals.safetensors"))
    write_jsonl(out / "tokens.jsonl", token_rows(rollout, values, tokenizer))
    signals = [{"name": s.name, "label": s.label, **s.options} for s in specs]
    write_json(out / "analysis.json", {**asdict(config), "signals": signals})
    write_json(out / "manifest.json", manifest(seeds={"seed": config.seed}, elapsed_s=time.perf_counter() - started))
    page = render_token_page(out, color_by=config.color_by or labels[0], ratio=config.ratio)
    return page


def counterfactual_inputs(tokenizer, rollout, spans: list[dict], roles, specs, seed: int):
    """({role: (B, T) bool} token marks of the rollout's prompts, {kind: Context}) for the counterfactual signals:
    the marks from each prompt's spans through the chat template (checked against the rollout's prompt tokens),
    and for ``steps_shuffled`` the prompts with their steps permuted, re-tokenized, each row ending with its own
    completion columns."""
    from ..integrations.prompt_marks import SPANS_COLUMN, left_pad, prompt_marks, shuffled_prompts
    from ..signals import Context, counterfactual_needs
    from ..signals.counterfactual import positions_from_mask
    from ..tasks.spans import encode_spans

    batch, width = rollout.batch, rollout.prompt_width
    chat = bool(getattr(tokenizer, "chat_template", None))
    rows = [{"prompt": [{"role": "user", "content": p}] if chat else p, SPANS_COLUMN: encode_spans(s)}
            for p, s in zip(rollout.prompts, spans)]
    prompt_marked = prompt_marks(tokenizer, rows, batch.input_ids[:, :width], batch.attention_mask[:, :width], roles)
    completion = torch.zeros(batch.shape[0], batch.shape[1] - width, dtype=torch.bool)
    marks = {role: torch.cat([m.cpu(), completion], dim=1) for role, m in prompt_marked.items()}
    contexts = {}
    if "steps_shuffled" in counterfactual_needs(specs):
        shuffled = [tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True)["input_ids"]
                    if chat else tokenizer(p)["input_ids"] for p in shuffled_prompts(rows, seed, 0)]
        pad_width = max(width, max(len(ids) for ids in shuffled))
        ids, mask = left_pad(shuffled, pad_width, tokenizer.pad_token_id, "cpu")
        ids = torch.cat([ids, batch.input_ids[:, width:]], dim=1)
        mask = torch.cat([mask.bool(), batch.attention_mask[:, width:]], dim=1)
        contexts["steps_shuffled"] = Context(ids, mask, positions_from_mask(mask))
    return marks, contexts


def token_rows(rollout, values: dict[str, torch.Tensor], tokenizer) -> list[dict]:
    rows = []
    batch = rollout.batch
    for r in range(batch.shape[0]):
        positions = batch.response_mask[r].nonzero().squeeze(-1)
        ids = batch.input_ids[r, positions].tolist()
        pieces, offsets = token_pieces(tokenizer, ids)
        rows.append(
            {
                "index": r,
                "prompt": rollout.prompts[r],
                "completion": rollout.completions[r],
                "positions": positions.tolist(),
                "token_ids": ids,
                "tokens": pieces,
                "offsets": offsets,
                "signals": {name: [round(float(x), 6) for x in v[r, positions]] for name, v in values.items()},
            }
        )
    return rows
