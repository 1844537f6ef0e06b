"""The `tokenfocus` command line."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

# transformers 5.24 warns on every config that TRL builds about its own renamed fields; not the user's to fix.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="tokenfocus: which tokens carry the learning signal? Compute per-token signals and act on them.",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _parse_signal_option(text: str):
    """'attention_entropy' or a JSON object '{"name": "attention_entropy", "layers": "all"}'."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            _fail(f"--signal {text!r} is not valid JSON: {error.msg}")
    return text


@app.command()
def analyze(
    model: str = typer.Option("smollm2-135m-instruct", help="Model spec: packaged default, hub id, dir, .gguf, tiny-llama."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="A prompt (repeatable)."),
    prompts_file: Optional[Path] = typer.Option(None, help="Text file (one prompt per line) or JSONL with 'prompt'."),
    arithmetic: int = typer.Option(0, help="Add N generated arithmetic prompts (tiers D1-D3)."),
    task: list[str] = typer.Option([], "--task", help="Add N test prompts of a task, with its span marks (which the "
                                                     "counterfactual signals need): NAME:N, e.g. facts:8 (repeatable)."),
    signal: list[str] = typer.Option(
        [], "--signal", "-s",
        help="Signal name or JSON spec (repeatable). Default: attention_entropy, predictive_entropy, logprobs, position.",
    ),
    color_by: Optional[str] = typer.Option(None, help="Signal label that colours the page (default: the first)."),
    ratio: float = typer.Option(0.2, help="Mark the bottom/top ratio of tokens as anchors/explorers."),
    max_new_tokens: int = typer.Option(48, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(8, min=1),
    out: Optional[Path] = typer.Option(None, help="Directory to write (default: runs/analyze, or the first free "
                                                  "runs/analyze-N)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out (never a training run)."),
    teacher: Optional[str] = typer.Option(None, help="A model with the same tokenizer for the teacher signals "
                                                     "(teacher_logprobs, teacher_logratio, teacher_kl)."),
):
    """Generate responses, compute per-token signals, save them and write an HTML page."""
    from .models import ModelSpecError
    from .recipes.analyze import DEFAULT_SIGNALS, AnalyzeConfig, load_prompt_file, run_analyze
    from .rollout import PromptError
    from .io import next_free_dir
    from .tasks import build_task

    out = out if out is not None else next_free_dir(Path("runs/analyze"))
    try:
        prompts = list(prompt)
        if prompts_file is not None:
            prompts += load_prompt_file(prompts_file)
        if arithmetic:
            prompts += [e.prompt for e in build_task({"name": "arithmetic", "seed": seed}).train_examples(arithmetic)]
        spans = [{}] * len(prompts)
        for choice in task:
            name, _, count = choice.partition(":")
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"--task {choice!r}: expected NAME:N with N >= 1, e.g. facts:8")
            drawn = build_task({"name": name}).eval_examples("test", int(count), seed)
            prompts += [e.prompt for e in drawn]
            spans += [e.spans for e in drawn]
        config = AnalyzeConfig(
            model=model, prompts=prompts, spans=spans,
            signals=[_parse_signal_option(s) for s in signal] or list(DEFAULT_SIGNALS),
            color_by=color_by, ratio=ratio, max_new_tokens=max_new_tokens, temperature=temperature,
            seed=seed, batch_size=batch_size, out=str(out), overwrite=overwrite, teacher=teacher,
        )
        page = run_analyze(config, progress=sys.stderr.isatty(), log=lambda m: typer.echo(m, err=True))
    except (PromptError, ModelSpecError, ValueError) as error:
        _fail(str(error))
    typer.echo(f"signals: {out / 'signals.safetensors'}")
    typer.echo(f"tokens:  {out / 'tokens.jsonl'}")
    typer.secho(f"page:    {page.resolve()}", fg=typer.colors.GREEN)


