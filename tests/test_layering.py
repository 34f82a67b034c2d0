"""What each side imports: the server never loads the device package, the device never loads DuckDB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(statement: str, *, block: str = "") -> set[str]:
    """The edgeloop and duckdb modules a fresh interpreter has loaded after ``statement``."""
    code = (
        "import sys\n"
        + (f"sys.modules[{block!r}] = None\n" if block else "")
        + statement
        + "\nprint('\\n'.join(sorted(m for m, v in sys.modules.items() if v is not None and m.startswith(('edgeloop', 'duckdb')))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "module",
    ["edgeloop.ingest.cli", "edgeloop.ingest.app", "edgeloop.ingest.store", "edgeloop.ingest.admin", "edgeloop.ingest.export"],
)
def test_the_server_never_imports_the_device_package(module):
    """Importing any ingest module loads nothing from edgeloop.collector."""
    loaded = loaded_after(f"import {module}")
    assert module in loaded
    assert [name for name in loaded if name.startswith("edgeloop.collector")] == []


@pytest.mark.parametrize(
    "statement",
    [
        "import edgeloop.collector.cli as c; import edgeloop.collector.agent, edgeloop.collector.scheduler",
        "from edgeloop import Client",
        "import edgeloop.schemas.registry, edgeloop.errors, edgeloop.settings, edgeloop.durable, edgeloop.logs",
    ],
)
def test_the_device_side_runs_without_duckdb(statement):
    """The agent, the SDK and the shared modules import with DuckDB made unimportable (a device install)."""
    loaded = loaded_after(statement, block="duckdb")
    assert [name for name in loaded if name.startswith(("duckdb", "edgeloop.ingest"))] == []


def test_shared_modules_import_neither_side():
    """edgeloop.errors, settings, durable, logs and schemas load neither edgeloop.collector nor edgeloop.ingest."""
    loaded = loaded_after("import edgeloop.errors, edgeloop.settings, edgeloop.durable, edgeloop.logs, edgeloop.schemas")
    assert [name for name in loaded if name.startswith(("edgeloop.collector", "edgeloop.ingest"))] == []


def test_the_ingest_command_without_duckdb_says_which_extra_to_install():
    """edgeloop-ingest on a device install (no DuckDB) exits 1 with one line naming edgeloop[server]."""
    code = "import sys; sys.modules['duckdb'] = None; sys.argv = ['edgeloop-ingest', 'sql', 'SELECT 1']\n" \
           "import runpy; runpy.run_module('edgeloop.ingest.cli', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "edgeloop-ingest: DuckDB is not installed; the server needs: pip install 'edgeloop[server]'"
    ]
