"""A DuckDB connection to edgeloop's database, opened and configured the one way every process does.

Kept apart from the Store (the server's writer) and its Arrow and schema modules, so a command
that only reads the file (``edgeloop-ingest sql``, ``export``) starts with DuckDB alone.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from edgeloop.errors import DatabaseInUse, StoreError

__all__ = ["configure", "connect", "quote"]

CHECKPOINT_WAL_BYTES = 256 * 1024 * 1024


def quote(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def configure(
    con: duckdb.DuckDBPyConnection, threads: int | None, *, read_only: bool, write_to: Path | None = None,
    lake: bool = False, memory_limit_bytes: int | None = None, spill_max_bytes: int | None = None,
) -> None:
    """UTC timestamps; no file, network or extension access by SQL (but ``write_to``); settings frozen after.

    A ``lake`` connection keeps its attached catalog and the ``allowed_directories`` of its data files.
    """
    con.execute("SET TimeZone = 'UTC'")
    if write_to is not None:
        # The one file an export's COPY may write; with progress reported to the caller, not printed.
        con.execute("SET allowed_paths = [?]".replace("?", "'" + str(write_to).replace("'", "''") + "'"))
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
    if not read_only and not lake:
        # Each checkpoint recompresses the table's open row group: at DuckDB's 16 MB default a
        # stream of group commits rewrites it over and over (measured: commits 2-3x slower).
        con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_WAL_BYTES}B'")
        # A group commit of a row group or more is written compressed at its commit; vacuum would merge its
        # partial last row group into its neighbours, compressing them all again (compaction reclaims deletes).
        con.execute("SET max_vacuum_tasks = 0")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit_bytes:
        con.execute(f"SET memory_limit = '{int(memory_limit_bytes)}B'")
    if spill_max_bytes:
        con.execute(f"SET max_temp_directory_size = '{int(spill_max_bytes)}B'")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET allow_community_extensions = false")
    if not lake:  # DuckLake's attach looks up the persistent secret storage (it fails without it)
        con.execute("SET allow_persistent_secrets = false")
    # A query must never see the Python variables of the code that runs it.
    con.execute("SET python_enable_replacements = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def connect(
    path: Path, *, read_only: bool, threads: int | None = None, write_to: Path | None = None,
    memory_limit_bytes: int | None = None, spill_max_bytes: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the database file from a process other than the server (the CLI, while it is stopped)."""
    if read_only and not Path(path).exists():
        raise StoreError(f"{path}: no database here (has the server ever run with this db_path?)")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseInUse(f"{path}: the database is held by another process (is the server running?)") from exc
        raise StoreError(f"{path}: cannot open the database: {exc}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from exc
    if not read_only:
        # The writer's tables, from their modules: a read (sql, export) starts without loading them.
        from edgeloop.ingest import health
        from edgeloop.ingest.policies import POLICY_TABLES
        from edgeloop.ingest.store import BOOTSTRAP

        con.execute(BOOTSTRAP)
        con.execute(POLICY_TABLES)
        health.ensure_tables(con)
    configure(con, threads, read_only=read_only, write_to=write_to, memory_limit_bytes=memory_limit_bytes,
               spill_max_bytes=spill_max_bytes)
    return con