# The options every resumable training command takes (train, dpo, sft).
RESUME = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in run.dir.")
RUN_DIR = typer.Option(None, "--run-dir", help="Override run.dir.")
MAX_STEPS = typer.Option(None, "--max-steps", help="Override trl.max_steps.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a non-empty run.dir (its contents are deleted).")
ALLOW_CHANGE = typer.Option(False, "--allow-config-change",
                            help="With --resume: continue with a config that differs from the run's.")


def _train_command(load, run, config: Path, resume: bool, run_dir: Optional[Path], max_steps: Optional[int],
                   overwrite: bool, allow_config_change: bool) -> None:
    """Load ``config`` with the command-line overrides and run it: ``load(path, overrides)``, ``run(config, ...)``."""
    from .config import ConfigError

    overrides = {}
    if run_dir is not None:
        overrides["run.dir"] = str(run_dir)
    if max_steps is not None:
        overrides["trl.max_steps"] = max_steps
    try:
        out, _ = run(load(config, overrides), resume=resume, log=lambda m: typer.echo(m, err=True),
                     overwrite=overwrite, allow_config_change=allow_config_change)
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    _end_processes()
    typer.secho(f"run: {out.resolve()}  (metrics: {out / 'metrics.jsonl'})", fg=typer.colors.GREEN)


def _end_processes() -> None:
    """Under torchrun: every rank waits for the main one's ``final/`` and the process group is closed before the
    interpreter exits (a rank that exits with gloo's threads alive was seen to abort, 'terminate called without an
    active exception', after a finished run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@app.command()
def train(config: Path = typer.Argument(..., help="Train config YAML (see tokenfocus.config.train)."),
          resume: bool = RESUME, run_dir: Optional[Path] = RUN_DIR, max_steps: Optional[int] = MAX_STEPS,
          overwrite: bool = OVERWRITE, allow_config_change: bool = ALLOW_CHANGE):
    """GRPO training with token signals and a token policy (TRL 1.16), in a resumable run directory."""
    from .config import load_train_config
    from .recipes.train import run_train

    _train_command(load_train_config, run_train, config, resume, run_dir, max_steps, overwrite, allow_config_change)


@app.command()
def dpo(config: Path = typer.Argument(..., help="DPO config YAML (see tokenfocus.config.dpo)."),
        resume: bool = RESUME, run_dir: Optional[Path] = RUN_DIR, max_steps: Optional[int] = MAX_STEPS,
        overwrite: bool = OVERWRITE, allow_config_change: bool = ALLOW_CHANGE):
    """Token-weighted DPO (TAB-PO, cDPO) on TRL's DPOTrainer, in a resumable run directory."""
    from .config.dpo import load_dpo_config
    from .recipes.dpo import run_dpo

    _train_command(load_dpo_config, run_dpo, config, resume, run_dir, max_steps, overwrite, allow_config_change)


@app.command()
def sft(config: Path = typer.Argument(..., help="SFT config YAML (see tokenfocus.config.sft)."),
        resume: bool = RESUME, run_dir: Optional[Path] = RUN_DIR, max_steps: Optional[int] = MAX_STEPS,
        overwrite: bool = OVERWRITE, allow_config_change: bool = ALLOW_CHANGE):
    """SFT, or One-Token Rollout (otr:), on TRL's SFTTrainer, in a resumable run directory."""
    from .config.sft import load_sft_config
    from .recipes.sft import run_sft

    _train_command(load_sft_config, run_sft, config, resume, run_dir, max_steps, overwrite, allow_config_change)


