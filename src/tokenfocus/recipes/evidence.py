"""`tokenfocus evidence DIR`: the evidence-gathering analysis (RL_TOKEN_CREDIT.md §1.8) on a trained model.

For each run of a study (and its starting model) the final model answers ``n`` held-out problems greedily;
one scoring pass then records, for the query row that scores each response token:

    Ĥ             normalized attention entropy (the flagship signal; anchors = lowest 20 %, explorers = highest)
    M_prompt      attention mass on the prompt (1 - M_prompt is the share on earlier response tokens)
    M_evidence    attention mass on the evidence span: the number tokens of the prompt (testbed T1: the
                  operand digits; GSM8K: the quantities of the question)
    *_nosink      the same with the first token (the attention sink, here the chat template's first token)
                  removed from the distribution and the rest renormalized

and ``diagnostics.entropy_dynamics`` reduces them to anchors vs explorers, correct vs incorrect responses
and the Spearman correlation of Ĥ with each mass. Results: ``RUN_DIR/evidence.json`` (the report shows
them per arm).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..io import write_json
from ..tasks import Example

SIGNAL_LAYERS = "middle"


def number_token_marks(batch, tokenizer) -> torch.Tensor:
    """(B, T) bool: prompt tokens (before the response) whose text is made of digits only."""
    from ..types import prompt_keys

    prompt = prompt_keys(batch)
    vocab_digits = {}
    marks = torch.zeros_like(prompt)
    for r, c in prompt.nonzero().tolist():
        token = int(batch.input_ids[r, c])
        if token not in vocab_digits:
            text = tokenizer.decode([token]).strip()
            vocab_digits[token] = bool(text) and text.isdigit()
        marks[r, c] = vocab_digits[token]
    return marks


def evidence_analysis(model, tokenizer, problems: list[Example], *, max_new_tokens: int = 24, ratio: float = 0.2,
                      answer_line_only: bool = True, seed: int = 0) -> dict:
    """Greedy answers to ``problems`` and the §1.8 numbers on them (see the module doc)."""
    from ..diagnostics import entropy_dynamics
    from ..policies import anchor_explorer_subsets
    from ..rollout import generate_rollout
    from ..signals import compute_signals
    from ..tasks import AnswerReward
    from ..types import PolicyInputs

    rollout = generate_rollout(model, tokenizer, [p.prompt for p in problems], max_new_tokens=max_new_tokens)
    correct = torch.tensor(AnswerReward(answer_line_only=answer_line_only)(
        rollout.completions, [p.answer for p in problems])) >= 0.5
    batch = rollout.batch
    entropy_spec = {"name": "attention_entropy", "layers": SIGNAL_LAYERS}
    signals = compute_signals(model, batch, [
        entropy_spec, {"name": "attention_mass", "layers": SIGNAL_LAYERS, "label": "prompt_mass"},
        {"name": "attention_mass", "layers": SIGNAL_LAYERS, "sink": "exclude", "label": "prompt_mass_nosink"}])
    marks = number_token_marks(batch, tokenizer)
    signals.update(compute_signals(model, batch, [
        {"name": "attention_mass", "layers": SIGNAL_LAYERS, "keys": "marked", "label": "evidence_mass"},
        {"name": "attention_mass", "layers": SIGNAL_LAYERS, "keys": "marked", "sink": "exclude",
         "label": "evidence_mass_nosink"}], key_marks=marks))
    mask = batch.response_mask
    inputs = PolicyInputs(mask, {"attention_entropy": signals["attention_entropy"]}, step=seed)
    subsets = anchor_explorer_subsets(inputs, "attention_entropy", ratio)
    anchors, explorers = subsets["anchors"], subsets["explorers"]
    entropy = signals["attention_entropy"]
    out = {"n": len(problems), "accuracy": float(correct.float().mean()),
           "evidence_tokens_per_prompt": float(marks.sum(-1).float().mean()),
           "response_tokens": int(mask.sum())}
    for name in ("prompt_mass", "prompt_mass_nosink", "evidence_mass", "evidence_mass_nosink"):
        mass = signals[name]
        numbers = entropy_dynamics(entropy, mask, anchors, explorers, correct=correct, mass=mass, mass_name=name)
        out.update({k.removeprefix("diag/"): v for k, v in numbers.items()})
    return out


def run_evidence(root: Path, n: int = 64, max_new_tokens: int = 24, force: bool = False, log=print) -> list[Path]:
    """Write evidence.json into every finished run of a study directory (or into one run directory).

    Runs that already have one are skipped unless ``force`` (so it can follow a study that is still running).
    """
    from ..models import load_model
    from .evaluate import EvalConfig, eval_problems

    root = Path(root)
    index = root / "study.json"
    if index.is_file():
        study = json.loads(index.read_text())
        task = study["task"]
        strict = True
        config_path = root / "study.yaml"
        if config_path.is_file():
            import yaml

            saved = yaml.safe_load(config_path.read_text())
            strict = bool((saved.get("train") or {}).get("reward", {}).get("answer_line_only", False))
        warm = root / "warmup" / "final"
        start = str(warm) if warm.is_dir() else study["model"]
        # Every model on the same problems: the study's fixed eval seed (the starting model's entry has no seed).
        problem_seed = (study.get("eval") or {}).get("seed", 0)
        given = {"initial": start, "teacher": (study.get("teacher") or {}).get("model")}  # evaluated, not trained
        targets = [(root / r["dir"], given.get(r["arm"]) or str(root / r["dir"] / "final"),
                    r["seed"] or 0) for r in study["runs"] if r.get("status") == "done"]
    elif (root / "final").is_dir() and (root / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((root / "config.yaml").read_text())
        task = config["task"]
        strict = bool(config.get("reward", {}).get("answer_line_only", False))
        targets = [(root, str(root / "final"), 0)]
        problem_seed = 0
    else:
        raise ValueError(f"{root} is neither a study directory (study.json) nor a finished run (final/ and "
                         "config.yaml); train or run the study first")
    written = []
    for run_dir, model_path, seed in targets:
        if (run_dir / "evidence.json").is_file() and not force:
            log(f"[{run_dir.name}] evidence.json exists, skipped (--force recomputes)")
            continue
        started = time.time()
        model, tokenizer = load_model(model_path)
        problems = eval_problems(EvalConfig(model=model_path, task=task, split="test", n=n, seed=problem_seed))
        result = evidence_analysis(model, tokenizer, problems, max_new_tokens=max_new_tokens,
                                   answer_line_only=strict, seed=seed)
        result.update({"model": model_path, "seed": seed, "seconds": time.time() - started})
        write_json(run_dir / "evidence.json", result)
        written.append(run_dir / "evidence.json")
        log(f"[{run_dir.name}] evidence: prompt mass anchors {result['prompt_mass/anchors']:.3f} explorers "
            f"{result['prompt_mass/explorers']:.3f} ({result['seconds']:.0f} s)")
    return written
