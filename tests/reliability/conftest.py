"""The fault-injection harness: real agents, a real ingest server, an app that resends like the SDK, and the final count.

Every test here ends the same way: stop injecting, let every agent seal and sync until its
spool is empty, stop the server, read the DuckDB file, and count per record id what the
agents acknowledged against what landed: ``lost`` (acknowledged, never landed) and
``duplicated`` (landed more than once) must both be 0.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from bench.simulator import SimulatedModel
from edgeloop.errors import AgentUnavailableError
from edgeloop.schemas import EXAMPLES_DIR
from tests.collector.conftest import AgentProcess, agent_factory  # noqa: F401 - a fixture used here
from tests.ingest.conftest import cli as ingest_cli
from tests.ingest.conftest import free_port

MODEL = "vibration"
RETRYABLE = {429, 503, 507}  # the agent is busy, out of memory budget or disk: the same request may succeed later


@dataclass
class IngestServer:
    """``edgeloop-ingest serve`` on a fixed loopback port, restartable on the same database after a SIGKILL."""

    folder: Path
    port: int
    rlimit_as_bytes: int | None = None
    store: dict[str, Any] = field(default_factory=dict)  # extra [store] settings
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.folder / "ingest.toml"

    @property
    def db(self) -> Path:
        return self.folder / "db" / "ingest.duckdb"

    def write_config(self) -> None:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""
[server]
host = "127.0.0.1"
port = {self.port}
admin_token_file = "{self.folder / 'admin.token'}"
schemas_dir = "{EXAMPLES_DIR}"
shutdown_timeout_s = 20
retry_after_s = 1
[store]
db_path = "{self.db}"
threads = 1
""" + "".join(f"{key} = {value!r}\n" for key, value in self.store.items())
        )

    def add_device(self, name: str) -> Path:
        """Register a device (the server may be stopped); returns its token file."""
        token_file = self.folder / f"{name}.token"
        token = ingest_cli("devices", "add", name, "--config", str(self.config)).stdout.strip().splitlines()[-1]
        token_file.write_text(token)
        token_file.chmod(0o600)  # the agent refuses a token file others may read
        return token_file

    def start(self, timeout_s: float = 60.0) -> None:
        limit = self.rlimit_as_bytes

        def limit_memory() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.starts += 1
        with open(self.folder / f"server-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeloop.ingest.cli", "serve", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_memory,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ingest exited with {self.process.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except urllib.error.HTTPError as exc:  # serving, but failing health (a full disk): started all the same
                exc.close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"ingest did not start: {self.log()[-3000:]}")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("server-*.log")))

    def queued(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return int(orjson.loads(response.read())["queued"])
        except OSError:
            return 0

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process = None
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def landed(self, table: str = MODEL) -> Counter[str]:
        """Rows per record id in ``table`` (the server must be stopped: one writer owns the file)."""
        self.stop()
        with duckdb.connect(str(self.db), read_only=True) as con:
            exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0]
            if not exists:
                return Counter()
            rows = con.execute(f'SELECT record_id::VARCHAR, count(*) FROM "{table}" GROUP BY 1').fetchall()
        return Counter(dict(rows))


@pytest.fixture
def ingest_server(tmp_path: Path) -> Iterator[IngestServer]:
    """A stopped ingest server in tmp_path/ingest with its config written; stopped at teardown."""
    folder = tmp_path / "ingest"
    folder.mkdir()
    server = IngestServer(folder, free_port())
    server.write_config()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()
        server.process.wait(10)


def device_sections(url: str, token_file: Path, **spool: Any) -> dict[str, Any]:
    """Agent config sections for a device that seals small batches and syncs every second, retrying fast."""
    return {
        "spool": {"seal_max_rows": 300, **spool},
        "sync": {
            "enabled": True, "url": url, "token_file": str(token_file), "jitter_s": 0.0, "interval_s": 1.0,
            "max_attempts": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.5, "request_timeout_s": 30.0,
        },
    }


class App(threading.Thread):
    """An inference app: posts records with ids it minted, and resends a request until the agent answers 200, as the SDK does.

    ``acknowledged`` holds the ids the agent accepted with a 200: each must land once.
    """

    def __init__(self, agent: AgentProcess, records: list[dict[str, Any]], *, chunk: int = 50, name: str = "app",
                 gate: threading.Semaphore | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.agent = agent
        self.gate = gate  # if given, one permit per request: the test paces the app to its faults
        self.records = records
        self.chunk = chunk
        self.acknowledged: set[str] = set()
        self.resent = 0
        self.refused: Counter[int] = Counter()
        self.error: BaseException | None = None
        self.progress = threading.Event()  # set after each acknowledged request

    def run(self) -> None:
        try:
            for start in range(0, len(self.records), self.chunk):
                part = self.records[start : start + self.chunk]
                if self.gate is not None:
                    self.gate.acquire()
                while True:
                    try:
                        status, body = self.agent.post_records(part, timeout_s=30)
                    except AgentUnavailableError:
                        self.resent += 1
                        time.sleep(0.02)
                        continue
                    if status == 200:
                        for result in body["results"]:
                            if result["status"] == "accepted":
                                self.acknowledged.add(result["record_id"])
                        self.progress.set()
                        break
                    if status not in RETRYABLE:  # e.g. 413: resending the same request can never succeed
                        raise AssertionError(f"the agent refused a request for good: {status} {body}")
                    self.refused[status] += 1  # the agent could not take them now; resend later
                    time.sleep(0.1)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc


def simulated(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` vibration predictions (ids minted in the app, as UUIDv7)."""
    return list(SimulatedModel(MODEL, seed=seed).predictions(n))


def drain(agent: AgentProcess, *, timeout_s: float = 120.0) -> None:
    """Seal and sync until the agent's spool holds nothing: every acknowledged record has been uploaded."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        agent.flush()
        status, last = agent.request("POST", "/v1/sync", {"wait": True}, timeout_s=timeout_s)
        report = agent.status()
        if not agent.batch_files() and not _journal_records(report):
            rejected = list((agent.state_dir / "rejected").glob("*.parquet"))
            assert not rejected, f"batches were rejected for good: {[p.name for p in rejected]}"
            return
        time.sleep(0.2)
    raise AssertionError(f"the spool did not drain: last sync {last}, status {agent.status()}")


def _journal_records(report: dict[str, Any]) -> int:
    journal = report.get("journal") or {}
    return int(journal.get("records", 0) or 0)


@dataclass
class Tally:
    """Acknowledged against landed, per record id."""

    acknowledged: int
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, acknowledged: set[str], landed: Counter[str]) -> Tally:
        return cls(
            acknowledged=len(acknowledged),
            lost=sorted(acknowledged - set(landed)),
            duplicated={record_id: n for record_id, n in landed.items() if n > 1},
        )

    def assert_exactly_once(self) -> None:
        assert not self.lost and not self.duplicated, (
            f"{len(self.lost)} of {self.acknowledged} acknowledged records lost (e.g. {self.lost[:3]}), "
            f"{len(self.duplicated)} landed more than once (e.g. {list(self.duplicated.items())[:3]})"
        )


def mount_tmpfs(path: Path, size: str) -> None:
    """Mount a small tmpfs at ``path`` (a full disk on demand); skip the test where this machine does not allow it."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {result.stderr.strip()}")


def resize_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