@app.command("cdpo-weights")
def cdpo_weights(
    config: Path = typer.Argument(..., help="cdpo-weights config YAML (see tokenfocus.recipes.cdpo)."),
):
    """cDPO: sample, LoRA-train positive/negative models, write DPO pairs with critical-token weights (+ checks)."""
    from .config import ConfigError
    from .config.schema import load_yaml
    from .recipes.cdpo import parse_cdpo_config, run_cdpo_weights

    try:
        if not config.is_file():
            raise ConfigError(f"config file not found: {config}")
        settings, task, out = parse_cdpo_config(load_yaml(config), base=config.parent)
        summary = run_cdpo_weights(settings, task, out, log=lambda m: typer.echo(m, err=True))
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    check = summary["first_wrong_digit"]
    typer.secho(f"{summary['pairs']} pairs -> {out}; first wrong digit is the top-weight token in "
                f"{check['top1_hit_rate']} of {check['labelled']} labelled responses (chance {check['chance_top1']})",
                fg=typer.colors.GREEN)


@app.command()
def prune(
    config: Path = typer.Argument(..., help="Prune sweep config YAML (see tokenfocus.config.prune), or with "
                                          "--rejudge a finished sweep's directory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished sweep in the config's dir."),
    dir: Optional[Path] = typer.Option(None, "--dir", help="Output directory (overrides the config's dir)."),
    rejudge: bool = typer.Option(False, "--rejudge", help="Summary, claims and page again from a finished sweep's "
                                                          "files (no model loads)."),
):
    """Token pruning: methods x budgets x layers on a testbed, each beside random at the same budget -> prune.html."""
    from .config import ConfigError
    from .config.prune import load_prune_config
    from .recipes.prune import rejudge as rejudge_sweep
    from .recipes.prune import run_prune

    try:
        if rejudge:
            out = rejudge_sweep(config, log=lambda m: typer.echo(m, err=True))
            typer.secho(f"pruning sweep judged again -> {out / 'prune.html'}", fg=typer.colors.GREEN)
            return
        settings = load_prune_config(config, {"dir": str(dir)} if dir else None)
        out = run_prune(settings, log=lambda m: typer.echo(m, err=True), overwrite=overwrite)
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    typer.secho(f"pruning sweep -> {out / 'prune.html'}", fg=typer.colors.GREEN)


def _csv(value: str | None, kind, flag: str) -> list | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    try:
        return [kind(item) for item in items] or None
    except ValueError:
        raise ValueError(f"{flag}: expected a comma-separated list of {kind.__name__}s, got {value!r}") from None


@app.command()
def study(
    config: Path = typer.Argument(..., help="Study config YAML (see tokenfocus.config.study)."),
    allow_config_change: bool = typer.Option(False, "--allow-config-change",
                                             help="Continue a study whose config changed beyond adding arms/seeds."),
    arms: str = typer.Option(None, "--arms", help="Run only these arms (comma-separated): one slice of the study."),
    seeds: str = typer.Option(None, "--seeds", help="Run only these seeds (comma-separated): one slice of the study."),
    export: Path = typer.Option(None, "--export", help="Copy the light run files (no checkpoints) here after every "
                                "finished run, merged with what is there: the folder to commit; report renders it."),
    rebuilt_warmup: bool = typer.Option(False, "--rebuilt-warmup", help="The warm-up re-created here differs "
                                        "bitwise from the export's (another kind of CPU): continue if it behaves as "
                                        "the committed starting model on the held-out sets (checked, recorded)."),
):
    """Run every arm x seed of a study (resumable), or one slice of it, evaluate them, and render the report."""
    from .config import ConfigError, load_study_config
    from .recipes.study import StudyRunsFailed, run_study
    from .report.study_report import render_report

    try:
        chosen_arms = _csv(arms, str, "--arms")
        chosen_seeds = _csv(seeds, int, "--seeds")
        cfg = load_study_config(config)
        root = run_study(cfg, log=lambda m: typer.echo(m, err=True), allow_config_change=allow_config_change,
                         arms=chosen_arms, seeds=chosen_seeds, export=export, rebuilt_warmup=rebuilt_warmup)
        page = render_report(export or root)
    except StudyRunsFailed as failed:  # every other run finished: show them, then say what failed
        page = render_report(export or failed.root)
        typer.secho(f"report: {page.resolve()}", fg=typer.colors.YELLOW)
        _fail(str(failed))
    except (ConfigError, ValueError) as error:
        _fail(str(error))
    typer.secho(f"report: {page.resolve()}", fg=typer.colors.GREEN)


