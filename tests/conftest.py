"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Holds a run's lock in another process until killed: "another study slice on the same arm".
_HOLDER = ("import sys, time\nfrom pathlib import Path\nfrom tokenfocus.io import run_lock\n"
           "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n")


@pytest.fixture
def run_held_elsewhere():
    """``hold(run_dir)`` -> the Popen of another process holding ``run_dir``'s lock (its command line ends with
    ``--arms full``); a test kills it to release the run, and any left is SIGKILLed when the test ends."""
    import subprocess
    import sys

    holders = []

    def hold(run_dir):
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir), "--arms", "full"],
                                  stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()
