"""The order ./scripts/test hands files to its xdist workers: the slowest files first, so none is left for the end.

xdist's ``--dist loadfile`` would order files by how many tests they hold, which put the few-test, minute-long
files (the fault-injection harness, the lake, the quick bench) last, each running alone on one core at the end.
``./scripts/test`` passes ``--no-loadscope-reorder`` and this hook puts ``SLOWEST_FIRST`` at the front; the other
files follow, those with the most tests first (xdist's own order).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Files by their wall time in a full run on 2 cores (--durations), slowest first; a file missing here runs after them.
SLOWEST_FIRST = (
    "tests/ingest/lake/test_replicas.py",
    "tests/ingest/test_hostile.py",
    "tests/reliability/test_agent_kills.py",
    "tests/ingest/lake/test_lake_cli.py",
    "tests/ingest/lake/test_lake_soak.py",
    "tests/reliability/test_server_kills.py",
    "tests/reliability/test_disk_full.py",
    "tests/reliability/test_memory_limit.py",
    "tests/ingest/test_crash.py",
    "tests/collector/test_agent.py",
    "tests/collector/test_health_report.py",
    "tests/test_bench.py",
    "tests/ingest/test_deletion.py",
    "tests/ingest/test_dedup.py",
    "tests/ingest/test_stored_values.py",
    "tests/ingest/lake/test_lake_s3.py",
    "tests/ingest/test_sql_tail.py",
    "tests/ingest/test_dashboard_browser.py",
    "tests/reliability/test_network.py",
    "tests/reliability/test_agent_disk_full.py",
    "tests/test_packaging.py",
)


def file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}
    sizes = Counter(file_of(item) for item in items)
    # A stable sort: tests keep their order inside a file (module fixtures are built once).
    items.sort(key=lambda item: (rank.get(file_of(item), len(rank)), -sizes[file_of(item)], file_of(item)))
