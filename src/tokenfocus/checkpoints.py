"""Checkpoints that survive any kill: written aside, verified, renamed into place whole; resume falls back.

    run_dir/.staging/checkpoint-N/   the trainer writes here (model, optimizer, scheduler, RNG, trainer state)
        + checkpoint.json            then a manifest: every file's size and SHA-256, written last
    run_dir/checkpoint-N/            one atomic rename publishes it: a kill leaves the old set or the new one

On resume ``latest_complete_checkpoint`` takes the newest checkpoint whose files match its manifest (an older
checkpoint without one must at least load), and reports what it skipped and why; ``set_aside`` moves a broken
one to ``run_dir/broken/`` instead of deleting it. ``rotate`` keeps the newest ``keep`` (at least two).

``fault_point(name)`` ends the process when ``TOKENFOCUS_FAULT_POINT`` names that point (``name@k``: its k-th
time): the fault-injection tests kill runs at exact moments of a save with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

PREFIX = "checkpoint-"
MANIFEST = "checkpoint.json"
STAGING = ".staging"
BROKEN = "broken"
MIN_KEPT = 2
FAULT_ENV = "TOKENFOCUS_FAULT_POINT"


_REACHED: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Exit at once (as a SIGKILL would leave things) when ``TOKENFOCUS_FAULT_POINT`` is ``name`` (the first time
    it is reached) or ``name@k`` (the k-th time)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted or not wanted.startswith(name):
        return
    _REACHED[name] = _REACHED.get(name, 0) + 1
    point, _, nth = wanted.partition("@")
    if point == name and _REACHED[name] == int(nth or 1):
        os._exit(137)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The published ``checkpoint-N`` directories of a run, oldest first."""
    found = [p for p in Path(run_dir).glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=step_of)


def step_of(checkpoint: Path) -> int:
    return int(Path(checkpoint).name[len(PREFIX):])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(checkpoint: Path) -> None:
    """Record every file's size and SHA-256 in ``checkpoint.json`` (after syncing them to disk)."""
    checkpoint = Path(checkpoint)
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        files[str(path.relative_to(checkpoint))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    target = checkpoint / MANIFEST
    target.write_text(json.dumps({"step": step_of(checkpoint), "written": time.time(), "files": files}, indent=1))
    _fsync(target)


def checkpoint_problems(checkpoint: Path, verify_hashes: bool = True) -> list[str]:
    """Why ``checkpoint`` cannot be resumed from (empty: it is complete)."""
    checkpoint = Path(checkpoint)
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return _legacy_problems(checkpoint)
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        return [f"its {MANIFEST} is unreadable ({error})"]
    problems = []
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, {expected['size']} were written")
        elif verify_hashes and _sha256(path) != expected["sha256"]:
            problems.append(f"{name} differs from what was written (SHA-256)")
    return problems


def _legacy_problems(checkpoint: Path) -> list[str]:
    """A checkpoint without a manifest (an older tokenfocus, or a save killed before its manifest): the trainer
    state is written last, and every file must load."""
    if not (checkpoint / "trainer_state.json").is_file():
        return [f"no {MANIFEST} and no trainer_state.json (the save was interrupted)"]
    problems = []
    for path in sorted(p for p in checkpoint.iterdir() if p.is_file()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), "pt") as handle:
                    for key in handle.keys():
                        handle.get_slice(key)
            elif path.suffix in (".pt", ".pth", ".bin"):
                import torch

                torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 - any failure to load means the file is damaged
            problems.append(f"{path.name} does not load ({type(error).__name__}: {str(error)[:120]})")
    return problems


def latest_complete_checkpoint(run_dir: Path) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """The newest complete checkpoint of ``run_dir`` (None if there is none), and the newer ones skipped with
    their problems."""
    skipped = []
    for checkpoint in reversed(checkpoint_dirs(run_dir)):
        problems = checkpoint_problems(checkpoint)
        if not problems:
            return checkpoint, skipped
        skipped.append((checkpoint, problems))
    return None, skipped


def set_aside(checkpoint: Path) -> Path:
    """Move a broken checkpoint to ``run_dir/broken/`` (kept for inspection, out of the trainer's way)."""
    checkpoint = Path(checkpoint)
    target = checkpoint.parent / BROKEN / f"{checkpoint.name}-{int(time.time())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(checkpoint, target)
    return target


def publish(staged: Path, target: Path) -> None:
    """Rename the complete ``staged`` checkpoint to ``target`` in one step (a same-step checkpoint already there
    is moved aside first and deleted after)."""
    staged, target = Path(staged), Path(target)
    previous = None
    if target.exists():
        previous = staged.parent / f"replaced-{target.name}-{int(time.time() * 1000)}"
        os.rename(target, previous)
    fault_point("checkpoint:rename")
    os.rename(staged, target)
    _fsync(target.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def rotate(run_dir: Path, keep: int | None) -> list[Path]:
    """Delete the oldest checkpoints beyond the newest ``keep`` (at least ``MIN_KEPT``; None keeps all)."""
    if keep is None:
        return []
    found = checkpoint_dirs(run_dir)
    removed = found[: max(0, len(found) - max(MIN_KEPT, keep))]
    for checkpoint in removed:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return removed


def clear_staging(run_dir: Path) -> None:
    """Remove what a killed save left in ``run_dir/.staging`` (never a published checkpoint)."""
    shutil.rmtree(Path(run_dir) / STAGING, ignore_errors=True)
