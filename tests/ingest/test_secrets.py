"""Secrets and data on disk are kept from other users: refused when readable by everyone, created without others' access."""

from __future__ import annotations

import stat

import pytest

from edgeloop.collector.config import SpoolSettings
from edgeloop.collector.spool import Spool
from edgeloop.errors import ConfigError
from edgeloop.ingest.auth import admin_token
from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.store import Store
from tests.ingest.conftest import cli, free_port, make_table, write_config


def test_a_world_readable_admin_token_is_refused(tmp_path):
    """The server will not start, nor the CLI use, an admin token file others can read; 0600 is fine."""
    token = tmp_path / "admin.token"
    token.write_text("secret-admin-token\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        admin_token(token)
    result = cli("serve", "--config", str(write_config(tmp_path, free_port())), check=False, timeout=60)
    assert result.returncode != 0 and "admin token file is readable" in result.stderr
    assert "chmod 600" in result.stderr.strip().splitlines()[-1] and "schema registered" not in result.stderr
    token.chmod(0o600)
    assert admin_token(token) == "secret-admin-token"


def test_the_database_and_its_folder_are_not_for_others(tmp_path):
    """The store creates its DuckDB file 0640 at most, in a new folder 0750 at most, even under a permissive umask."""
    db = tmp_path / "fresh" / "ingest.duckdb"
    store = Store(db, StoreSettings(threads=1))
    try:
        assert stat.S_IMODE(db.stat().st_mode) & ~0o640 == 0
        assert stat.S_IMODE(db.parent.stat().st_mode) & ~0o750 == 0
    finally:
        store.close()


def test_sealed_batches_are_0640(tmp_path, vibration):
    """A sealed batch file is created 0640 outside systemd too (no world-readable records)."""
    spool = Spool(tmp_path / "spool", SpoolSettings(), agent_version="test")
    batch = spool.write_batch(make_table(vibration, predictions=2)[0], schema=vibration)
    assert stat.S_IMODE(batch.path.stat().st_mode) == 0o640
