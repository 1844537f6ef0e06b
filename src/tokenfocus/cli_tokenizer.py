"""`tokenfocus tokenizer ...`: the tokenizer probes (exact byte probabilities and healing, phantom edits,
tokenizer metrics, tokenizer transfer). Each command writes its JSON into --out and re-renders tokenizer.html
there; point all four at one directory for one page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Tokenizer probes: byte-level probabilities, phantom edits, metrics, "
                                              "transfer (PRUNING_TOKENIZERS_MECHANISMS.md B5-B9).")
MODEL_HELP = "Model spec: packaged default, hub id, dir, .gguf, tiny-llama."
OUT_HELP = "Output directory (shared by the four commands; default runs/tokenizer)."


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _texts(path: Optional[Path], flag: str, limit: int | None = None) -> list[str]:
    """Documents from a file: text (one per line) or JSONL ('prompt' or 'question'); [] when not given."""
    from .recipes.analyze import load_prompt_file

    if path is None:
        return []
    texts = [t for t in load_prompt_file(path) if t.strip()]
    if not texts:
        raise ValueError(f"{flag} {path} holds no text")
    return texts[:limit] if limit else texts


def _load(model: str):
    from .models import load_model

    return load_model(model)


def _done(out: Path, written: str) -> None:
    from .recipes.tokenizer import finish

    page = finish(out)
    typer.echo(f"{written}: {out / written}")
    typer.secho(f"page: {page.resolve()}", fg=typer.colors.GREEN)


@app.command("bytes")
def bytes_command(
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="A prompt that may end mid-word (repeatable); "
                                                               "default: four built-in ones."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    heal_texts: Optional[Path] = typer.Option(None, help="Texts (lines or JSONL) to cut mid-word for the healing "
                                                         "measurement, e.g. a GSM8K test.jsonl."),
    n_heal: int = typer.Option(0, min=0, help="Prompts to measure healing on (needs --heal-texts)."),
    check: str = typer.Option("mass", help="Canonicality check of covers: all (exact), mass (the heaviest, rest "
                                           "bounded), none (the paper's fast mode)."),
    min_mass: float = typer.Option(1e-4, min=0.0, help="With --check mass: unchecked covers weigh less than this "
                                                       "fraction of a split's mass."),
    top: int = typer.Option(8, min=1, help="Next bytes to list per prompt."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/tokenizer"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Exact next-byte distributions and token healing (B5)."""
    from .recipes.tokenizer import DEFAULT_PROMPTS, prepare, run_bytes

    try:
        if check not in ("all", "mass", "none"):
            raise ValueError(f"--check {check!r}: choose all, mass or none")
        if n_heal and heal_texts is None:
            raise ValueError("--n-heal needs --heal-texts (a text or JSONL file to cut mid-word)")
        texts = _texts(heal_texts, "--heal-texts")
        prepare(out, "bytes.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_bytes(model_obj, tokenizer, prompts=list(prompt) or list(DEFAULT_PROMPTS), out=out, heal_texts=texts,
                  n_heal=n_heal, check=check, min_mass=min_mass, top=top, seed=seed, model_spec=model, log=_log)
        _done(out, "bytes.json")
    except ValueError as error:
        _fail(str(error))


