"""Shared fixtures for the device agent: a real ``edgeloop-collector run`` subprocess on a unix socket.

    def test_something(agent_factory):
        agent = agent_factory(spool={"seal_max_rows": 100}).start()
        status, body = agent.post_records([...])
        agent.kill()                     # SIGKILL, for crash tests
        agent.start()                    # same state dir, same config: recovers the journal
        assert agent.stop() == 0         # SIGTERM: seals open segments, exits 0

``agent_factory(**sections)`` writes a config into ``tmp_path`` (sync off, no disk reserve,
a 32-byte fleet key, sampling seed 1) with each keyword deep-merged into its section, and
returns an ``AgentProcess`` that is not started yet. Every process it made is killed at
teardown. ``agent`` is one started with the defaults.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.collector.client import call_agent
from edgeloop.errors import AgentUnavailableError
from edgeloop.schemas.envelope import with_declared_types
from edgeloop.schemas.model_schema import ModelSchema
from tests.ingest.conftest import cli as ingest_cli
from tests.ingest.conftest import free_port
from tests.ingest.conftest import write_config as write_ingest_config

FLEET_KEY = b"0123456789abcdef-test-fleet-key!"
ROOT = Path(__file__).resolve().parents[2]
FAULT_SHIM = Path(__file__).parent / "fault_shim"


def toml_dumps(config: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for nested tables of str, int, float, bool (enough for configs)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        text += f"\n[{name}]\n" + toml_dumps(table, f"{name}.")
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return orjson.dumps(str(value)).decode()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table inside a list
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


@dataclass
class AgentProcess:
    """One agent's config and state dir, and its current process (if started)."""

    root: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return Path(self.config["agent"]["state_dir"])

    @property
    def socket(self) -> Path:
        return Path(self.config["agent"]["socket_path"])

    @property
    def config_path(self) -> Path:
        return self.root / "collector.toml"

    @property
    def log_path(self) -> Path:
        return self.root / f"agent-{self.starts}.log"

    def write_config(self) -> Path:
        self.config_path.write_text(toml_dumps(self.config))
        return self.config_path

    def start(self, timeout_s: float = 30.0) -> AgentProcess:
        """Start the agent and return once ``GET /v1/status`` answers."""
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        self.write_config()
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeloop.collector.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if call_agent(self.socket, "GET", "/v1/status", timeout_s=2.0)[0] == 200:
                    return self
            except AgentUnavailableError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"agent did not answer within {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: nothing gets to run, like a power cut for the process (not the page cache)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def request(
        self, method: str, path: str, body: Any = None, *, timeout_s: float = 30.0
    ) -> tuple[int, Any]:
        return call_agent(self.socket, method, path, body, timeout_s=timeout_s)

    def post_raw(self, body: bytes, content_type: str = "application/json", path: str = "/v1/records") -> tuple[int, Any]:
        """POST arbitrary bytes (for malformed input); returns (status, parsed JSON)."""
        import http.client

        from edgeloop.collector.client import _UnixConnection

        conn = _UnixConnection(str(self.socket), 30.0)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnavailableError(str(exc)) from exc
        finally:
            conn.close()
        return status, orjson.loads(raw)

    def metrics(self) -> str:
        """The agent's /metrics text (Prometheus exposition, not JSON), read over its socket."""
        from edgeloop.collector.client import _UnixConnection

        conn = _UnixConnection(str(self.socket), 30.0)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def post_records(self, records: list[dict[str, Any]], *, timeout_s: float = 30.0) -> tuple[int, Any]:
        return self.request("POST", "/v1/records", records, timeout_s=timeout_s)

    def status(self) -> dict[str, Any]:
        status, body = self.request("GET", "/v1/status")
        assert status == 200, body
        return body

    def flush(self) -> dict[str, Any]:
        status, body = self.request("POST", "/v1/flush")
        assert status == 200, body
        return body

    def cli(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``edgeloop-collector ARGS --config <this agent's config>``."""
        self.write_config()
        return run_cli(*args, "--config", str(self.config_path), timeout_s=timeout_s)

    def batch_files(self) -> list[Path]:
        return sorted((self.state_dir / "batches").glob("*.parquet"))

    def read_batches(self) -> dict[str, pa.Table]:
        """Every sealed batch, read fully, concatenated per model."""
        tables: dict[str, list[pa.Table]] = {}
        for path in self.batch_files():
            # A batch file carries no ARROW:schema: the schema it names gives the exact Arrow types, as every reader does.
            kv = pq.read_metadata(path).metadata
            schema = ModelSchema.from_canonical_json(kv[b"edgeloop.schema"].decode())
            table = with_declared_types(pq.read_table(path), schema.arrow_schema)
            tables.setdefault(schema.name, []).append(table.replace_schema_metadata(None))
        return {model: pa.concat_tables(parts) for model, parts in tables.items()}


def inject_faults(agent: AgentProcess) -> Path:
    """Make ``agent``'s state dir fail while the returned file exists; it names the errno (EROFS, ENOSPC, EIO: see fault_shim)."""
    fault = agent.root / "fault"
    agent.env = {**agent.env, "PYTHONPATH": str(FAULT_SHIM), "EDGELOOP_TEST_FAULT_FILE": str(fault),
                 "EDGELOOP_TEST_FAULT_DIR": str(agent.state_dir)}
    return fault


def run_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``edgeloop-collector`` in a subprocess, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "edgeloop.collector.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout_s,
    )


def default_config(root: Path) -> dict[str, Any]:
    key_file = root / "fleet.key"
    if not key_file.exists():
        key_file.write_bytes(FLEET_KEY)
        key_file.chmod(0o600)
    return {
        "agent": {
            "state_dir": str(root / "state"),
            "socket_path": str(root / "agent.sock"),
            "key_file": str(key_file),
            "log_level": "info",
            "shutdown_timeout_s": 20.0,
        },
        "spool": {"reserve_free_bytes": 0, "seal_reserve_bytes": 4 << 20},
        "sampling": {"seed": 1},
        "sync": {"enabled": False},
    }


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Make agents in ``tmp_path``: ``agent_factory(spool={...}, ...)``; all are killed at teardown."""
    made: list[AgentProcess] = []

    def make(name: str = "agent", **sections: dict[str, Any]) -> AgentProcess:
        root = tmp_path / name
        root.mkdir()
        agent = AgentProcess(root, _merge(default_config(root), sections))
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.kill()


@pytest.fixture
def agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    """A started agent with the default test config."""
    return agent_factory().start()


@dataclass
class Ingest:
    url: str
    config: Path
    token_file: Path
    db: Path
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        """Run ``edgeloop-ingest serve`` and wait until it answers /healthz."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeloop.ingest.cli", "serve", "--config", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"ingest did not start: {self.log.read_text()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            assert self.process.wait(timeout=20) == 0, self.log.read_text()
            self.process = None

    def query(self, sql: str) -> list[tuple]:
        """Read the DuckDB file directly (the server must be stopped: one writer owns it)."""
        self.stop()
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql).fetchall()


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    """A real ``edgeloop-ingest serve`` on a loopback port with device kiosk-7 registered."""
    folder = tmp_path / "ingest"
    folder.mkdir()
    port = free_port()
    config = write_ingest_config(folder, port)
    token_file = folder / "kiosk.token"
    token_file.write_text(ingest_cli("devices", "add", "kiosk-7", "--config", str(config)).stdout.strip().splitlines()[-1])
    token_file.chmod(0o600)
    server = Ingest(f"http://127.0.0.1:{port}", config, token_file, folder / "ingest.duckdb", folder / "server.log")
    server.start()
    yield server
    server.stop()
