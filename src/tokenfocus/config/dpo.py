"""`tokenfocus dpo` configuration: token-weighted DPO (TAB-PO, cDPO), validated in full before any model loads.

    model: smollm2-135m-instruct           # the policy's start (any load_model spec)
    reference: null                        # the DPO reference; default: a frozen copy of the starting model
    pairs: {path: pairs.jsonl}             # preference rows (tasks.preference), or pairs made from a task's gold
        # {task: {name: json_answers, tiers: [D2, D3]}, n: 256, seed: 0, max_digits: 2}   (tasks.json_answers)
        # + on_policy: {samples: 8, temperature: 1.0, max_new_tokens: 48}: sampled from the reference when the
        #   run starts (chosen correct, rejected 1-2 digits off), cached beside the run directory
        # {task: {name: arithmetic, tiers: [D2, D3]}, cdpo: {n_prompts: 240, samples: 16, ...}}: cDPO's pairs with
        #   critical-token weights (recipes.cdpo) made from the reference when the run starts, cached the same way
    weights: {mode: diff, hi: 1.0, lo: 0.2, barrier: 1.0, tau: 0.5}   # policies.pairs.PairWeighting
    trl: {beta: 0.1, max_steps: 20, learning_rate: 5e-6, ...}          # any DPOConfig field
    run: {dir: runs/tab-po, seed: 0, save_steps: 10}

Conditions of TAB-PO (RL_TOKEN_CREDIT.md §7): DPO (mode uniform), omega-weighted DPO (mode diff), TAB-PO (diff +
barrier), barrier only (uniform + barrier). cDPO: mode column with the weights of ``tokenfocus cdpo-weights``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..models import DEFAULT_MODEL, check_model_spec
from ..options import check_keys, parse_section
from ..policies.pairs import PairWeighting, token_level_conflicts
from ..tasks import Task, parse_task
from ..tasks.json_answers import perturbed_pairs
from ..tasks.preference import read_pairs, summarize
from .cdpo import CDPOWeightsConfig
from .schema import ConfigError, load_yaml
from .train import RunConfig, apply_overrides, device_defaults
from .trl_fields import check_trl

TOP_KEYS = {"model": str, "reference": str | None, "pairs": dict, "weights": dict, "trl": dict, "run": dict}
PAIR_KEYS = {"path": str, "task": dict, "n": int, "seed": int, "max_digits": int, "on_policy": dict, "cdpo": dict}
ON_POLICY_KEYS = {"samples": int, "temperature": float, "max_new_tokens": int}
# CPU-friendly DPOConfig defaults (any can be overridden under trl:).
DPO_DEFAULTS = {
    "max_steps": 10, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 5e-6,
    "beta": 0.1, "max_length": 256, "logging_steps": 1, "bf16": False,
    "gradient_checkpointing": False, "report_to": [], "lr_scheduler_type": "constant", "warmup_steps": 0,
    "save_strategy": "steps", "disable_tqdm": True, "loss_type": ["sigmoid"],
}


@dataclass(frozen=True)
class DPORunConfig:
    model: str
    reference: str | None
    rows: list[dict]  # the preference rows (prompt, chosen, rejected[, weights])
    lines: list[int]  # each row's line in its file (0 for generated pairs)
    pairs_source: str
    weighting: PairWeighting
    trl: dict
    run: RunConfig
    source: dict
    # pairs made from the reference when the run starts: on-policy {task, n, seed, max_digits, samples, temperature,
    # max_new_tokens} or cDPO's {task, cdpo: {CDPOWeightsConfig fields}}; None when the rows are given
    sampling: dict | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir)

    def trl_args(self) -> dict:
        args = {**DPO_DEFAULTS, **device_defaults(), **self.trl}
        args.update(output_dir=self.run.dir, seed=self.run.seed, save_steps=self.run.save_steps)
        if self.run.save_total_limit is not None:
            args["save_total_limit"] = self.run.save_total_limit
        return args

    def to_dict(self) -> dict:
        """What the run's config.yaml records: the config as given, the resolved weighting and DPOConfig fields."""
        return {**self.source, "weights_resolved": asdict(self.weighting), "run": asdict(self.run),
                "pairs_resolved": {"source": self.pairs_source, "rows": len(self.rows)},
                "trl_resolved": self.trl_args()}