@app.command()
def report(directory: Path = typer.Argument(..., help="A study directory or a run directory.")):
    """Render a study or run directory to report.html + plots/*.png from its files alone."""
    from .report.study_report import render_report

    try:
        page = render_report(directory)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    typer.secho(f"report: {page.resolve()}", fg=typer.colors.GREEN)


@app.command()
def evidence(
    directory: Path = typer.Argument(..., help="A study directory or a finished run directory."),
    n: int = typer.Option(64, min=4, help="Held-out problems answered per model."),
    max_new_tokens: int = typer.Option(24, min=1),
    force: bool = typer.Option(False, "--force", help="Recompute runs that already have evidence.json."),
):
    """Evidence gathering (attention mass on the prompt and its numbers) for every trained model -> evidence.json."""
    from .recipes.evidence import run_evidence

    try:
        written = run_evidence(directory, n=n, max_new_tokens=max_new_tokens, force=force)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    typer.secho(f"wrote {len(written)} evidence.json file(s); run `tokenfocus report {directory}` to show them",
                fg=typer.colors.GREEN)


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., help="Model spec or a checkpoint / final directory of a run."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Run directory to write eval/ results and a metrics line to."),
    task: str = typer.Option("arithmetic", help="A registered task (tokenfocus tasks lists them)."),
    split: str = typer.Option("test", help="train, test or hard-test (arithmetic)."),
    n: int = typer.Option(64, min=1, help="Number of problems."),
    k: int = typer.Option(4, min=0, help="Samples per problem for mean@k (0: greedy only)."),
    temperature: float = typer.Option(1.0, min=0.0),
    max_new_tokens: int = typer.Option(48, min=1),
    seed: int = typer.Option(0),
    path: Optional[str] = typer.Option(None, help="The task's data source, for tasks that read one (gsm8k: a .jsonl "
                                                  "path or openai/gsm8k)."),
    answer_line_only: bool = typer.Option(False, "--answer-line-only",
                                          help='Count only the last "Answer: N" line (the strict training reward).'),
    shared_prefill: bool = typer.Option(False, "--shared-prefill",
                                        help="The k samples of a problem share one prompt forward (faster on long "
                                             "prompts; other draws than without)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier result of the same split and model."),
):
    """pass@1 (greedy) and mean@k (sampled) accuracy of a model or checkpoint on a split."""
    from .models import ModelSpecError
    from .recipes.evaluate import EvalConfig, run_eval
    from .tasks import DatasetError, build_task

    spec = {"name": task, **({"path": path} if path is not None else {})}
    config = EvalConfig(model=model, task=spec, split=split, n=n, k=k, temperature=temperature,
                        max_new_tokens=max_new_tokens, seed=seed, answer_line_only=answer_line_only,
                        shared_prefill=shared_prefill)
    try:
        build_task(spec).eval_examples(split, 1)  # a bad task, path or split fails before the model loads
        result = run_eval(config, run_dir, progress=sys.stderr.isatty(), overwrite=overwrite)
    except (ModelSpecError, DatasetError, ValueError) as error:
        _fail(str(error))
    summary = {key: value for key, value in result.items() if key.startswith(("pass@", "mean@")) and value is not None}
    typer.echo(json.dumps(summary, indent=2))


