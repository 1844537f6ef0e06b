"""Run-directory files: atomic writes, append-only JSONL, and the manifest (what produced a run)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

# Run-directory files that more than one part reads or writes.
METRICS_FILE = "metrics.jsonl"
POLICY_WEIGHTS_FILE = "policy_weights.jsonl"  # one policy-weight histogram per generation batch (trainers -> report)

_VERSIONED = ("tokenfocus", "torch", "transformers", "trl", "accelerate", "gguf", "safetensors", "numpy")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(row, default=str) + "\n" for row in rows))


def append_jsonl(path: Path, row: dict) -> None:
    """Append one complete line with a single write and fsync (metrics files are append-only)."""
    line = (json.dumps(row, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    """Read complete lines; a torn last line (a killed writer) is ignored, never half-parsed."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


def latest_metrics(path: Path) -> dict[int, dict]:
    """step -> the last complete step record of a metrics.jsonl (lines with an ``event`` key are not steps;
    a resumed run re-logs the steps after its checkpoint, and the later record wins)."""
    records = {}
    for row in read_jsonl(path) if Path(path).is_file() else []:
        if "step" in row and "event" not in row:
            records[row["step"]] = row
    return records


def _git_state() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def manifest(seeds: dict[str, int] | None = None, device: str = "cpu", **extra) -> dict:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git": _git_state(),
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "seeds": seeds or {},
        "command": sys.argv,
        **extra,
    }
