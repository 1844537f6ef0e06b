"""`tokenfocus sft` configuration: SFT or One-Token Rollout (OTR) on TRL's SFTTrainer, validated before any model
loads.

    model: smollm2-135m-instruct
    data: {task: {name: arithmetic, tiers: [D1, D2, D3]}, n: 512, seed: 1000}   # a task's gold solutions
        # or {path: sft.jsonl}: rows {prompt, completion}, plain text or chat (tasks.preference.read_completions)
    otr: {k: 8, temperature: 1.0, beta_neg: 0.1, always_include_gt: false, baseline: none}   # null: plain SFT
    trl: {max_steps: 60, learning_rate: 1e-5, per_device_train_batch_size: 16, ...}   # any SFTConfig field
    run: {dir: runs/otr, seed: 0, save_steps: 20}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..losses.otr import OTRConfig
from ..models import DEFAULT_MODEL, check_model_spec
from ..options import check_keys, parse_section
from ..tasks import parse_task
from ..tasks.preference import read_completions, summarize
from .schema import ConfigError, load_yaml
from .train import RunConfig, apply_overrides, device_defaults
from .trl_fields import check_trl

TOP_KEYS = {"model": str, "data": dict, "otr": dict | None, "trl": dict, "run": dict}
DATA_KEYS = {"path": str, "task": dict, "n": int, "seed": int}
SFT_DEFAULTS = {
    "max_steps": 10, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "learning_rate": 1e-5,
    "max_length": 256, "logging_steps": 1, "bf16": False, "gradient_checkpointing": False,
    "report_to": [], "lr_scheduler_type": "constant", "warmup_steps": 0, "save_strategy": "steps",
    "disable_tqdm": True,
}


@dataclass(frozen=True)
class SFTRunConfig:
    model: str
    rows: list[dict]
    data_source: str
    otr: OTRConfig | None
    trl: dict
    run: RunConfig
    source: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir)

    def trl_args(self) -> dict:
        args = {**SFT_DEFAULTS, **device_defaults(), **self.trl}
        args.update(output_dir=self.run.dir, seed=self.run.seed, save_steps=self.run.save_steps)
        if self.run.save_total_limit is not None:
            args["save_total_limit"] = self.run.save_total_limit
        return args

    def to_dict(self) -> dict:
        return {**self.source, "otr_resolved": asdict(self.otr) if self.otr else None, "run": asdict(self.run),
                "data_resolved": {"source": self.data_source, "rows": len(self.rows)},
                "trl_resolved": self.trl_args()}


def _rows(spec: dict, base: Path | None, problems: list[str]) -> tuple[list[dict], str]:
    before = len(problems)
    check_keys("data", spec, DATA_KEYS, problems)
    if len(problems) > before:
        return [], ""
    if ("path" in spec) == ("task" in spec):
        problems.append("data: give either path (a JSONL file of prompt/completion rows) or task (its gold "
                        "solutions)")
        return [], ""
    if "path" in spec:
        path = Path(spec["path"]).expanduser()
        path = path if path.is_absolute() or base is None else base / path
        rows, found = read_completions(path)
        if found:
            problems.append(f"data: {len(found)} bad row(s) in {path}:" + summarize(found))
        return [r.data for r in rows], str(path)
    task = parse_task(spec["task"], problems, base=base)
    n = spec.get("n", 512)
    if n < 1:
        problems.append(f"data.n must be >= 1, got {n}")
    if task is None or n < 1:
        return [], ""
    try:
        drawn = task.gold_examples(n, seed=spec.get("seed"))
    except ValueError as error:
        problems.append(f"data.task: {error}")
        return [], ""
    rows = [{"prompt": [{"role": "user", "content": e.prompt}],
             "completion": [{"role": "assistant", "content": e.solution}]} for e in drawn]
    return rows, f"task {task.name}: {n} gold solutions"


def build_sft_config(data: dict, base: Path | None = None, where: str = "sft config",
                     check_model: bool = True) -> SFTRunConfig:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: invalid sft config: expected a mapping, got {data!r}")
    check_keys("top level", data, TOP_KEYS, problems)
    if "data" not in data:
        problems.append("data: missing; give {task: {name: arithmetic}, n: 512} or {path: sft.jsonl}")
    if problems:
        raise ConfigError(f"{where}: invalid sft config:\n  - " + "\n  - ".join(problems))
    model = data.get("model", DEFAULT_MODEL)
    if check_model:
        problems += [f"model: {p}" for p in check_model_spec(model)]
    rows, source = _rows(data["data"], base, problems)
    otr = parse_section(OTRConfig, data["otr"], "otr", problems) if data.get("otr") is not None else None
    run = parse_section(RunConfig, data.get("run"), "run", problems)
    trl = check_trl(dict(data.get("trl") or {}), problems, trainer="sft")
    if problems:
        raise ConfigError(f"{where}: invalid sft config:\n  - " + "\n  - ".join(problems))
    config = SFTRunConfig(str(model), rows, source, otr, trl, run, dict(data))
    _check_sft_args(config, problems)
    if problems:
        raise ConfigError(f"{where}: invalid sft config:\n  - " + "\n  - ".join(problems))
    return config


def _check_sft_args(config: SFTRunConfig, problems: list[str]) -> None:
    from trl import SFTConfig

    try:
        args = SFTConfig(**config.trl_args())
    except Exception as error:  # noqa: BLE001 (any rejection of the settings is listed)
        problems.append(f"trl: SFTConfig rejected the settings: {type(error).__name__}: {error}")
        return
    if config.otr is not None:
        if args.loss_type != "nll":
            problems.append(f"trl.loss_type {args.loss_type!r}: OTR replaces the NLL loss; leave it 'nll'")
        if args.label_smoothing_factor:
            problems.append("trl.label_smoothing_factor: OTR has no label smoothing; leave it 0")
        if args.padding_free:
            problems.append("trl.padding_free: OTR reads padded rows; set it false")


def load_sft_config(path: Path, overrides: dict | None = None) -> SFTRunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return build_sft_config(apply_overrides(load_yaml(path), overrides), base=path.parent, where=str(path))
