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


def loaded_by_command(tmp_path: Path, package: str, *args: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded once one ``edgeloop-<package>`` command has run through."""
    listing = tmp_path / "modules.txt"
    code = (
        "import sys\n"
        f"from edgeloop.{package}.cli import main\n"
        "try:\n"
        f"    code = main({list(args)!r})\n"
        "finally:\n"  # --help leaves main by SystemExit
        f"    open({str(listing)!r}, 'w').write('\\n'.join({{n.partition('.')[0] for n, m in sys.modules.items() if m}}))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return set(listing.read_text().split())


@pytest.fixture
def ingest_config(tmp_path: Path) -> Path:
    """A config whose database has the vibration model registered (its tables and training view exist)."""
    config = tmp_path / "ingest.toml"
    config.write_text(f'[store]\ndb_path = "{tmp_path / "edgeloop.duckdb"}"\n')
    pushed = subprocess.run(
        [sys.executable, "-m", "edgeloop.ingest.cli", "schemas", "push", str(ROOT / "schemas/models/vibration.toml"),
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert pushed.returncode == 0, pushed.stderr
    return config


@pytest.mark.parametrize(
    "command",
    [
        ["sql", "SELECT * FROM vibration", "--format", "csv", "--out", "{out}"],
        ["sql", "SELECT * FROM vibration", "--format", "parquet", "--out", "{out}"],
        ["export", "--model", "vibration", "--format", "parquet", "--out", "{out}"],
        ["export", "--model", "vibration", "--format", "csv", "--out", "{out}"],
    ],
    ids=["sql-csv", "sql-parquet", "export-parquet", "export-csv"],
)
def test_sql_and_export_to_a_file_start_without_arrow_or_aiohttp(tmp_path, ingest_config, command):
    """sql and export written to a file by DuckDB's COPY load neither pyarrow (nor numpy), aiohttp nor asyncio."""
    out = tmp_path / "result"
    loaded = loaded_by_command(tmp_path, "ingest", *[part.format(out=out) for part in command], "--config", str(ingest_config))
    assert out.stat().st_size > 0
    assert loaded & {"pyarrow", "numpy", "aiohttp", "asyncio"} == set()


@pytest.mark.parametrize("command", [["--help"], ["sql", "--help"], ["export", "--help"], ["report", "--help"]])
def test_ingest_help_loads_neither_arrow_nor_the_config_models(tmp_path, command):
    """edgeloop-ingest's help, of a command too, loads neither pyarrow, aiohttp, asyncio nor pydantic."""
    loaded = loaded_by_command(tmp_path, "ingest", *command)
    assert loaded & {"pyarrow", "numpy", "aiohttp", "asyncio", "pydantic"} == set()


def test_collector_status_of_a_running_agent_loads_no_arrow(tmp_path):
    """edgeloop-collector status, answered by a running agent, loads neither pyarrow (nor numpy), aiohttp nor DuckDB."""
    from tests.collector.conftest import AgentProcess, default_config

    root = tmp_path / "agent"
    root.mkdir()
    agent = AgentProcess(root, default_config(root)).start()
    try:
        loaded = loaded_by_command(tmp_path, "collector", "status", "--json", "--config", str(agent.config_path))
    finally:
        agent.kill()
    assert loaded & {"pyarrow", "numpy", "aiohttp", "duckdb"} == set()