def _pairs(spec: dict, base: Path | None, problems: list[str]) -> tuple[list[dict], list[int], str, dict | None]:
    """(rows, their lines, a description, the on-policy sampling spec or None)."""
    before = len(problems)
    check_keys("pairs", spec, PAIR_KEYS, problems)
    if len(problems) > before:
        return [], [], "", None
    if ("path" in spec) == ("task" in spec):
        problems.append("pairs: give either path (a JSONL file of prompt/chosen/rejected rows) or task (pairs made "
                        "from a task's gold solutions, or sampled from the model with on_policy)")
        return [], [], "", None
    if "path" in spec:
        if any(k in spec for k in ("n", "seed", "max_digits", "on_policy", "cdpo")):
            problems.append("pairs: n, seed, max_digits, on_policy and cdpo apply to task pairs only; remove them "
                            "with path")
        path = Path(spec["path"]).expanduser()
        path = path if path.is_absolute() or base is None else base / path
        rows, found = read_pairs(path)
        if found:
            problems.append(f"pairs: {len(found)} bad row(s) in {path}:" + summarize(found))
        return [r.data for r in rows], [r.line for r in rows], str(path), None
    task: Task | None = parse_task(spec["task"], problems, base=base)
    if "cdpo" in spec:
        return _cdpo_pairs(spec, task, problems)
    n, seed, digits = spec.get("n", 256), spec.get("seed", 0), spec.get("max_digits", 2)
    if n < 1 or digits < 1:
        problems.append(f"pairs: n and max_digits must be >= 1, got {n}, {digits}")
        return [], [], "", None
    if task is None:
        return [], [], "", None
    if "on_policy" in spec:
        sampling = {"samples": 8, "temperature": 1.0, "max_new_tokens": 48, **(spec["on_policy"] or {})}
        check_keys("pairs.on_policy", spec["on_policy"] or {}, ON_POLICY_KEYS, problems)
        if not (sampling["samples"] >= 2 and sampling["temperature"] > 0 and sampling["max_new_tokens"] >= 1):
            problems.append("pairs.on_policy: samples must be >= 2, temperature > 0, max_new_tokens >= 1")
        try:
            task.gold_examples(n, seed=seed)  # the prompts can be drawn
        except ValueError as error:
            problems.append(f"pairs.task: {error}")
        return [], [], f"task {task.name}: sampled from the reference", {
            "task": task.spec(), "n": n, "seed": seed, "max_digits": digits, **sampling}
    try:
        rows = perturbed_pairs(task.gold_examples(n, seed=seed), seed=seed, max_digits=digits)
    except ValueError as error:
        problems.append(f"pairs.task: {error}")
        return [], [], "", None
    return chat_rows(rows), [0] * len(rows), f"task {task.name}: gold vs 1-{digits} digit(s) changed", None


def _cdpo_pairs(spec: dict, task: Task | None, problems: list[str]) -> tuple[list[dict], list[int], str, dict | None]:
    """cDPO's pairs (``recipes.cdpo``), made from the DPO reference when the run starts: validated here."""
    given = spec["cdpo"] or {}
    extra = sorted(k for k in ("n", "seed", "max_digits", "on_policy") if k in spec)
    if extra:
        problems.append(f"pairs: {extra} do not apply to cdpo pairs; set n_prompts and seed under pairs.cdpo")
    owned = sorted(k for k in ("model", "save_models") if k in given)
    if owned:
        problems.append(f"pairs.cdpo: {owned} are not settable here: the pairs are made from the DPO reference "
                        "(reference:, default the starting model) and no model is saved; remove them")
        given = {k: v for k, v in given.items() if k not in owned}
    settings = parse_section(CDPOWeightsConfig, given, "pairs.cdpo", problems)  # with its range checks
    if settings is None or task is None:
        return [], [], "", None
    try:
        task.train_examples(settings.n_prompts)  # the prompts can be drawn
    except ValueError as error:
        problems.append(f"pairs.task: {error}")
    fields = {k: v for k, v in asdict(settings).items() if k not in ("model", "save_models")}
    return [], [], f"task {task.name}: cDPO pairs made from the reference", {"task": task.spec(), "cdpo": fields}


