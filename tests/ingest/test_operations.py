"""Operating the server: --version, init-config, the default config path, check-config, a busy port, metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

import duckdb

from edgeloop import __version__
from edgeloop.ingest.config import EXAMPLE_CONFIG, UNIT_FILE, IngestConfig
from tests.ingest.conftest import (
    CLI,
    cli,
    free_port,
    make_table,
    put_batch,
    seal,
    spawn_server,
    stop_server,
    write_config,
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_version_and_init_config():
    """--version prints the version; init-config prints exactly the shipped example, which is a valid config."""
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"edgeloop-ingest {__version__}"
    printed = run("init-config")
    assert printed.returncode == 0 and printed.stdout == EXAMPLE_CONFIG.read_text()
    assert IngestConfig.model_validate(__import__("tomllib").loads(printed.stdout)) == IngestConfig()
    assert run("init-config", "--systemd").stdout == UNIT_FILE.read_text()


def test_config_comes_from_the_environment_then_the_default_path(tmp_path):
    """Without --config the CLI reads $EDGELOOP_INGEST_CONFIG, else /etc/edgeloop/ingest.toml, and never runs on defaults silently."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))
    listed = run("devices", "list", "--format", "json", env={"EDGELOOP_INGEST_CONFIG": str(config)})
    assert listed.returncode == 0 and "pump-1" in listed.stdout

    missing = tmp_path / "nowhere.toml"
    answer = run("serve", env={"EDGELOOP_INGEST_CONFIG": str(missing)})
    assert answer.returncode == 1
    assert answer.stderr.strip().splitlines() == [
        f"edgeloop-ingest: {missing}: no such config file (give --config FILE or $EDGELOOP_INGEST_CONFIG; "
        f"`edgeloop-ingest init-config > {missing}` writes one)"
    ]
    if not os.path.exists("/etc/edgeloop/ingest.toml"):
        env = {key: value for key, value in os.environ.items() if key != "EDGELOOP_INGEST_CONFIG"}
        default = subprocess.run([*CLI, "sql", "SELECT 1"], capture_output=True, text=True, timeout=60, env=env)
        assert default.returncode == 1 and "/etc/edgeloop/ingest.toml: no such config file" in default.stderr


def test_check_config(tmp_path):
    """check-config says OK for a good config and names the setting of a folder it cannot write, in one line."""
    config = write_config(tmp_path, free_port())
    good = run("check-config", "--config", str(config))
    assert good.returncode == 0 and "config OK" in good.stdout, good.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = write_config(tmp_path / "bad" if (tmp_path / "bad").mkdir() is None else tmp_path, free_port())
    bad.write_text(bad.read_text().replace(str(tmp_path / "bad" / "ingest.duckdb"), str(blocker / "db" / "x.duckdb")))
    refused = run("check-config", "--config", str(bad))
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "store.db_path" in refused.stderr and "not writable" in refused.stderr


def test_serve_on_a_port_in_use_is_one_line(tmp_path):
    """serve on a port another process holds exits 1 with one line naming the address and the setting."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        answer = run("serve", "--config", str(write_config(tmp_path, port)))
    assert answer.returncode == 1
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in answer.stderr, answer.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "server.port" in lines[0] and "in use" in lines[0]


def test_metrics_count_bytes_per_device_and_the_process(tmp_path, vibration):
    """/metrics counts upload bytes per device and exports process_* figures."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-9", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=5)[0])
        assert put_batch(port, batch_id, body, token) == 201
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        stop_server(server)
    assert f'edgeloop_ingest_bytes_received_total{{device="pump-9"}} {float(len(body))}' in text
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert sys.platform != "linux" or "process_open_fds" in text


def test_sigterm_lands_checkpoints_and_logs_before_the_process_ends(tmp_path, vibration):
    """A SIGTERM'd server exits 0 with what it accepted in the database file (no WAL left) and its last log line written."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-9", "--config", str(config)).stdout.strip()
    log_path = tmp_path / "server.log"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # the exit must flush the log itself
    server = spawn_server(config, log_path, env)
    try:
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=7)[0])
        assert put_batch(port, batch_id, body, token) == 201
    finally:
        server.terminate()
        code = server.wait(timeout=60)
    assert code == 0, log_path.read_text()
    lines = log_path.read_text().splitlines()
    assert lines and json.loads(lines[-1])["msg"] == "stopped", lines[-3:]
    db = tmp_path / "ingest.duckdb"
    assert not db.with_name(db.name + ".wal").exists(), "the stop left rows in the WAL instead of checkpointing them"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM vibration WHERE batch_id = ?", [batch_id]).fetchone() == (7,)
