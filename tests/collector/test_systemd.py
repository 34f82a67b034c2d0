"""The systemd side: the unit file verifies, the installer installs, and the agent speaks sd_notify."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from edgeloop.collector.config import CollectorConfig
from edgeloop.collector.notify import Notifier

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "collector" / "share" / "edgeloop-collector.service"
INSTALLER = ROOT / "scripts" / "install-collector"
VENV_BIN = Path(sys.executable).parent
COLLECTOR = VENV_BIN / "edgeloop-collector"


@pytest.fixture
def short_dir():
    """A directory with a short path: unix socket paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="el-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def notify_socket(short_dir):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(short_dir / "notify.sock"))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def receive(sock: socket.socket, until: float) -> list[str]:
    """Every datagram that arrives before the monotonic deadline ``until``."""
    messages = []
    while time.monotonic() < until:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    return messages


def wait_for(sock: socket.socket, wanted: str, timeout_s: float) -> list[str]:
    """Datagrams up to and including the first that holds the line ``wanted``."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        seen.append(message)
        if wanted in message.splitlines():
            return seen
    raise AssertionError(f"no {wanted} within {timeout_s}s; got {seen}")


def unit_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_unit_has_the_promised_settings():
    """The unit is Type=notify with a watchdog, its own user, state/config/runtime dirs and the hardening asked for."""
    unit = unit_directives()
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "User": "edgeloop", "Group": "edgeloop", "StateDirectory": "edgeloop",
        "ConfigurationDirectory": "edgeloop", "RuntimeDirectory": "edgeloop", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes", "KillSignal": "SIGTERM",
    }
    assert {key: unit.get(key, [None])[0] for key in expected} == expected
    assert unit["ExecStartPre"] == ["/opt/edgeloop/venv/bin/edgeloop-collector check-config --config /etc/edgeloop/collector.toml"]
    assert unit["ExecStart"] == ["/opt/edgeloop/venv/bin/edgeloop-collector run --config /etc/edgeloop/collector.toml"]
    # SIGTERM must get the agent's whole shutdown budget before systemd resorts to SIGKILL.
    assert float(unit["TimeoutStopSec"][0]) > CollectorConfig().agent.shutdown_timeout_s
    example = CollectorConfig.load(ROOT / "collector" / "share" / "collector.example.toml")
    assert str(example.agent.socket) == "/run/edgeloop/agent.sock"
    assert str(example.agent.state_dir) == "/var/lib/edgeloop"


def test_systemd_analyze_verifies_the_unit(tmp_path):
    """systemd-analyze verify accepts the unit without a warning (with ExecStart pointing at this venv)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    assert COLLECTOR.exists(), f"{COLLECTOR} missing: install edgeloop into the venv"
    copy = tmp_path / "edgeloop-collector.service"
    copy.write_text(UNIT.read_text().replace("/opt/edgeloop/venv/bin", str(VENV_BIN)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if copy.name in line or "edgeloop" in line]
    assert done.returncode == 0 and problems == [], done.stderr


def test_notifier_sends_the_protocol_messages(notify_socket):
    """ready, status, watchdog and stopping send the sd_notify lines systemd expects."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "30000000"})
    assert notifier.watchdog_interval_s == 15.0
    assert notifier.ready("serving\non the socket") and notifier.status("syncing") and notifier.watchdog()
    assert notifier.stopping()
    got = [notify_socket.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=serving on the socket", "STATUS=syncing", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_reaches_an_abstract_socket():
    """A NOTIFY_SOCKET starting with '@' names a socket in the abstract namespace."""
    name = f"edgeloop-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    ("env", "interval_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, None),  # nobody to notify
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # not for us
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "junk"}, None),
    ],
)
def test_notifier_reads_the_watchdog_from_the_environment(env, interval_s):
    """The watchdog interval is half WATCHDOG_USEC, only with a NOTIFY_SOCKET and only for the PID it names."""
    assert Notifier.from_env(env).watchdog_interval_s == interval_s


def test_notifier_without_systemd_is_a_no_op(short_dir):
    """Without NOTIFY_SOCKET, or with nobody listening, notifying returns False and never raises."""
    assert Notifier.from_env({}).ready() is False
    assert Notifier.from_env({"NOTIFY_SOCKET": str(short_dir / "gone.sock")}).watchdog() is False
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).ready() is False


def agent_config(folder: Path) -> Path:
    key = folder / "fleet.key"
    key.write_text(secrets.token_hex(16))
    key.chmod(0o600)
    config = folder / "collector.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{folder / "state"}"\nsocket_path = "{folder / "agent.sock"}"\n'
        f'key_file = "{key}"\nlog_json = true\nshutdown_timeout_s = 10.0\n\n[sync]\nenabled = false\n'
    )
    return config


def test_agent_notifies_ready_pets_the_watchdog_and_stops_cleanly(short_dir, notify_socket):
    """The agent sends READY=1 once serving, WATCHDOG=1 every half WATCHDOG_USEC, and STOPPING=1 then exit 0 on SIGTERM."""
    config = agent_config(short_dir)
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    log_file = short_dir / "agent.log"
    with open(log_file, "wb") as log:
        agent = subprocess.Popen([str(COLLECTOR), "run", "--config", str(config)], env=env, stdout=log, stderr=log)
    try:
        wait_for(notify_socket, "READY=1", timeout_s=30)
        assert (short_dir / "agent.sock").is_socket()
        after_ready = receive(notify_socket, until=time.monotonic() + 1.5)
        pets = sum("WATCHDOG=1" in message.splitlines() for message in after_ready)
        assert pets >= 4, after_ready  # one every 0.2 s
        agent.send_signal(signal.SIGTERM)
        wait_for(notify_socket, "STOPPING=1", timeout_s=15)
        assert agent.wait(timeout=15) == 0, log_file.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert "Traceback" not in log_file.read_text()


def run_installer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALLER), *args], capture_output=True, text=True, timeout=60)


def test_installer_help_and_bad_options():
    """--help documents the options and exits 0; an unknown option fails with a pointer to --help."""
    shown = run_installer("--help")
    assert shown.returncode == 0 and "--key-file" in shown.stdout and "--dry-run" in shown.stdout
    bad = run_installer("--frobnicate")
    assert bad.returncode != 0 and "see --help" in bad.stderr


def test_installer_dry_run_changes_nothing(tmp_path):
    """--dry-run prints every step (venv, command link, config, key, unit) and writes nothing; no useradd into a prefix."""
    root = tmp_path / "root"
    root.mkdir()
    done = run_installer("--prefix", str(root), "--dry-run", "--user", "edgeloop-never-created")
    assert done.returncode == 0, done.stderr
    for step in ("-m venv", "pip install", "ln -sfn", "collector.toml", "fleet.key", "edgeloop-collector.service"):
        assert step in done.stdout, step
    assert "useradd" not in done.stdout and "create it in the image" in done.stderr
    real = run_installer("--dry-run", "--user", "edgeloop-never-created", "--no-venv")
    assert real.returncode == 0 and "useradd --system" in real.stdout and "systemctl restart" in real.stdout
    assert list(root.iterdir()) == []


def test_installer_installs_into_a_prefix_idempotently(tmp_path):
    """A real install into a prefix lays out config, 0600 key and token, and the unit; a second run keeps edits."""
    root, me = tmp_path / "root", subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    key, token = tmp_path / "fleet.key", tmp_path / "device.token"
    key.write_text("f" * 44 + "\n")
    token.write_text("tok-123\n")
    args = ["--prefix", str(root), "--user", me, "--no-venv", "--no-start", "--key-file", str(key),
            "--token-file", str(token), "--ingest-url", "https://ingest.example:8443"]
    first = run_installer(*args)
    assert first.returncode == 0, first.stderr
    etc = root / "etc" / "edgeloop"
    assert (etc / "fleet.key").read_text() == key.read_text()
    for secret in ("fleet.key", "device.token"):
        assert stat.S_IMODE((etc / secret).stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / "collector.toml").stat().st_mode) == 0o640
    config = CollectorConfig.load(etc / "collector.toml")
    assert config.sync.url == "https://ingest.example:8443"
    assert str(config.sync.token_file) == "/etc/edgeloop/device.token"
    unit = (root / "etc" / "systemd" / "system" / "edgeloop-collector.service").read_text()
    assert f"\nUser={me}\n" in unit and "Type=notify" in unit

    (etc / "collector.toml").write_text((etc / "collector.toml").read_text() + "\n# edited by hand\n")
    second = run_installer(*args[:6])  # no key, token or URL this time
    assert second.returncode == 0, second.stderr
    assert (etc / "collector.toml").read_text().endswith("# edited by hand\n")
    assert (etc / "fleet.key").read_text() == key.read_text()


def test_installer_generates_a_key_once(tmp_path):
    """Without --key-file a random key is generated with mode 0600, and never replaced by a later run."""
    root, me = tmp_path / "root", subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    args = ["--prefix", str(root), "--user", me, "--no-venv", "--no-start"]
    assert run_installer(*args).returncode == 0
    key = root / "etc" / "edgeloop" / "fleet.key"
    first = key.read_bytes()
    assert len(first.strip()) >= 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert run_installer(*args).returncode == 0
    assert key.read_bytes() == first