@app.command("ensemble")
def ensemble_command(
    train_text: Path = typer.Option(..., help="Text to train the small model and its BPE on (lines or JSONL)."),
    eval_text: Path = typer.Option(..., help="Texts to cut mid-word; the rest of each word is scored."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    vocab_size: int = typer.Option(4096, min=259, help="Vocabulary of the small model's byte-level BPE."),
    steps: int = typer.Option(300, min=1, help="Training steps of the small model (from scratch)."),
    n: int = typer.Option(100, min=1, help="Prompts cut mid-word to score."),
    weight: float = typer.Option(0.5, min=0.0, max=1.0, help="Mixture weight of --model (the small model: 1 - w)."),
    check: str = typer.Option("mass", help="Canonicality check of covers: all, mass or none."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/tokenizer"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """A byte-level ensemble of --model and a small model on a local BPE (different vocabularies, B5)."""
    from .recipes.tokenizer import prepare, run_ensemble

    try:
        if check not in ("all", "mass", "none"):
            raise ValueError(f"--check {check!r}: choose all, mass or none")
        train, held_out = _texts(train_text, "--train-text"), _texts(eval_text, "--eval-text")
        prepare(out, "ensemble.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_ensemble(model_obj, tokenizer, train_texts=train, eval_texts=held_out, vocab_size=vocab_size,
                     steps=steps, n=n, out=out, weight=weight, check=check, seed=seed, model_spec=model, log=_log)
        _done(out, "ensemble.json")
    except ValueError as error:
        _fail(str(error))


@app.command("probe")
def probe_command(
    n: int = typer.Option(40, min=1, help="Generated texts (each with about --rate of its content words bracketed)."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    rate: float = typer.Option(0.05, min=0.0, max=1.0, help="Fraction of content words to bracket (at least one)."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(8, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy; > 0 samples (the same seeds with and "
                                                          "without the mask)."),
    out: Path = typer.Option(Path("runs/tokenizer"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """The phantom-edit probe (B6), without and with the phantom mask."""
    from .recipes.tokenizer import prepare, run_phantom

    try:
        prepare(out, "phantom.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_phantom(model_obj, tokenizer, n=n, out=out, rate=rate, seed=seed, batch_size=batch_size,
                    temperature=temperature, model_spec=model, log=_log)
        _done(out, "phantom.json")
    except ValueError as error:
        _fail(str(error))


@app.command("metrics")
def metrics_command(
    text: Optional[Path] = typer.Option(None, help="Documents to measure on (lines or JSONL); default: 200 "
                                                   "generated texts."),
    tokenizer: list[str] = typer.Option(["smollm2-135m-instruct"], "--tokenizer", "-t",
                                        help="A model spec (its tokenizer) or bpe:N (trained on --train-text); "
                                             "repeatable."),
    train_text: Optional[Path] = typer.Option(None, help="Training text for bpe:N tokenizers (lines or JSONL)."),
    k_max: int = typer.Option(5, min=1, max=8, help="Largest k of the k-gram entropies."),
    out: Path = typer.Option(Path("runs/tokenizer"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Information-theoretic tokenizer metrics (B9), compared across tokenizers."""
    from .recipes.tokenizer import prepare, run_metrics
    from .tokenizers.phantom import probe_texts

    try:
        bad = [t for t in tokenizer if t.startswith("bpe:") and not t[4:].isdigit()]
        if bad:
            raise ValueError(f"--tokenizer {bad[0]!r}: expected bpe:N with N the vocabulary size, e.g. bpe:8192")
        if any(t.startswith("bpe:") for t in tokenizer) and train_text is None:
            raise ValueError("bpe:N tokenizers are trained on --train-text; pass a text or JSONL file")
        texts = _texts(text, "--text") or probe_texts(200, seed=0)
        train = _texts(train_text, "--train-text")
        prepare(out, "metrics.json", overwrite)
        run_metrics(tokenizer, texts=texts, train_texts=train, out=out, k_max=k_max, log=_log)
        _done(out, "metrics.json")
    except ValueError as error:
        _fail(str(error))


@app.command("transfer")
def transfer_command(
    train_text: Path = typer.Option(..., help="Text to train the new BPE and continue training on (lines or JSONL)."),
    eval_text: Path = typer.Option(..., help="Held-out documents for bits per byte (lines or JSONL)."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    vocab_size: int = typer.Option(8192, min=259, help="Vocabulary size of the new byte-level BPE."),
    methods: str = typer.Option("mean,focus,random", help="Embedding initializations to compare."),
    steps: int = typer.Option(30, min=0, help="Continued-training steps per initialization."),
    batch_size: int = typer.Option(4, min=1),
    max_tokens: int = typer.Option(128, min=8, help="Tokens per training document (cut)."),
    learning_rate: float = typer.Option(1e-4, min=0.0),
    n_eval: int = typer.Option(200, min=1, help="Held-out documents to score."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/tokenizer"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Tokenizer transfer baselines (B7): mean-of-pieces, FOCUS-like and random embedding inits."""
    from .recipes.tokenizer import prepare, run_transfer

    try:
        chosen = [m.strip() for m in methods.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in ("mean", "focus", "random")]
        if unknown or not chosen:
            raise ValueError(f"--methods {methods!r}: choose from mean, focus, random (comma-separated)")
        train, held_out = _texts(train_text, "--train-text"), _texts(eval_text, "--eval-text", n_eval)
        prepare(out, "transfer.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_transfer(model_obj, tokenizer, train_texts=train, eval_texts=held_out, vocab_size=vocab_size,
                     methods=chosen, steps=steps, out=out, batch_size=batch_size, max_tokens=max_tokens,
                     learning_rate=learning_rate, seed=seed, model_spec=model, log=_log)
        _done(out, "transfer.json")
    except ValueError as error:
        _fail(str(error))


if __name__ == "__main__":
    app(sys.argv[1:])
