"""Operating the agent: sync --wait exit codes, check-config refusals, metrics, text logs with fields."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from bench.simulator import SimulatedModel
from tests.collector.conftest import run_cli
from tests.ingest.conftest import free_port
from tests.ingest.conftest import write_config as write_ingest_config

FAST_RETRIES = {"max_attempts": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.1}


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeloop-collector: error: "), result.stderr
    return lines[0]


def token_file(folder, text="a-device-token\n", mode=0o600):
    path = folder / "device.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def syncing_agent(agent_factory, tmp_path, url, token, agent_settings=None, **sync):
    agent = agent_factory(
        agent=agent_settings or {},
        sync={"enabled": True, "url": url, "token_file": str(token), "jitter_s": 0, **FAST_RETRIES, **sync},
    )
    agent.start()
    assert agent.post_records(list(SimulatedModel("vibration", seed=5).predictions(20)))[0] == 200
    return agent


def test_sync_wait_exits_1_when_ingest_is_down(agent_factory, tmp_path):
    """sync --wait against a port nobody listens on exits 1 with one line; the text log keeps the error fields."""
    url = f"http://127.0.0.1:{free_port()}"
    agent = syncing_agent(agent_factory, tmp_path, url, token_file(tmp_path), agent_settings={"log_json": False})
    result = agent.cli("sync", "--wait")
    assert "ingest unreachable" in one_line(result)
    assert json.loads(result.stdout)["outcome"] == "failed"
    assert agent.cli("status", "--json").returncode == 0  # the agent serves on
    retried = [line for line in agent.log().splitlines() if "upload failed: retrying" in line]
    assert retried and "batch_id=" in retried[0] and f'error="PUT {url}/v1/batches/' in retried[0]
    finished = [line for line in agent.log().splitlines() if "sync finished" in line]
    assert finished and "outcome=failed" in finished[0] and 'reason="ingest unreachable' in finished[0]


def test_sync_wait_exits_1_on_401_and_ingest_logs_the_peer(agent_factory, ingest, tmp_path):
    """A refused token makes sync --wait exit 1; the ingest log names the peer that tried; the right token exits 0."""
    agent = syncing_agent(agent_factory, tmp_path, ingest.url, token_file(tmp_path, "not-a-registered-token\n"))
    assert "device not allowed: ingest answered 401" in one_line(agent.cli("sync", "--wait"))
    # A wrong token's line is rate-limited (one a minute per status), and it still names the peer that tried.
    refused = [json.loads(line) for line in ingest.log.read_text().splitlines() if '"wrong token refused"' in line]
    assert refused and refused[-1]["status"] == 401 and refused[-1]["peer"] == "127.0.0.1"

    token_file(tmp_path, ingest.token_file.read_text())
    result = agent.cli("sync", "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "ok"
    landed = [json.loads(line) for line in ingest.log.read_text().splitlines() if '"upload landed"' in line]
    assert landed and landed[-1]["device"] == "kiosk-7" and landed[-1]["rows"] == 20
    assert '"batch uploaded"' in agent.log()


def test_sync_wait_exits_1_at_once_on_an_untrusted_certificate(agent_factory, tmp_path):
    """Against a TLS server whose certificate the device does not trust, sync --wait exits 1 without retrying."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path / "ingest"
    folder.mkdir()
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    config = write_ingest_config(folder, port, f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    log_path = folder / "server.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.ingest.cli", "serve", "--config", str(config)], stdout=log, stderr=log
        )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=1, context=context):
                    break
            except OSError:
                time.sleep(0.05)
        agent = syncing_agent(agent_factory, tmp_path, f"https://127.0.0.1:{port}", token_file(tmp_path), max_attempts=6)
        result = agent.cli("sync", "--wait")
        assert "TLS failure" in one_line(result)
        assert json.loads(result.stdout)["retries"] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampling": {"models": {"vibratoin": {"keep_rate": 0.5}}}}, "sampling.models.vibratoin: no schema for a model named"),
        ({"token": ("   \n", 0o600)}, "sync.token_file:"),
        ({"token": ("tok-1\n", 0o644)}, "readable by everyone"),
    ],
    ids=["unknown-model", "empty-token", "world-readable-token"],
)
def test_check_config_refuses(agent_factory, tmp_path, change, message):
    """check-config refuses a sampling section for an unknown model, an empty token file and a world-readable one."""
    text, mode = change.pop("token", ("tok-1\n", 0o600))
    token = token_file(tmp_path, text, mode)
    agent = agent_factory(sync={"enabled": True, "url": "http://127.0.0.1:9", "token_file": str(token)}, **change)
    assert message in one_line(agent.cli("check-config"))


def test_check_config_accepts_a_sampling_section_for_a_known_model(agent_factory, tmp_path):
    """A per-model sampling section naming a model with a schema passes check-config."""
    agent = agent_factory(sampling={"models": {"vibration": {"keep_rate": 0.5}}})
    result = agent.cli("check-config")
    assert result.returncode == 0, result.stderr


def test_version_and_init_config():
    """--version prints the version; init-config prints exactly the shipped example and unit, which load."""
    from edgeloop import __version__
    from edgeloop.collector.config import EXAMPLE_CONFIG, UNIT_FILE

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"edgeloop-collector {__version__}"
    printed = run_cli("init-config")
    assert printed.returncode == 0 and printed.stdout == EXAMPLE_CONFIG.read_text()
    assert run_cli("init-config", "--systemd").stdout == UNIT_FILE.read_text()


def test_metrics_cover_sync_and_the_process(agent_factory, ingest, tmp_path):
    """After a sync /metrics has last attempt/success times, outcomes, bytes and batches sent, backlog and process_*."""
    agent = syncing_agent(agent_factory, tmp_path, ingest.url, ingest.token_file)
    assert agent.cli("sync", "--wait").returncode == 0
    status, _ = agent.request("GET", "/v1/status")
    assert status == 200
    text = agent.metrics()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values['edgeloop_syncs_total{outcome="ok"}'] == 1
    assert values['edgeloop_sync_batches_total{result="landed"}'] == 1
    assert values["edgeloop_sync_uploaded_bytes_total"] > 0 and values["edgeloop_sync_uploaded_records_total"] == 20
    assert values["edgeloop_sync_last_success_timestamp_seconds"] >= values["edgeloop_sync_last_attempt_timestamp_seconds"] > 0
    assert values["edgeloop_spool_oldest_batch_age_seconds"] == 0 and values["edgeloop_spool_bytes"] == 0
    assert values["process_resident_memory_bytes"] > 0 and "process_cpu_seconds_total" in values
