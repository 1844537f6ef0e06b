"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Holds a run's lock (or, given "file", the lock file itself) in another process until killed: "another study
# slice on the same arm".
_HOLDER = ("import sys, time\nfrom pathlib import Path\nfrom tokenfocus.io import hold, run_lock\n"
           "target = Path(sys.argv[1])\n"
           "with (hold(target) if sys.argv[2] == 'file' else run_lock(target)):\n"
           "    print('held', flush=True)\n    time.sleep(600)\n")


@pytest.fixture
def run_held_elsewhere():
    """``hold(run_dir)`` -> the Popen of another process holding ``run_dir``'s lock (its command line ends with
    ``--arms full``), ``hold(path, file=True)`` the lock file ``path`` itself; a test kills it to release the lock,
    and any left is SIGKILLed when the test ends."""
    import subprocess
    import sys

    holders = []

    def hold(target, file=False):
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target), "file" if file else "run", "--arms",
                                   "full"], stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()
