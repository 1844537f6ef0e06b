"""The math-verify worker (tasks/verify.py): timeouts that fire, a memory cap, prompt exit, arbitrary input.

"2^(2^100)" is the hostile case: SymPy computes the power in C holding the GIL, so before the worker process
an in-thread timeout never fired, memory grew past 1 GB and the stuck thread kept the interpreter from exiting.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenfocus.tasks import AnswerReward, answers_match
from tokenfocus.tasks import verify as verify_module
from tokenfocus.tasks.verify import SymbolicVerifier, shared_verifier

HOSTILE = "Answer: 2^(2^100)"


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: our container's init may not reap what it adopts)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_hostile_power_times_out_and_the_next_call_scores():
    reward = AnswerReward(timeout_s=1.0)
    assert reward(["Answer: 3/4"], ["0.75"]) == [1.0]  # starts the worker: its start-up is not on the clock
    start = time.perf_counter()
    assert reward([HOSTILE], ["85"]) == [0.0]
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, elapsed
    assert reward.counters() == {"reward/errors": 0.0, "reward/timeouts": 1.0, "reward/calls": 2.0}
    assert reward(["Answer: 1/2", "Answer: 85", "Answer: 84"], ["0.5", "85", "85"]) == [1.0, 1.0, 0.0]
    assert reward.counters()["reward/timeouts"] == 1.0


def test_a_timeout_costs_only_its_own_completion():
    """The batch goes in one round trip; after the hostile one times out the rest re-run in a fresh worker."""
    reward = AnswerReward(timeout_s=0.5)
    completions = ["Answer: 1/2", HOSTILE, "Answer: 3/4", "Answer: 2^(3^99)", "Answer: \\frac{2}{4}"]
    assert reward(completions, ["0.5", "85", "0.75", "1", "0.5"]) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert reward.counters()["reward/timeouts"] == 2.0


def test_answers_match_raises_on_timeout():
    with pytest.raises(TimeoutError):
        answers_match("2^(2^100)", "85", timeout_s=0.3)
    assert answers_match("1/2", "0.5") and not answers_match("1/3", "0.5")


def test_process_exits_promptly_after_a_timeout_and_leaves_no_worker():
    script = textwrap.dedent(f"""
        from tokenfocus.tasks import AnswerReward
        from tokenfocus.tasks.verify import shared_verifier
        print(AnswerReward(timeout_s=1.0)([{HOSTILE!r}], ["85"]))
        print(shared_verifier()._worker.proc.pid, flush=True)  # the successor, already loading
    """)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    rewards, pid = done.stdout.split("\n")[:2]
    assert rewards == "[0.0]"
    assert elapsed < 10.0, elapsed  # interpreter + imports + worker start-up + the 1 s timeout
    assert _gone(int(pid))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_worker_dies_with_a_killed_parent():
    script = textwrap.dedent("""
        from tokenfocus.tasks.verify import SymbolicVerifier
        verifier = SymbolicVerifier()
        verifier.verify_many([("1", "1")], 30)
        print(verifier._worker.proc.pid, flush=True)
        verifier.verify_many([("85", "2^(2^100)")], 60)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as parent:
        worker = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: no atexit
    deadline = time.monotonic() + 5.0
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_memory_cap_stops_a_runaway_verification_in_the_worker_only():
    """2^(2^100) grows by ~75 MB/s until it meets the 256 MiB cap: an error, long before the 60 s timeout."""
    reward = AnswerReward(timeout_s=60.0, memory_limit_mb=256)
    assert reward(["Answer: 1/2"], ["0.5"]) == [1.0]
    peak = _peak_rss_bytes()
    start = time.perf_counter()
    assert reward([HOSTILE], ["85"]) == [0.0]
    assert time.perf_counter() - start < 30.0
    assert reward.counters()["reward/errors"] + reward.counters()["reward/timeouts"] == 1.0
    assert reward.counters()["reward/errors"] == 1.0  # the cap, not the timeout, ended it
    assert _peak_rss_bytes() - peak < 200 << 20
    assert reward(["Answer: 1/2"], ["0.5"]) == [1.0]  # a fresh worker


def test_a_worker_that_cannot_start_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(verify_module, "_BOOTSTRAP", "import sys; sys.exit(3)")
    verifier = SymbolicVerifier()
    try:
        assert verifier.verify_many([("0.5", "1/2"), ("1", "1")], 1.0) == ["error", "error"]
    finally:
        verifier.close()


def test_close_kills_the_worker_and_a_closed_verifier_restarts():
    verifier = SymbolicVerifier()
    assert verifier.verify_many([("0.5", "1/2")], 30.0) == ["true"]
    pid = verifier._worker.proc.pid
    verifier.close()
    assert _gone(pid)
    assert verifier.verify_many([("0.5", "1/3")], 30.0) == ["false"]
    verifier.close()


def test_shared_verifier_is_one_per_memory_cap():
    assert shared_verifier() is shared_verifier(1024)
    assert shared_verifier(512) is not shared_verifier(1024)
    shared_verifier(512).close()


MATHY = st.text(alphabet=st.sampled_from(list("0123456789+-*/^().,eE{}\\$: \nAnswerboxedfrcsqt=")), max_size=40)
TEXT = st.one_of(st.text(max_size=60), MATHY, MATHY.map(lambda s: "Answer: " + s), MATHY.map(lambda s: f"\\boxed{{{s}}}"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(TEXT, st.lists(st.fixed_dictionaries({"content": TEXT}), max_size=2)),
                          st.one_of(TEXT, st.integers())), max_size=4))
def test_any_completion_and_gold_give_one_float_each_and_never_raise(batch):
    reward = AnswerReward(timeout_s=0.5, format_bonus=0.1)
    rewards = reward([completion for completion, _ in batch], [gold for _, gold in batch])
    assert len(rewards) == len(batch)
    assert all(isinstance(value, float) and value in (0.0, 0.1, 1.0, 1.1) for value in rewards)


def test_the_exit_hook_kills_every_live_worker():
    """Kill everything the tests above started (the atexit hook's job in a real run) and check it is gone."""
    pids = [worker.proc.pid for worker in verify_module._LIVE if worker.owner == os.getpid()]
    verify_module._kill_live_workers()
    assert all(_gone(pid) for pid in pids)
