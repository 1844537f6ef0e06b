"""A method = signals to compute + a token policy + a loss; what configs/*.yaml describe for each paper.

    signals: [attention_entropy, {name: predictive_entropy}]
    policy:  {name: quantile, signal: attention_entropy, ratio: 0.2, side: low}
    loss:    {preset: dapo, normalizer: selected}         # a preset name plus LossConfig overrides

Validation is early and complete: every problem (unknown keys, unknown names or options, wrong values,
duplicate keys in the YAML) is reported at once, before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from .losses import LossConfig, get_preset
from .policies import parse_policy_spec
from .signals import parse_signal_specs

TOP_LEVEL_KEYS = ("paper", "arxiv", "description", "signals", "policy", "loss")


class ConfigError(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(path: Path) -> dict:
    """Parse YAML refusing duplicate keys (PyYAML keeps the last one silently)."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 (SafeLoader subclass)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


@dataclass(frozen=True)
class MethodConfig:
    signals: list
    policy: dict
    loss: LossConfig
    paper: str = ""

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "MethodConfig":
        problems = []
        unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
        if unknown:
            problems.append(f"unknown key(s) {unknown}; valid keys: {list(TOP_LEVEL_KEYS)}")
        signals = data.get("signals", [])
        try:
            parse_signal_specs(signals) if signals else None
        except ValueError as error:
            problems.append(f"signals: {error}")
        policy = data.get("policy", {"name": "full"})
        try:
            parse_policy_spec(policy)
        except ValueError as error:
            problems.append(f"policy: {error}")
        loss = None
        loss_data = dict(data.get("loss", {"preset": "dapo"}))
        try:
            valid = {f.name for f in fields(LossConfig)}
            preset = loss_data.pop("preset", "dapo")
            bad = sorted(set(loss_data) - valid)
            if bad:
                raise ValueError(f"unknown option(s) {bad}; valid: preset, {', '.join(sorted(valid))}")
            loss = get_preset(preset, **loss_data).loss
        except ValueError as error:
            problems.append(f"loss: {error}")
        if problems:
            raise ConfigError(f"{where}: " + "\n  - ".join(["invalid method config:"] + problems))
        return cls(list(signals), dict(policy), loss, str(data.get("paper", "")))

    @classmethod
    def from_yaml(cls, path: Path) -> "MethodConfig":
        return cls.from_dict(load_yaml(path), where=str(path))