@app.command("diagnose")
def diagnose_command(
    model: str = typer.Argument(..., help="Model spec or a checkpoint / final directory of a run."),
    task: str = typer.Option("arithmetic", help="A registered task (tokenfocus tasks lists them)."),
    tiers: Optional[str] = typer.Option(None, help="Training tiers, comma-separated (arithmetic), e.g. D2,D3."),
    path: Optional[str] = typer.Option(None, help="The task's data source, for tasks that read one (gsm8k)."),
    groups: int = typer.Option(8, help="Informative prompt groups (unequal rewards) per diagnosed batch."),
    batches: int = typer.Option(4, help="Batches diagnosed (each on its own groups)."),
    num_generations: int = typer.Option(8, help="Completions per prompt (G)."),
    max_new_tokens: int = typer.Option(32),
    temperature: float = typer.Option(1.0, help="Sampling temperature (> 0)."),
    seed: int = typer.Option(0, help="Seeds the prompts drawn, the sampling and the diagnosis."),
    reward: str = typer.Option("answer", help="answer, or digits (a dense reward for random-weight models)."),
    answer_line_only: bool = typer.Option(True, "--answer-line-only/--any-answer",
                                          help='Count only the last "Answer: N" line (the training reward).'),
    out: Optional[Path] = typer.Option(None, help="Directory to write (default: the first free runs/diagnose-N)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out (never a training run)."),
):
    """The trainer's gradient diagnosis (anchors, explorers, controls) on batches of informative prompt groups."""
    from .io import next_free_dir
    from .models import ModelSpecError
    from .recipes.diagnose import run_diagnosis
    from .tasks import DatasetError

    out = out if out is not None else next_free_dir(Path("runs/diagnose"))
    try:
        spec = {"name": task, **({"path": path} if path is not None else {})}
        chosen_tiers = _csv(tiers, str, "--tiers")
        if chosen_tiers is not None:
            spec["tiers"] = chosen_tiers
        run_diagnosis(model, spec, out, groups=groups, batches=batches, num_generations=num_generations,
                      max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, reward=reward,
                      answer_line_only=answer_line_only, overwrite=overwrite, log=lambda m: typer.echo(m, err=True))
    except (ModelSpecError, DatasetError, ValueError) as error:
        _fail(str(error))
    typer.echo(f"batches: {out / 'diagnosis.jsonl'}")
    typer.secho(f"summary: {(out / 'diagnosis.json').resolve()}", fg=typer.colors.GREEN)


@app.command()
def signals():
    """List the registered signals, what they need and what they cost."""
    from .signals import SIGNALS

    for info in SIGNALS.values():
        options = ", ".join(f"{k}={v!r}" for k, v in info.options().items()) or "-"
        typer.echo(f"{info.name:20s} cost={info.cost:18s} requires={sorted(info.requires) or '-'}")
        description = " ".join(info.description.split())  # docstrings wrap; the listing does not
        typer.echo(f"{'':20s} {description}")
        typer.echo(f"{'':20s} options: {options}")


@app.command()
def tasks():
    """List the registered tasks, their splits and options."""
    from dataclasses import fields

    from .tasks import TASKS

    for name, cls in sorted(TASKS.items()):
        options = ", ".join(f"{f.name}={f.default!r}" for f in fields(cls.Options))
        typer.echo(f"{name:12s} splits={list(cls.splits)}  {(cls.__doc__ or '').strip().splitlines()[0]}")
        typer.echo(f"{'':12s} options: {options}")


@app.command()
def presets():
    """List the method presets (signals + policy + loss), with the paper each reproduces."""
    from .config import method_preset, method_presets

    for name in method_presets():
        method = method_preset(name)
        signals = ", ".join(s.label for s in method.signals) or "-"
        arxiv = f" (arXiv {method.arxiv})" if method.arxiv else ""
        typer.echo(f"{name:17s} policy={method.policy.name:10s} signals={signals}")
        typer.echo(f"{'':17s} {method.paper}{arxiv}")


def _add_subcommands() -> None:
    from .cli_probe import app as probe_app
    from .cli_tokenizer import app as tokenizer_app

    app.add_typer(tokenizer_app, name="tokenizer")
    app.add_typer(probe_app, name="probe")


_add_subcommands()


if __name__ == "__main__":
    app()
