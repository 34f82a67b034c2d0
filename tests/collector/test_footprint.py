"""The agent's memory footprint is bounded by design: no unused libraries loaded, malloc arenas capped."""

from __future__ import annotations

import importlib.util

import pytest

from bench.simulator import SimulatedModel
from edgeloop.collector import footprint


def _mapped(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_the_running_agent_loads_no_numpy_and_no_cloud_filesystems(agent):
    """A running agent has logged records through pyarrow without mapping numpy or Arrow's S3/GCS/Azure/HDFS libraries."""
    status, body = agent.post_records(list(SimulatedModel("vibration", seed=3).records(200)))
    assert status == 200, body
    agent.flush()  # sealed into Parquet: the journal, privacy and the spool have all run
    mapped = _mapped(agent.proc.pid)
    assert "libarrow.so" in mapped  # pyarrow itself is loaded, so its absence below means something
    assert "libarrow_s3" not in mapped and "_gcsfs" not in mapped and "_azurefs" not in mapped
    if importlib.util.find_spec("numpy") is not None:  # installed here (matplotlib needs it) yet kept out
        assert "numpy" not in mapped


def test_keeping_modules_out_must_happen_before_pyarrow_loads():
    """Asked after pyarrow is imported (too late to matter), keep_out_unused_modules refuses instead of silently doing nothing."""
    import pyarrow  # noqa: F401

    with pytest.raises(RuntimeError, match="before pyarrow"):
        footprint.keep_out_unused_modules()


def test_malloc_arenas_are_capped_on_glibc():
    """On glibc the arena cap is applied (mallopt accepts it)."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the arena cap is glibc's")
    assert footprint.bound_allocator(2) is True