def chat_rows(rows: list[dict]) -> list[dict]:
    """Plain prompt/chosen/rejected rows in chat format, as GRPO training and evaluation prompt the model."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def build_dpo_config(data: dict, base: Path | None = None, where: str = "dpo config",
                     check_model: bool = True) -> DPORunConfig:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: invalid dpo config: expected a mapping, got {data!r}")
    check_keys("top level", data, TOP_KEYS, problems)
    if "pairs" not in data:
        problems.append("pairs: missing; give {path: pairs.jsonl} or {task: {name: json_answers}, n: 256}")
    if problems:
        raise ConfigError(f"{where}: invalid dpo config:\n  - " + "\n  - ".join(problems))
    model = data.get("model", DEFAULT_MODEL)
    if check_model:
        problems += [f"model: {p}" for p in check_model_spec(model)]
        if data.get("reference") is not None:
            problems += [f"reference: {p}" for p in check_model_spec(data["reference"])]
    rows, lines, source, sampling = _pairs(data["pairs"], base, problems)
    weighting = parse_section(PairWeighting, data.get("weights"), "weights", problems)
    if weighting is not None and weighting.mode == "column" and "on_policy" in (data["pairs"] or {}):
        problems.append("weights.mode 'column' reads weights from a pairs file; sampled pairs carry none")
    elif weighting is not None and weighting.mode == "column":
        lacking = [line or i for i, (row, line) in enumerate(zip(rows, lines))
                   if not all(k in row for k in ("chosen_weights", "rejected_weights"))]
        if lacking:
            problems.append(f"weights.mode 'column' reads chosen_weights and rejected_weights from every row; "
                            f"rows at lines {lacking[:10]} lack them (tokenfocus cdpo-weights writes them)")
    run = parse_section(RunConfig, data.get("run"), "run", problems)
    trl = check_trl(dict(data.get("trl") or {}), problems, trainer="dpo")
    if problems:
        raise ConfigError(f"{where}: invalid dpo config:\n  - " + "\n  - ".join(problems))
    config = DPORunConfig(str(model), data.get("reference"), rows, lines, source, weighting, trl, run, dict(data),
                          sampling)
    _check_dpo_args(config, problems)
    if problems:
        raise ConfigError(f"{where}: invalid dpo config:\n  - " + "\n  - ".join(problems))
    return config


def _check_dpo_args(config: DPORunConfig, problems: list[str]) -> None:
    from trl import DPOConfig

    try:
        args = DPOConfig(**config.trl_args())
    except Exception as error:  # noqa: BLE001 (any rejection of the settings is listed)
        problems.append(f"trl: DPOConfig rejected the settings: {type(error).__name__}: {error}")
        return
    token_level = config.weighting.token_level or (args.label_smoothing > 0 and list(args.loss_type) == ["sigmoid"])
    if token_level:
        problems += [f"trl: weights {config.weighting.mode!r} (token-level loss) does not implement {c}"
                     for c in token_level_conflicts(args)]
    if args.padding_free:
        problems.append("trl.padding_free: token weights ride in padded rows; set it false")


def load_dpo_config(path: Path, overrides: dict | None = None) -> DPORunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return build_dpo_config(apply_overrides(load_yaml(path), overrides), base=path.parent, where=str(path))
