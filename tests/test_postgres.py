"""The throw-away PostgreSQL cluster of the lake tests cleans up after a test run that was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import postgres_bin, reap_orphans, running

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWNER = "import time; from tests.postgres import PostgresCluster, postgres_bin; print(PostgresCluster(postgres_bin()).folder, flush=True); time.sleep(600)"


def test_a_killed_runs_cluster_is_stopped_and_removed_by_the_next():
    """A cluster whose test run was SIGKILLed is stopped and its folder removed when the next cluster is made."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (Debian's postgresql package; .ci/run installs it)")
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        folder = owner.stdout.readline().strip()
        postmaster = int(Path(folder, "data", "postmaster.pid").read_text().splitlines()[0])
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        owner.stdout.close()
    assert running(postmaster)  # the killed run left its cluster running
    assert folder in [str(path) for path in reap_orphans(bin_dir)]
    assert not os.path.exists(folder)
    assert not running(postmaster)

