"""`tokenfocus probe ...`: the mechanism probes (sinks and massive activations, function tokens, block attention,
n-gram heads, linear concept probes). Each command writes its JSON into --out and re-renders probes.html there;
point all five at one directory for one page."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Mechanism probes: sinks, function tokens, block attention, n-gram "
                                              "heads, concepts (PRUNING_TOKENIZERS_MECHANISMS.md C1-C3, C5, C9).")
MODEL_HELP = "Model spec: packaged default, hub id, dir, .gguf, tiny-llama."
OUT_HELP = "Output directory (shared by the five commands; default runs/probes)."
TEXTS_HELP = ("Documents (text lines, or JSONL with text / question+answer / prompt), e.g. a GSM8K jsonl; "
              "default: the package's generated task texts.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _log(message: str) -> None:
    typer.echo(message, err=True)


def _texts(path: Optional[Path], n: int, seed: int = 0, answers: bool = True) -> list[str]:
    from .recipes.probe import generated_texts, read_texts

    return (read_texts(path, answers) if path is not None else generated_texts(n, seed))[:n]


def _numbers(text: str, flag: str, kind=float, example: str = "2,4,8") -> list:
    """Comma-separated numbers of an option, or a ValueError naming the option and an example."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"{flag} {text!r}: expected comma-separated {kind.__name__}s, e.g. {example}")
    return values


def _load(model: str):
    from .models import load_model

    return load_model(model)


def _done(out: Path, written: str) -> None:
    from .recipes.probe import finish

    page = finish(out)
    typer.echo(f"{written}: {out / written}")
    typer.secho(f"page: {page.resolve()}", fg=typer.colors.GREEN)


