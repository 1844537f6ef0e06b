"""Config is data, validated early: YAML without duplicate keys; typed sections (``options.parse_section``)."""

from __future__ import annotations

from pathlib import Path

import yaml


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


from ..options import check_keys, parse_section, suggest  # noqa: F401 (re-exported for config modules)
