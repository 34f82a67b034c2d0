"""scripts/install-collector and scripts/install-ingest: --prefix installs, upgrades, uninstalls, units."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
COLLECTOR_UNIT = ROOT / "collector" / "share" / "edgeloop-collector.service"
INGEST_UNIT = ROOT / "ingest" / "share" / "edgeloop-ingest.service"
ME = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()


def install(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], capture_output=True, text=True, timeout=60)


def every_file(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def fake_venv(root: Path, folder: str, command: str) -> Path:
    """Stands in for the venv a real install makes (tests install with --no-venv)."""
    script = root / "opt" / folder / "venv" / "bin" / command
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho fake\n")
    script.chmod(0o755)
    return script


def test_prefix_install_creates_no_account_and_leaves_no_temp_files(tmp_path):
    """--prefix with an account that does not exist installs without useradd and leaves no temp file behind."""
    root = tmp_path / "image"
    done = install("install-collector", "--prefix", str(root), "--user", "edgeloop-nobody-here", "--no-venv")
    assert done.returncode == 0, done.stderr
    assert "useradd" not in done.stderr and "cannot lock" not in done.stderr
    files = every_file(root)
    assert {"etc/edgeloop/collector.toml", "etc/edgeloop/fleet.key", "etc/systemd/system/edgeloop-collector.service"} <= files
    assert [name for name in files if Path(name).name.startswith(".") or name.endswith(".tmp")] == []
    assert stat.S_IMODE((root / "etc" / "edgeloop" / "fleet.key").stat().st_mode) == 0o600


def test_the_command_is_on_path_after_install(tmp_path):
    """The installer links /usr/local/bin/edgeloop-collector to the venv's command, as the installed system sees it."""
    root = tmp_path / "root"
    command = fake_venv(root, "edgeloop", "edgeloop-collector")
    assert install("install-collector", "--prefix", str(root), "--user", ME, "--no-venv").returncode == 0
    link = root / "usr" / "local" / "bin" / "edgeloop-collector"
    # Absolute inside the installed system, not a path into the folder it was built in.
    assert link.is_symlink() and os.readlink(link) == "/opt/edgeloop/venv/bin/edgeloop-collector"
    assert (root / os.readlink(link).lstrip("/")).samefile(command)


def test_the_closing_line_asks_only_for_the_sync_settings_still_missing(tmp_path):
    """The collector installer's last line asks to set [sync] url and token_file only while they are unset, and the
    config it writes from --ingest-url and --token-file loads with both set."""
    bare = install("install-collector", "--prefix", str(tmp_path / "bare"), "--user", ME, "--no-venv")
    assert bare.returncode == 0, bare.stderr
    assert "set [sync] url token_file in /etc/edgeloop/collector.toml" in bare.stderr.splitlines()[-1]
    token = tmp_path / "pump.token"
    token.write_text("a-device-token\n")
    root = tmp_path / "enrolled"
    done = install("install-collector", "--prefix", str(root), "--user", ME, "--no-venv",
                   "--ingest-url", "https://ingest.example.com:8443", "--token-file", str(token))
    assert done.returncode == 0, done.stderr
    last = done.stderr.splitlines()[-1]
    assert "done: check with: sudo edgeloop-collector status" in last and "set [sync]" not in last, last
    from edgeloop.collector.config import CollectorConfig

    sync = CollectorConfig.load(root / "etc" / "edgeloop" / "collector.toml").sync
    assert sync.url == "https://ingest.example.com:8443" and str(sync.token_file) == "/etc/edgeloop/device.token"


def test_upgrade_keeps_config_key_token_and_spool(tmp_path):
    """Re-running the installer (a newer version) replaces the unit but keeps the config, key, token and spool."""
    root = tmp_path / "root"
    key, token = tmp_path / "fleet.key", tmp_path / "device.token"
    key.write_text("k" * 44 + "\n")
    token.write_text("tok-1\n")
    base = ["--prefix", str(root), "--user", ME, "--no-venv"]
    assert install("install-collector", *base, "--key-file", str(key), "--token-file", str(token)).returncode == 0
    etc = root / "etc" / "edgeloop"
    config = etc / "collector.toml"
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    spool = root / "var" / "lib" / "edgeloop" / "batches" / "0193-batch.parquet"
    spool.parent.mkdir(parents=True)
    spool.write_bytes(b"PAR1 a sealed batch PAR1")
    unit = root / "etc" / "systemd" / "system" / "edgeloop-collector.service"
    unit.write_text("# the unit of an older version\n")
    before = {path: path.read_bytes() for path in (config, etc / "fleet.key", etc / "device.token", spool)}

    again = install("install-collector", *base)
    assert again.returncode == 0, again.stderr
    assert {path: path.read_bytes() for path in before} == before
    assert "keeping" in again.stderr
    assert "Type=notify" in unit.read_text()