@app.command("sinks")
def sinks_command(
    texts: Optional[Path] = typer.Option(None, help=TEXTS_HELP),
    n: int = typer.Option(16, min=1, help="Texts to probe (one forward each)."),
    max_tokens: int = typer.Option(256, min=2, help="Tokens per text (cut)."),
    chat: bool = typer.Option(False, "--chat", help="Wrap each text as a user turn of the chat template."),
    sink_threshold: float = typer.Option(0.2, min=0.0, max=1.0, help="Sink score of an intermediate sink."),
    min_queries: int = typer.Option(16, min=1, help="Rows that must see a key for it to count as a sink."),
    finetune_steps: int = typer.Option(0, min=0, help="Also run the decorrelation fine-tune (lambda 0 vs "
                                                      "--decorrelation) for this many SFT steps."),
    decorrelation: float = typer.Option(1e4, min=0.0, help="lambda of the decorrelation term (the paper: 1e4)."),
    learning_rate: float = typer.Option(1e-5, min=0.0, help="Fine-tune learning rate."),
    batch_size: int = typer.Option(8, min=1, help="Fine-tune batch size."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/probes"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Attention received per key, massive activations, cos to the first token (C2); optionally the
    decorrelation fine-tune."""
    from .io import write_json
    from .recipes.probe import prepare, run_sinks
    from .recipes.probe_finetune import run_decorrelation

    try:
        if sink_threshold <= 0:
            raise ValueError("--sink-threshold must be in (0, 1]")
        documents = _texts(texts, n, seed)
        prepare(out, "sinks.json", overwrite)
        model_obj, tokenizer = _load(model)
        options = {"sink_threshold": sink_threshold, "min_queries": min_queries, "max_tokens": max_tokens}
        result = run_sinks(model_obj, tokenizer, texts=documents, out=out, model_spec=model, log=_log, chat=chat,
                           **options)
        if finetune_steps:
            result["finetune"] = run_decorrelation(model, out=out, steps=finetune_steps, lam=decorrelation,
                                                   learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                                   log=_log, **options)
            write_json(out / "sinks.json", result)
        _done(out, "sinks.json")
    except ValueError as error:
        _fail(str(error))


@app.command("function-tokens")
def function_tokens_command(
    texts: Optional[Path] = typer.Option(None, help=TEXTS_HELP),
    n: int = typer.Option(2000, min=2, help="Texts to read (the partition is fitted on all but --n-eval)."),
    coverage: float = typer.Option(0.4, min=0.01, max=0.99, help="Share of token occurrences the function tokens "
                                                                 "cover (the paper: 0.4)."),
    n_eval: int = typer.Option(64, min=1, help="Held-out texts for the loss decomposition."),
    max_tokens: int = typer.Option(256, min=2, help="Tokens per held-out text (cut)."),
    layer: Optional[int] = typer.Option(None, help="Steering layer (default: the middle one)."),
    alphas: str = typer.Option("2,4,8", help="Steering strengths (comma-separated multiples of the direction)."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/probes"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """The function/content partition, the 4-way loss decomposition and steering at function tokens (C1)."""
    from .recipes.probe import prepare, run_function_tokens

    try:
        strengths = _numbers(alphas, "--alphas")
        documents = _texts(texts, n, seed)
        if len(documents) <= n_eval:
            raise ValueError(f"{len(documents)} texts but --n-eval {n_eval}: the partition needs texts of its own; "
                             "pass more texts or a smaller --n-eval")
        prepare(out, "function_tokens.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_function_tokens(model_obj, tokenizer, texts=documents, out=out, coverage=coverage, n_eval=n_eval,
                            max_tokens=max_tokens, layer=layer, alphas=strengths, seed=seed, model_spec=model,
                            log=_log)
        _done(out, "function_tokens.json")
    except ValueError as error:
        _fail(str(error))


@app.command("concepts")
def concepts_command(
    vectors: str = typer.Option("unembedding", help="unembedding (Park et al.'s rows) or hidden (Liu et al.: the "
                                                    "last hidden state of each word after BOS)."),
    space: str = typer.Option("raw", help="raw (the paper) or causal (Park et al.'s whitening; unembedding only)."),
    C: float = typer.Option(1e-4, "--C", min=0.0, help="Inverse L2 strength of the logistic probe (the paper: 1e-4)."),
    min_pairs: int = typer.Option(5, min=2, help="Concepts with fewer single-token pairs are skipped (listed)."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/probes"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Mean-difference directions vs logistic-probe weights on word vectors (C3)."""
    from .recipes.probe import prepare, run_concepts

    try:
        if vectors not in ("unembedding", "hidden"):
            raise ValueError(f"--vectors {vectors!r}: choose unembedding or hidden")
        if space not in ("raw", "causal"):
            raise ValueError(f"--space {space!r}: choose raw or causal")
        if space == "causal" and vectors == "hidden":
            raise ValueError("--space causal whitens with all V unembedding rows; use --vectors unembedding")
        if C <= 0:
            raise ValueError("--C must be > 0")
        prepare(out, "concepts.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_concepts(model_obj, tokenizer, out=out, vectors=vectors, space=space, C=C, min_pairs=min_pairs, seed=seed,
                     model_spec=model, log=_log)
        _done(out, "concepts.json")
    except ValueError as error:
        _fail(str(error))


@app.command("block-attention")
def block_attention_command(
    texts: Optional[Path] = typer.Option(None, help="Word problems (text lines, or JSONL with question / text / "
                                                    "prompt; GSM8K answers are not used); default: generated facts "
                                                    "problems. The last sentence is the query block."),
    n_eval: int = typer.Option(24, min=1, help="Problems to measure the sensitivity on."),
    segmenter: str = typer.Option("sentence", help="How the statement is cut into blocks: sentence, paragraph, "
                                                   "similarity."),
    distill_steps: int = typer.Option(0, min=0, help="Also run block distillation (KL-weighted and uniform) for "
                                                     "this many steps on other problems."),
    distill_train: int = typer.Option(32, min=1, help="Problems to distil on (after the --n-eval ones)."),
    learning_rate: float = typer.Option(1e-5, min=0.0),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/probes"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Per-token sensitivity to block attention, and a short block distillation (C9)."""
    from .recipes.probe import facts_problems, prepare, run_block_attention, split_problem

    try:
        if segmenter not in ("sentence", "paragraph", "similarity"):
            raise ValueError(f"--segmenter {segmenter!r}: choose sentence, paragraph or similarity")
        wanted = n_eval + (distill_train if distill_steps else 0)
        documents = _texts(texts, 10 ** 9, seed, answers=False) if texts else facts_problems(wanted, seed)
        usable, skipped = [], []
        for number, text in enumerate(documents, 1):  # context + question, checked before the model loads
            try:
                split_problem(text)
                usable.append(text)
            except ValueError:
                skipped.append(number)
        if len(usable) < wanted:
            raise ValueError(f"{len(usable)} of {len(documents)} problems have at least two sentences (context + "
                             f"question), {wanted} needed (--n-eval + --distill-train); pass more problems")
        if skipped:
            _log(f"block attention: skipped {len(skipped)} one-sentence problems (rows {skipped[:10]}"
                 f"{' ...' if len(skipped) > 10 else ''})")
        documents = usable[:wanted]
        prepare(out, "block_attention.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_block_attention(model_obj, tokenizer, texts=documents, out=out, segmenter=segmenter, n_eval=n_eval,
                            distill_steps=distill_steps, distill_train=distill_train, learning_rate=learning_rate,
                            seed=seed, model_spec=model, log=_log)
        _done(out, "block_attention.json")
    except ValueError as error:
        _fail(str(error))


@app.command("ngram-heads")
def ngram_heads_command(
    periods: str = typer.Option("63,32", help="Block lengths of the repeated-random-token probes (comma-separated; "
                                              "two or more, so a positional head cannot pass for an n-gram head)."),
    n_dfa: int = typer.Option(4, min=1, help="DFA in-context sequences to score."),
    dfa_length: int = typer.Option(128, min=8, help="Symbols per DFA sequence."),
    train_seconds: float = typer.Option(0.0, min=0.0, help="Also train a tiny model from scratch on the DFA task "
                                                           "for this long and score its heads."),
    model: str = typer.Option("smollm2-135m-instruct", help=MODEL_HELP),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/probes"), help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Per-head in-context n-gram scores (C5), and optionally a tiny model trained where such heads form."""
    from .recipes.probe import prepare, run_ngram_heads

    try:
        lengths = _numbers(periods, "--periods", int, "63,32")
        if len(set(lengths)) < 2 or min(lengths) < 2 or 2 * max(lengths) + 1 > 512:
            raise ValueError(f"--periods {periods!r}: give two or more different block lengths in 2..255")
        prepare(out, "ngram_heads.json", overwrite)
        model_obj, tokenizer = _load(model)
        run_ngram_heads(model_obj, tokenizer, out=out, periods=lengths, n_dfa=n_dfa, dfa_length=dfa_length,
                        train_seconds=train_seconds, seed=seed, model_spec=model, log=_log)
        _done(out, "ngram_heads.json")
    except ValueError as error:
        _fail(str(error))


if __name__ == "__main__":
    app(sys.argv[1:])
