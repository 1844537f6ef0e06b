"""A method = the signals to compute + a token policy + a loss: defined once, parsed once, validated early.

    signals: [{name: attention_entropy, layers: middle}]
    policy:  {name: quantile, signal: attention_entropy, ratio: 0.2, side: low}
    loss:    {preset: dapo, normalizer: selected}      # a loss preset plus LossConfig overrides

A method is named (a preset: ``tokenfocus/config/methods/<name>.yaml``), a YAML file of the same form, or an
inline dict; all three resolve through ``MethodConfig.from_dict`` to the same validated object, whose
signal and policy specs are already parsed (the trainer never parses them again). Every problem --
unknown keys, names or options, a policy reading a signal the method does not compute, duplicate YAML
keys, a policy option the policy itself refuses when it runs (found by a dry run on synthetic inputs,
``dry_run.dry_run_policy``) -- is reported at once, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..losses import LossConfig, loss_preset
from ..options import check_keys, coerce_section, section_schema
from ..policies import POLICIES, PolicySpec, parse_policy_spec
from ..registry import Spec
from ..signals import SIGNALS, SignalSpec, parse_signal_specs
from .dry_run import coerce_spec, dry_run_policy, form_problems, layer_problems, plan_problems
from .schema import ConfigError, load_yaml

TOP_LEVEL_KEYS = ("paper", "arxiv", "description", "signals", "policy", "loss")
METHODS_DIR = Path(__file__).parent / "methods"


@dataclass(frozen=True)
class MethodConfig:
    signals: tuple[SignalSpec, ...]
    policy: PolicySpec
    loss: LossConfig
    name: str = ""
    paper: str = ""
    arxiv: str = ""
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict, where: str = "method", name: str = "") -> "MethodConfig":
        problems = []
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with signals, policy and loss, got {data!r}")
        unknown = sorted((str(k) for k in set(data) - set(TOP_LEVEL_KEYS)))
        if unknown:
            problems.append(f"unknown key(s) {unknown}; valid keys: {list(TOP_LEVEL_KEYS)}")
        signals: tuple[SignalSpec, ...] = ()
        raw_signals = data.get("signals")
        if raw_signals and not isinstance(raw_signals, (list, tuple)):
            problems.append(f"signals: expected a list of signal specs, got {type(raw_signals).__name__} "
                            f"({raw_signals!r}); write signals: [{raw_signals!r}]")
        elif raw_signals and any(form_problems(s, "signal") for s in raw_signals):
            problems += [f"signals: {p}" for s in raw_signals for p in form_problems(s, "signal")]
        elif raw_signals:
            try:
                signals = tuple(parse_signal_specs([coerce_spec(s, SIGNALS) for s in raw_signals]))
                found = [p for spec in signals for p in layer_problems(spec)]
                problems += [f"signals: {p}" for p in found or plan_problems(list(signals))]
            except ValueError as error:
                problems.append(f"signals: {error}")
        policy = None
        raw_policy = data.get("policy", {"name": "full"})
        try:
            found = form_problems(raw_policy, "policy")
            if found:
                raise ValueError("; ".join(found))
            policy = parse_policy_spec(coerce_spec(raw_policy, POLICIES))
        except ValueError as error:
            problems.append(f"policy: {error}")
        loss = None
        raw_loss = data.get("loss", {"preset": "dapo"})
        schema = {"preset": str, **section_schema(LossConfig)}
        if not isinstance(raw_loss, dict):
            problems.append(f"loss: expected a mapping {{preset: ..., <LossConfig options>}}, got {raw_loss!r}")
        else:
            loss_data = coerce_section(raw_loss, schema)
            before = len(problems)
            check_keys("loss", loss_data, schema, problems)
            try:
                if len(problems) == before:
                    loss = loss_preset(loss_data.pop("preset", "dapo"), **loss_data)
            except ValueError as error:
                problems.append(f"loss: {error}")
        if policy is not None and not unknown:
            labels = {spec.label for spec in signals}
            missing = []
            try:
                missing = sorted(read_signals(policy) - labels)
            except (ValueError, TypeError) as error:
                problems.append(f"policy: {error}")
            if missing and not any(p.startswith("signals") for p in problems):
                problems.append(f"policy {policy.name!r} reads signal(s) {missing}, which the method does not compute; "
                                f"add them to signals (computed: {sorted(labels) or 'none'})")
            elif not missing and not problems:
                problems += [f"policy: {p}" for p in dry_run_policy(policy, labels)]
        if problems:
            raise ConfigError(f"{where}: " + "\n  - ".join(["invalid method config:"] + problems))
        return cls(signals, policy, loss, name, str(data.get("paper", "")), str(data.get("arxiv", "")),
                   str(data.get("description", "")).strip())

    @classmethod
    def from_yaml(cls, path: Path, name: str = "") -> "MethodConfig":
        return cls.from_dict(load_yaml(path), where=str(path), name=name)

    def to_dict(self) -> dict:
        """The resolved method as plain data (what a run's config.yaml records)."""
        return {"name": self.name, "signals": [spec_dict(s) for s in self.signals], "policy": spec_dict(self.policy),
                "loss": self.loss.to_dict()}


def spec_dict(spec: Spec) -> dict:
    out = {"name": spec.name, **spec.options}
    if spec.label != spec.name:
        out["label"] = spec.label
    return out


def read_signals(policy: Spec) -> set[str]:
    """Signal labels a policy spec reads: its ``signal`` / ``signals`` options (defaults included), and those of
    the policies it combines."""
    options = {**policy.entry.options(), **policy.options}
    names: set[str] = set()
    for key in ("signal", "signals"):
        value = options.get(key)
        if isinstance(value, str):
            names.add(value)
        elif isinstance(value, (list, tuple)):
            names.update(v for v in value if isinstance(v, str))
    children = options.get("policies") or ()
    for child in children if isinstance(children, (list, tuple)) else ():
        names |= read_signals(parse_policy_spec(child))
    return names


def method_presets() -> list[str]:
    """Names of the method presets shipped with tokenfocus (``config/methods/*.yaml``)."""
    return sorted(p.stem for p in METHODS_DIR.glob("*.yaml"))


@lru_cache(maxsize=None)
def method_preset(name: str) -> MethodConfig:
    path = METHODS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"method: {name!r} is neither a preset ({', '.join(method_presets())}) nor a .yaml path")
    return MethodConfig.from_yaml(path, name=name)


def resolve_method(method, base: Path | None = None) -> MethodConfig:
    """A preset name, a path to a method YAML (relative to ``base``), an inline dict, or a MethodConfig."""
    if isinstance(method, MethodConfig):
        return method
    if isinstance(method, dict):
        return MethodConfig.from_dict(method, where="method")
    if isinstance(method, int):  # YAML reads an unquoted preset name such as 8020 as a number
        method = str(method)
    if not isinstance(method, str):
        raise ConfigError(f"method: expected a preset name, a .yaml path or a mapping, got {method!r}")
    if method.endswith((".yaml", ".yml")):
        path = Path(method) if base is None or Path(method).is_absolute() else Path(base) / method
        if not path.is_file():
            raise ConfigError(f"method: file {path} not found")
        return MethodConfig.from_yaml(path, name=path.stem)
    return method_preset(method)
