"""Compaction: rewrite the database file so deleted rows' bytes are gone from the disk.

DuckDB frees the blocks of deleted rows at a CHECKPOINT but does not overwrite them, and
rewriting a table in place (CREATE TABLE AS + swap) only frees more blocks: the deleted
values stay readable in the file (measured on DuckDB 1.5 by grepping the file). What does
clear them is DuckDB's documented way to compact: ``COPY FROM DATABASE`` into a fresh file,
which copies tables (constraints and defaults included), views and data, and then replacing
the old file with it durably. The caller must have closed every connection to the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from edgeloop.durable import fsync_dir
from edgeloop.errors import StoreError

__all__ = ["compact_file"]


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def compact_file(path: Path) -> tuple[int, int]:
    """Rewrite ``path`` through a fresh file; returns its size (bytes) before and after.

    The new file is written next to the old one, fsynced and renamed over it, so a crash
    leaves either the old file or the new one, whole; the temporary file is removed on error.
    """
    path = Path(path)
    fresh = path.with_name(f".{path.name}.compact")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    before = path.stat().st_size
    try:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"ATTACH {_literal(path)} AS old_db")
            con.execute("CHECKPOINT old_db")  # the WAL into the file first, so the copy sees all of it
            con.execute(f"ATTACH {_literal(fresh)} AS new_db")
            con.execute("COPY FROM DATABASE old_db TO new_db")
            con.execute("CHECKPOINT new_db")
            con.execute("DETACH new_db")
            con.execute("DETACH old_db")
        finally:
            con.close()
        with open(fresh, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(fresh, path.stat().st_mode & 0o777)
        os.replace(fresh, path)
        fsync_dir(path.parent)
    except duckdb.Error as exc:
        fresh.unlink(missing_ok=True)
        raise StoreError(f"{path}: rewriting the database to reclaim deleted rows failed: {exc}") from exc
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise
    # A WAL of the old file would be replayed into the new one: the checkpoint above emptied it.
    path.with_name(path.name + ".wal").unlink(missing_ok=True)
    return before, path.stat().st_size
