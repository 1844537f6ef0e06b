"""Symbolic answer checking (``math-verify``) in a worker process that can be killed.

Why a process: math-verify hands "2^(2^100)" to SymPy, which computes the power in C while holding the GIL; a
thread can neither be stopped nor keep the interpreter from waiting for it at exit, and the memory grows past
1 GB. The worker is a plain ``python`` subprocess (not ``multiprocessing``: its spawn and forkserver modes
re-import the caller's ``__main__`` -- a training script that imports torch -- and fork is unsafe in a threaded
trainer). It loads only this file and math-verify, caps its address space (``RLIMIT_AS``), is started lazily,
reused across calls, killed and replaced after a timeout or a crash, and killed at exit (``atexit``; on Linux
also by the kernel when its parent dies, ``PR_SET_PDEATHSIG``).

Protocol: one JSON line per batch, ``[[gold, predicted], ...]``, to the worker's stdin; one line per pair back
(``1`` true, ``0`` false, ``e`` error, ``m`` the pair drove the worker past half its memory cap), so the parent
times each pair on its own and re-runs the rest of a batch in a fresh worker after one pair times out.
This file imports nothing from tokenfocus: the worker loads it by path.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Literal

Outcome = Literal["true", "false", "timeout", "error"]
DEFAULT_MEMORY_LIMIT_MB = 1024

# Runs in the worker: drop the working directory from sys.path (a stray ./json.py must not shadow the stdlib),
# load this file by path (not ``-m``: the package __init__ files may import heavy things), serve.
_BOOTSTRAP = ("import sys\n"
              "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
              "import importlib.util as u\n"
              "spec = u.spec_from_file_location('_tokenfocus_verify_worker', sys.argv[1])\n"
              "module = u.module_from_spec(spec); spec.loader.exec_module(module)\n"
              "module.serve(int(sys.argv[2]), int(sys.argv[3]))\n")
_LIVE: set[_Worker] = set()  # started and not yet killed: killed at exit


class _Worker:
    """One worker process, parent side: send a batch, read result lines with a deadline, kill."""

    def __init__(self, memory_limit_bytes: int):
        self.owner = os.getpid()  # a fork of the parent must not use (or kill) the parent's worker
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), str(memory_limit_bytes), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.ready = False
        self._buffer = b""
        self._selector = selectors.DefaultSelector()  # poll/epoll: fds past 1024 are fine, unlike select()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        _LIVE.add(self)

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def send(self, pairs: Sequence[tuple[str, str]]) -> None:
        # ensure_ascii: lone surrogates in sampled text survive as escapes; the worker is idle and reading here
        data = memoryview(json.dumps(pairs).encode("ascii") + b"\n")
        while data:
            data = data[self.proc.stdin.write(data):]

    def read_line(self, timeout_s: float) -> bytes | None:
        """The next line without its newline; None after ``timeout_s``; b"" when the worker has died."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def kill(self) -> None:
        _LIVE.discard(self)
        if self.owner != os.getpid():
            return
        self.proc.kill()
        try:
            self.proc.wait(timeout=2.0)  # SIGKILL: exits at once; reaped so that no zombie is left
        except subprocess.TimeoutExpired:
            pass
        self._selector.close()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class SymbolicVerifier:
    """math-verify's ``verify(parse(gold), parse(predicted))`` for a batch of pairs, each under a timeout, in a
    worker process capped at ``memory_limit_mb`` of address space (0: no cap). Thread-safe (calls take turns)."""

    def __init__(self, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB, startup_timeout_s: float = 60.0):
        self.memory_limit_bytes = int(memory_limit_mb) << 20
        self.startup_timeout_s = startup_timeout_s
        self.restarts = 0
        self._worker: _Worker | None = None
        self._lock = threading.Lock()

    def verify_many(self, pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[Outcome]:
        """One outcome per (gold, predicted) pair; a pair that times out or kills the worker costs only itself."""
        outcomes: list[Outcome] = []
        with self._lock:
            while len(outcomes) < len(pairs):
                outcomes += self._run(pairs[len(outcomes):], timeout_s)
        return outcomes

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.kill()
                self._worker = None

    def _run(self, pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[Outcome]:
        """Outcomes of a prefix of ``pairs``, at least one: up to the first pair that times out or kills the worker."""
        worker = self._ready_worker()
        if worker is None:
            return ["error"] * len(pairs)
        try:
            worker.send(pairs)
        except OSError:  # died since the liveness check
            self._replace()
            return ["error"]
        outcomes: list[Outcome] = []
        for _ in pairs:
            # The worker starts pair i when it answers pair i-1, so each pair gets its own timeout_s.
            line = worker.read_line(timeout_s)
            if line in (b"1", b"0", b"e"):
                outcomes.append({b"1": "true", b"0": "false", b"e": "error"}[line])
                continue
            outcomes.append("timeout" if line is None else "error")  # b"": crashed; b"m": over half its memory cap
            self._replace()
            break
        return outcomes

    def _ready_worker(self) -> _Worker | None:
        if self._worker is not None and not self._worker.alive():
            self._worker.kill()
            self._worker = None
        if self._worker is None:
            self._worker = self._start()
        if self._worker is not None and not self._worker.ready:
            if self._worker.read_line(self.startup_timeout_s) != b"ready":  # math-verify missing, or too slow a start
                self._worker.kill()
                self._worker = None
                return None
            self._worker.ready = True
        return self._worker

    def _replace(self) -> None:
        """Kill the worker and start its successor now, so that it loads while the caller goes on."""
        self._worker.kill()
        self._worker = self._start()
        self.restarts += 1

    def _start(self) -> _Worker | None:
        try:
            return _Worker(self.memory_limit_bytes)
        except OSError:  # no interpreter, no file descriptors left: scored as errors, retried on the next call
            return None


_SHARED: dict[int, SymbolicVerifier] = {}
_SHARED_LOCK = threading.Lock()


def shared_verifier(memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB) -> SymbolicVerifier:
    """The process's verifier for this memory cap: one worker serves every reward object (an evaluation that
    builds a new reward each time pays no start-up)."""
    with _SHARED_LOCK:
        if memory_limit_mb not in _SHARED:
            _SHARED[memory_limit_mb] = SymbolicVerifier(memory_limit_mb)
        return _SHARED[memory_limit_mb]


@atexit.register
def _kill_live_workers() -> None:
    for worker in list(_LIVE):
        worker.kill()


# ---- worker side ----------------------------------------------------------------------------------------------

def serve(memory_limit_bytes: int, parent_pid: int) -> None:
    """The worker's loop: read batches from stdin, write one result line per pair."""
    import logging
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then kills us
    _die_with_parent(parent_pid)
    results = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the protocol
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from math_verify import parse, verify

    def read(text: str) -> list:
        # Bare LaTeX with nested commands (\frac{170}{\sqrt{4}}, a \boxed{}'s content) is found only between $
        # signs. No signal-alarm timeouts here: the parent times this and kills us.
        found = parse(text, parsing_timeout=None)
        return found or (parse(f"${text}$", parsing_timeout=None) if "\\" in text else found)

    def check(gold: str, predicted: str) -> bool:
        return bool(verify(read(gold), read(predicted), timeout_seconds=None))

    check("1/2", "0.5")  # SymPy loads lazily: not on the first pair's clock
    if memory_limit_bytes > 0:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = memory_limit_bytes if hard == resource.RLIM_INFINITY else min(memory_limit_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    results.write(b"ready\n")
    for line in sys.stdin.buffer:
        for gold, predicted in json.loads(line):
            try:
                result = b"1" if check(gold, predicted) else b"0"
            except Exception:  # noqa: BLE001 - reported, scored 0; MemoryError included
                result = b"e"
            # math-verify swallows MemoryError itself (answering False), so an allocation refused at the cap is
            # seen here as the peak: past half the cap, report it and exit so a fresh worker takes the rest.
            if memory_limit_bytes > 0 and _peak_address_space() > memory_limit_bytes // 2:
                results.write(b"m\n")
                return
            results.write(result + b"\n")


def _peak_address_space() -> int:
    """VmPeak, in bytes; 0 without /proc. (Not ru_maxrss: Linux carries the parent's peak across fork and exec.)"""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills us when the parent (strictly: the thread that started us) exits, even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: atexit in the parent is the only clean-up
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)
