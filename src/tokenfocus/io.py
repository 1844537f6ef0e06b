"""Run-directory files: atomic writes, append-only JSONL, and the manifest (what produced a run)."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for bytes (a torch.save buffer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(row, default=str) + "\n" for row in rows))


# What marks a directory as a training run or a study: an analysis or evaluation never replaces it.
RUN_MARKERS = ("config.yaml", "study.json", METRICS_FILE)


def next_free_dir(base: Path) -> Path:
    """``base`` when it does not exist or is empty, else the first free ``base-2``, ``base-3``, ..."""
    base = Path(base)
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def prepare_output_dir(path: Path, overwrite: bool = False, what: str = "output directory") -> Path:
    """Create ``path`` for a command's outputs, refusing to replace anything without ``overwrite``.

    A file in its place, a non-empty directory (without ``overwrite``), a training run or study directory
    (even with it), or a directory that cannot be written are errors that name the problem and the fix."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file; choose a directory")
    if path.is_dir() and any(path.iterdir()):
        marker = next((m for m in RUN_MARKERS if (path / m).exists()), None)
        if marker is not None:
            raise ValueError(f"{what} {path} holds a training run or study ({marker}); choose another directory")
        if not overwrite:
            raise ValueError(f"{what} {path} is not empty; pass --overwrite to replace it, or choose another")
        import shutil

        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be written ({error.strerror}); choose another directory") from None
    return path


class DirInUse(ValueError):
    """Another process holds the lock of a directory this one would write (``hold``)."""

    def __init__(self, message: str, pid: str, command: str):
        super().__init__(message)
        self.pid, self.command = pid, command


_HELD: dict[Path, int] = {}  # the locks this process holds, by path, with their depth (``hold`` is re-entrant)


@contextmanager
def hold(lock: Path, *, wait: bool = False, on_wait=None, what: str = ""):
    """Hold the flock of ``lock`` (created if missing, never deleted) while the block runs; the lock goes with its
    holder's process, so a killed holder never blocks the next one. The file names the holder (pid, command).
    Held by another process: raise ``DirInUse`` (naming ``what``, the holder and the fix), or with ``wait`` call
    ``on_wait(pid, command)`` and wait for it. Re-entrant within one process."""
    lock = Path(lock).absolute()
    if _HELD.get(lock):
        _HELD[lock] += 1
        try:
            yield
        finally:
            _HELD[lock] -= 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid, _, command = (handle.read().strip() or "?").partition(" ")
            if not wait:
                raise DirInUse(f"{what or lock.parent} is in use by process {pid} ({command or 'command unknown'}): "
                               "two processes would write the same files. Wait for it to finish, or stop it (kill "
                               f"-TERM {pid} saves a checkpoint to resume from) and run this again", pid,
                               command) from None
            if on_wait is not None:
                on_wait(pid, command)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]}\n")
        handle.flush()
        _HELD[lock] = 1
        try:
            yield
        finally:
            del _HELD[lock]
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_lock(run_dir: Path):
    """``hold`` for a run directory: its lock file lies beside it (``.<name>.lock``), so a new run's directory stays
    empty and ``--overwrite`` cannot remove the lock with it."""
    run_dir = Path(run_dir)
    return hold(run_dir.with_name(f".{run_dir.name}.lock"), what=f"run {run_dir}")


def holds_run_dir(run):
    """Decorate a recipe ``run(config, ...)`` to hold ``config.run_dir`` (``run_lock``) from before anything loads
    until it returns: a second process on the same run (two study slices on one arm, a train beside a study) gets a
    clear error instead of writing the same checkpoints. Only the main process of a distributed launch holds it."""

    @functools.wraps(run)
    def holding(config, *args, **kwargs):
        if int(os.environ.get("RANK", "0")) != 0:
            return run(config, *args, **kwargs)
        with run_lock(config.run_dir):
            return run(config, *args, **kwargs)

    return holding


def set_aside_torn_tail(path: Path) -> Path | None:
    """A file whose last line has no newline was torn by a killed writer: move that partial line to a side file
    (``<name>.torn-<unix time>``) and cut it from the file, so that the next append starts a fresh line.
    Returns the side file, or None when the file ends cleanly (or does not exist)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        start = max(0, size - 65536)
        while True:  # find the last newline, reading backwards in blocks
            handle.seek(start)
            block = handle.read(size - start)
            cut = block.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            start = max(0, start - 65536)
        keep = start + cut + 1 if cut >= 0 else 0
        handle.seek(keep)
        tail = handle.read()
        side = path.with_name(f"{path.name}.torn-{int(time.time() * 1000)}")
        side.write_bytes(tail)
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return side


def append_jsonl(path: Path, row: dict) -> None:
    """Append one complete line with a single write and fsync (metrics files are append-only). A torn last line
    left by a killed writer is set aside first (``set_aside_torn_tail``), never glued to the new line."""
    set_aside_torn_tail(path)
    line = (json.dumps(row, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict]:
    """Read complete lines; a torn last line (a killed writer) is ignored, never half-parsed. A complete line
    that is not JSON is an error naming the file and the line."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith("\n"):
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error.msg}); move or delete that line") from None
    return rows


def jsonl_objects(path: Path, wanted: str) -> tuple[list[tuple[int, dict]], list[str], str | None]:
    """A user's JSONL file, read for validation: (objects with their 1-based line numbers, one problem per bad line
    naming ``file:line``, the file's own problem or None). Blank lines are skipped; ``wanted`` names what each
    object should hold (for the message about a line that is JSON but not an object)."""
    path = Path(path)
    if not path.is_file():
        return [], [], f"{path} not found"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return [], [], f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
    objects, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}:{number}: not valid JSON ({error.msg})")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path.name}:{number}: expected a JSON object with {wanted}, got {type(data).__name__}")
            continue
        objects.append((number, data))
    return objects, problems, None


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