def test_uninstall_keeps_data_unless_purge(tmp_path):
    """--uninstall removes the unit, the command and the venv and keeps config, key and spool; --purge removes those too."""
    root = tmp_path / "root"
    fake_venv(root, "edgeloop", "edgeloop-collector")
    assert install("install-collector", "--prefix", str(root), "--user", ME, "--no-venv").returncode == 0
    spool = root / "var" / "lib" / "edgeloop" / "batches"
    spool.mkdir(parents=True)
    (spool / "b.parquet").write_bytes(b"data")

    removed = install("install-collector", "--prefix", str(root), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    files = every_file(root)
    assert "etc/systemd/system/edgeloop-collector.service" not in files
    assert "usr/local/bin/edgeloop-collector" not in files
    assert not (root / "opt" / "edgeloop").exists()
    assert {"etc/edgeloop/collector.toml", "etc/edgeloop/fleet.key", "var/lib/edgeloop/batches/b.parquet"} <= files

    purged = install("install-collector", "--prefix", str(root), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc" / "edgeloop").exists() and not (root / "var" / "lib" / "edgeloop").exists()
    assert install("install-collector", "--purge").returncode != 0  # --purge alone is refused


def test_ingest_installer_lays_out_config_unit_and_command(tmp_path):
    """install-ingest --prefix writes ingest.toml (with --listen), the unit and the command link; uninstall keeps the database."""
    root = tmp_path / "root"
    done = install("install-ingest", "--prefix", str(root), "--user", ME, "--no-venv", "--listen", "0.0.0.0:9443")
    assert done.returncode == 0, done.stderr
    config = tomllib.loads((root / "etc" / "edgeloop" / "ingest.toml").read_text())
    assert config["server"]["host"] == "0.0.0.0" and config["server"]["port"] == 9443
    unit = (root / "etc" / "systemd" / "system" / "edgeloop-ingest.service").read_text()
    assert f"\nUser={ME}\n" in unit
    assert os.readlink(root / "usr" / "local" / "bin" / "edgeloop-ingest") == "/opt/edgeloop-ingest/venv/bin/edgeloop-ingest"
    database = root / "var" / "lib" / "edgeloop-ingest" / "edgeloop.duckdb"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"db")
    assert install("install-ingest", "--prefix", str(root), "--uninstall").returncode == 0
    assert database.exists() and (root / "etc" / "edgeloop" / "ingest.toml").exists()
    assert not (root / "etc" / "systemd" / "system" / "edgeloop-ingest.service").exists()
    assert install("install-ingest", "--listen", "nonsense").returncode != 0


def test_ingest_installer_takes_an_ipv6_listen_address_the_config_loads(tmp_path):
    """--listen [::]:8443 writes the bare address to server.host, which the ingest config then loads."""
    from edgeloop.ingest.config import IngestConfig

    root = tmp_path / "root"
    done = install("install-ingest", "--prefix", str(root), "--user", ME, "--no-venv", "--listen", "[::]:8443")
    assert done.returncode == 0, done.stderr
    server = IngestConfig.load(root / "etc" / "edgeloop" / "ingest.toml").server
    assert (server.host, server.port) == ("::", 8443)


def directives(unit: Path) -> dict[str, str]:
    found = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), value.strip())
    return found


HARDENING = (
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges", "CapabilityBoundingSet",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc", "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
    "RestrictSUIDSGID", "LockPersonality", "RemoveIPC", "SystemCallArchitectures", "SystemCallFilter", "UMask",
)


def test_ingest_unit_is_hardened_like_the_collectors():
    """The ingest unit carries every sandboxing setting of the collector's, with the same values."""
    collector, ingest = directives(COLLECTOR_UNIT), directives(INGEST_UNIT)
    assert {key: ingest.get(key) for key in HARDENING} == {key: collector[key] for key in HARDENING}
    assert ingest["User"] == "edgeloop-ingest" and ingest["StateDirectory"] == "edgeloop-ingest"
    assert collector["ExecReload"] == "/bin/kill -HUP $MAINPID"  # systemctl reload: sampling and schemas
    assert ingest["ExecStart"].endswith("edgeloop-ingest serve")


@pytest.mark.parametrize("unit", [INGEST_UNIT], ids=["ingest"])
def test_systemd_analyze_verifies_the_ingest_unit(tmp_path, unit):
    """systemd-analyze verify accepts the ingest unit without a warning (with ExecStart pointing at this venv)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/edgeloop-ingest/venv/bin", str(VENV_BIN)))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if copy.name in line or "edgeloop" in line]
    assert done.returncode == 0 and problems == [], done.stderr
