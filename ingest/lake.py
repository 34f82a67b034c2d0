"""The LakeStore: the Store's writer landing into a DuckLake whose catalog is PostgreSQL.

Any number of ``edgeloop-ingest serve`` replicas land into one lake. Each keeps the Store's
one writer thread and group commits; what one server got from owning its file, replicas get
from claims in the catalog database (see docs/design.md, "More than one server"):

1. Before landing a group, the writer takes a PostgreSQL advisory lock for every batch id and
   every device in it, in sorted order (two replicas never deadlock), on a session of its own.
2. A claim row left by a replica that died names it; the writer waits until every catalog
   session of that replica is gone, so a commit it had sent is decided before the ledger is read.
3. The ledger is read (a landed batch answers 200 or 409), the new batches' rows and their
   ledger rows commit in one DuckLake transaction (one catalog transaction), then the locks go.

Device tokens and schemas live in the lake, so every replica sees the same ones; each replica
re-reads them every ``lake_refresh_s``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from edgeloop.errors import ConfigError, DiskFull, StoreBusy, StoreError
from edgeloop.ingest import health, tallies
from edgeloop.ingest.aggregate import AGGREGATES
from edgeloop.ingest.auth import DeviceRegistry
from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.connection import configure, quote
from edgeloop.ingest.policies import POLICY_TABLES
from edgeloop.ingest.store import BOOTSTRAP as STORE_BOOTSTRAP
from edgeloop.ingest.store import Store, _Job, load_catalog, server_memory_limit_bytes
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.settings import read_text

__all__ = ["Claims", "LakeStore", "attach_sql", "compact", "connect_lake", "extension_path", "files_in_lake", "migrate"]

log = logging.getLogger(__name__)

LAKE = "lake"  # the name the lake is attached under in every edgeloop connection
EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
}
CONFLICT_RETRIES = 5  # a schema change racing a landing: DuckLake refuses one commit, we run it again
APPLICATION = "edgeloop-ingest/"  # PostgreSQL's application_name of a replica's catalog sessions, + its id

def without_keys(sql: str) -> str:
    """A CREATE TABLE script without its PRIMARY KEY and UNIQUE clauses (DuckLake has neither)."""
    sql = re.sub(r",\s*PRIMARY KEY \([^)]*\)", "", sql)
    return re.sub(r"\s+(PRIMARY KEY|UNIQUE)\b", "", sql)


# DuckLake has no primary keys or unique constraints: the claims below keep batch ids unique, and
# the aggregates are deltas merged by views (ingest/aggregate.py).
BOOTSTRAP = without_keys(STORE_BOOTSTRAP + POLICY_TABLES) + health.create_sql(lake=True) + tallies.create_sql(lake=True)
FOLD_RETRIES = 20  # a fold conflicts with every replica's landing that commits meanwhile; it reads again

CLAIMS_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS edgeloop_claims (
    batch_id text PRIMARY KEY,
    replica text NOT NULL,
    lock_pid integer NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
)
"""


def extension_path(name: str) -> Path:
    """The ``.duckdb_extension`` file shipped in the pinned wheel ``duckdb-extension-<name>``."""
    try:
        package = import_module(EXTENSIONS[name])
    except ImportError as exc:
        raise ConfigError(
            f"store.backend = \"ducklake\" needs the {name} extension: pip install 'edgeloop[lake]'"
        ) from exc
    folder = Path(package.__file__).parent
    found = sorted(folder.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise ConfigError(f"{folder}: the {name} wheel holds no {name}.duckdb_extension")
    version = f"v{duckdb.__version__}"
    matching = [path for path in found if version in path.parts]
    return (matching or found)[0]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tagged_catalog(catalog: str, replica: str) -> str:
    """The connection string with this replica's application_name, so others can tell its sessions apart."""
    name = APPLICATION + replica
    if catalog.startswith(("postgres://", "postgresql://")):
        return catalog + ("&" if "?" in catalog else "?") + f"application_name={name}"
    return f"{catalog} application_name={name}"


def attach_sql(settings: StoreSettings, *, read_only: bool, catalog: str | None = None) -> str:
    """The ATTACH statement for the lake (what a data scientist runs too, with READ_ONLY)."""
    data_path = settings.data_path or ""
    if not settings.on_s3:
        data_path = str(Path(data_path).absolute()) + "/"
    options = [f"DATA_PATH {_literal(data_path)}", "METADATA_SCHEMA 'public'"]
    if read_only:
        options.append("READ_ONLY")
    return f"ATTACH {_literal('ducklake:postgres:' + (catalog or settings.catalog or ''))} AS {LAKE} ({', '.join(options)})"


def connect_lake(
    settings: StoreSettings, *, read_only: bool, threads: int | None = None, write_to: Path | None = None,
    replica: str | None = None, memory_limit_bytes: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and in use; extensions load from the pinned wheels only."""
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False,
    })
    try:
        names = ["postgres_scanner", "ducklake"] + (["httpfs"] if settings.on_s3 else [])
        for name in names:
            con.execute(f"LOAD {_literal(str(extension_path(name)))}")
        if settings.on_s3:
            con.execute(_s3_secret(settings))
        con.execute(f"SET ducklake_max_retry_count = {int(settings.lake_max_retry_count)}")
        catalog = tagged_catalog(settings.catalog or "", replica) if replica else settings.catalog
        con.execute(attach_sql(settings, read_only=read_only, catalog=catalog))
        con.execute(f"USE {LAKE}")
    except duckdb.Error as exc:
        con.close()
        raise StoreError(f"store.catalog: cannot attach the lake: {str(exc).splitlines()[0]}") from exc
    # Only the lake's own files (and an export's one file) can be read or written by SQL from here on.
    allowed = [settings.data_path if settings.on_s3 else str(Path(settings.data_path or "").absolute()) + "/"]
    con.execute(f"SET allowed_directories = [{', '.join(_literal(path) for path in allowed)}]")
    configure(con, threads, read_only=read_only, write_to=write_to, lake=True, memory_limit_bytes=memory_limit_bytes)
    return con


def _s3_secret(settings: StoreSettings) -> str:
    parts = ["TYPE s3"]
    if settings.s3_key_id and settings.s3_secret_file:
        secret = read_text(settings.s3_secret_file, what="store.s3_secret_file").strip()
        parts += [f"KEY_ID {_literal(settings.s3_key_id)}", f"SECRET {_literal(secret)}"]
    if settings.s3_region:
        parts.append(f"REGION {_literal(settings.s3_region)}")
    if settings.s3_endpoint:
        parts.append(f"ENDPOINT {_literal(settings.s3_endpoint)}")
    parts.append(f"URL_STYLE {_literal(settings.s3_url_style)}")
    parts.append(f"USE_SSL {'true' if settings.s3_use_ssl else 'false'}")
    return f"CREATE SECRET edgeloop_s3 ({', '.join(parts)})"


def _lock_key(kind: str, value: str) -> int:
    """A 64-bit advisory lock key; two names sharing one only wait for each other."""
    digest = hashlib.blake2b(f"edgeloop:{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Claims:
    """Advisory locks and claim rows in the catalog database, on one session of the writer's."""

    def __init__(self, catalog: str, replica: str, timeout_s: float) -> None:
        self.catalog = catalog
        self.replica = replica
        self.timeout_s = timeout_s
        self._con: psycopg.Connection | None = None
        self._held = False

    @property
    def holding(self) -> bool:
        """Whether this session holds locks now (inside ``hold``)."""
        return self._held

    def _session(self) -> psycopg.Connection:
        if self._con is None or self._con.closed:
            try:
                self._con = psycopg.connect(self.catalog, autocommit=True, application_name=f"edgeloop-claims/{self.replica}")
                self._con.execute(f"SET lock_timeout = '{int(self.timeout_s * 1000)}ms'")
                self._con.execute("SELECT pg_advisory_lock(%s)", [_lock_key("bootstrap", "claims")])
                try:
                    self._con.execute(CLAIMS_BOOTSTRAP)
                finally:
                    self._con.execute("SELECT pg_advisory_unlock(%s)", [_lock_key("bootstrap", "claims")])
            except psycopg.Error as exc:
                self._con = None
                raise StoreError(f"store.catalog: cannot reach the catalog database: {exc}".strip()) from exc
        return self._con

    @contextmanager
    def hold(self, keys: list[tuple[str, str]], batch_ids: list[str] = ()) -> Iterator[None]:
        """Hold the locks of ``keys`` (and claim ``batch_ids``) while the block runs; re-entrant."""
        if self._held:
            yield
            return
        con = self._session()
        try:
            for key in sorted({_lock_key(kind, value) for kind, value in keys}):
                con.execute("SELECT pg_advisory_lock(%s)", [key])
            self._held = True
            if batch_ids:
                self._wait_for_dead_owners(con, list(batch_ids))
                con.execute(
                    "INSERT INTO edgeloop_claims (batch_id, replica, lock_pid) SELECT unnest(%s::text[]), %s, pg_backend_pid() "
                    "ON CONFLICT (batch_id) DO UPDATE SET replica = excluded.replica, lock_pid = excluded.lock_pid, "
                    "claimed_at = now()",
                    [list(batch_ids), self.replica],
                )
        except psycopg.errors.LockNotAvailable as exc:
            self._release(con)
            raise StoreBusy(f"another replica has held these batches for {self.timeout_s:g} s") from exc
        except psycopg.Error as exc:
            self._drop(con)
            raise StoreError(f"claiming batches in the catalog database failed: {exc}".strip()) from exc
        try:
            yield
        finally:
            try:
                if batch_ids:
                    con.execute("DELETE FROM edgeloop_claims WHERE batch_id = ANY(%s) AND replica = %s", [list(batch_ids), self.replica])
                self._release(con)
            except psycopg.Error:
                self._drop(con)  # the session's end releases its locks

    def _wait_for_dead_owners(self, con: psycopg.Connection, batch_ids: list[str]) -> None:
        """A claim whose owner's lock session is gone: wait until its catalog sessions are gone too.

        PostgreSQL runs a session's last COMMIT before it notices the client died, so once no
        session of that replica is left, its landing either committed or never will.
        """
        rows = con.execute(
            "SELECT DISTINCT c.replica FROM edgeloop_claims AS c WHERE c.batch_id = ANY(%s) AND c.replica <> %s "
            "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = c.lock_pid)",
            [batch_ids, self.replica],
        ).fetchall()
        deadline = time.monotonic() + self.timeout_s
        for (replica,) in rows:
            while con.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION + replica]
            ).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise StoreBusy(f"replica {replica} died holding a claim and its catalog sessions linger")
                time.sleep(0.05)
            log.info("took over the claims of a replica that died", extra={"replica": replica})

    def _release(self, con: psycopg.Connection) -> None:
        self._held = False
        con.execute("SELECT pg_advisory_unlock_all()")

    def _drop(self, con: psycopg.Connection) -> None:
        self._held = False
        self._con = None
        try:
            con.close()
        except psycopg.Error:
            pass

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """One replica at a time for ``name`` (schema registration, device changes)."""
        with self.hold([("admin", name)]):
            yield

    def close(self) -> None:
        if self._con is not None:
            self._drop(self._con)


class LakeStore(Store):
    """The Store landing into a DuckLake; batches land exactly once across any number of replicas."""

    lake = True

    def __init__(self, path: Path, settings: StoreSettings, **kwargs: Any) -> None:
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._claims = Claims(settings.catalog or "", self.replica, settings.lake_claim_timeout_s)
        self._catalog_lock = threading.Lock()
        super().__init__(path, settings, **kwargs)

    def _open(self) -> duckdb.DuckDBPyConnection:
        if not self.settings.on_s3:
            Path(self.settings.data_path or "").mkdir(mode=0o750, parents=True, exist_ok=True)
        con = connect_lake(self.settings, read_only=False, threads=self.settings.threads or _threads(), replica=self.replica,
                           memory_limit_bytes=server_memory_limit_bytes(self.settings))
        with self._claims.exclusive("bootstrap"):
            _run_in_transaction(con, lambda c: c.execute(BOOTSTRAP))
        return con

    def _new_cursor(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        cur = con.cursor()
        cur.execute(f"USE {LAKE}")  # a cursor starts in the in-memory database
        return cur

    def free_bytes(self) -> int:
        if self.settings.on_s3:
            return 1 << 62  # object storage has no disk of ours to fill
        stats = os.statvfs(self.settings.data_path or ".")
        return stats.f_bavail * stats.f_frsize

    def refresh(self) -> dict[str, str]:
        """Re-read schemas registered through other replicas; returns the live device tokens."""
        cur = self.cursor()
        catalog = load_catalog(cur, adopt=False)
        with self._catalog_lock:
            self.catalog = catalog
        self._guard = self._guard.current(cur)  # another replica may have run a deletion
        return DeviceRegistry.live(cur)

    def schema_for(self, fingerprint: str) -> ModelSchema | None:
        """A schema another replica registered a moment ago is looked up in the lake, not refused."""
        schema = self.catalog.get(fingerprint)
        if schema is not None:
            return schema
        row = self.cursor().execute("SELECT schema_json FROM schemas WHERE fingerprint = ?", [fingerprint]).fetchone()
        if row is None:
            return None
        schema = ModelSchema.from_canonical_json(row[0])
        with self._catalog_lock:
            self.catalog = self.catalog.with_schema(schema)
        return schema

    def land_group(self, group: list[_Job]) -> None:
        keys = [("batch", job.landing.batch.batch_id) for job in group] + [("device", job.landing.device) for job in group]
        ids = sorted({job.landing.batch.batch_id for job in group})
        try:
            with self._claims.hold(keys, ids):
                self._columns = self._load_columns()  # another replica may have widened a table
                super().land_group(group)
        except (StoreBusy, StoreError, DiskFull) as exc:
            if not self._claims.holding:
                for job in group:
                    if not job.future.done():
                        self._settle(job, error=exc)
                return
            raise

    def _insert(self, con: duckdb.DuckDBPyConnection, jobs: list[_Job]) -> list[dict[str, Any]]:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return super()._insert(con, jobs)
            except duckdb.TransactionException as exc:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("a lake commit conflicted with another replica's; landing again", extra={"error": str(exc)[:200]})
                self._columns = self._load_columns()
        raise AssertionError("unreachable")

    def _truth(self, con: duckdb.DuckDBPyConnection, model: str) -> str | None:
        """Asked in every landing: another replica may have registered a schema that names another truth field."""
        return tallies.labelled_by(con, model)

    def _run_call(self, call: Any) -> None:
        try:
            with self._claims.exclusive("catalog"):
                super()._run_call(call)
        except (StoreBusy, StoreError) as exc:
            if not call.future.done():
                call.future.set_exception(exc)

    def _checkpoint(self) -> None:
        """Nothing to checkpoint: a lake commit is final; ``edgeloop-ingest compact`` merges files."""

    def close(self, timeout_s: float = 30.0) -> None:
        super().close(timeout_s)
        self._claims.close()


def _threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def _run_in_transaction(con: duckdb.DuckDBPyConnection, fn: Any) -> Any:
    con.execute("BEGIN TRANSACTION")
    try:
        result = fn(con)
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    return result


def files_in_lake(con: duckdb.DuckDBPyConnection) -> int:
    """Live data and delete files of the lake's current snapshot."""
    return int(con.execute(
        f"SELECT (SELECT count(*) FROM __ducklake_metadata_{LAKE}.ducklake_data_file WHERE end_snapshot IS NULL) + "
        f"(SELECT count(*) FROM __ducklake_metadata_{LAKE}.ducklake_delete_file WHERE end_snapshot IS NULL)"
    ).fetchone()[0])


def fold(con: duckdb.DuckDBPyConnection) -> int:
    """Fold each aggregate's deltas into one row per key; a fold that a replica's landing raced reads again."""
    folded = 0
    have = {name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
    ).fetchall()}
    for aggregate in AGGREGATES:
        if aggregate.table(True) not in have:
            continue  # a lake no replica of this version has opened yet
        folded += _retrying(con, aggregate.fold, f"folding {aggregate.table(True)}")
    return folded


def _retrying(con: duckdb.DuckDBPyConnection, fn: Any, what: str) -> Any:
    """Run ``fn`` in a lake transaction, again while replicas' landings commit first (up to FOLD_RETRIES times)."""
    for attempt in range(FOLD_RETRIES):
        try:
            return _run_in_transaction(con, fn)
        except duckdb.TransactionException as exc:
            if attempt == FOLD_RETRIES - 1:
                raise StoreBusy(
                    f"{what} conflicted with replicas' landings {FOLD_RETRIES} times and was left as it was (nothing is "
                    "lost: the aggregates' views still merge every delta); run compact again when fewer batches land"
                ) from exc
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def compact(settings: StoreSettings, *, keep_s: float = 3600.0) -> dict[str, int]:
    """Fold the aggregates' deltas, merge small files, flush inlined rows, expire old snapshots, delete unneeded files.

    Label coverage counted by an older rule is counted again first (``tallies.recount_coverage``).

    Files younger than ``keep_s`` are kept: a replica's commit in flight, or a reader's snapshot, may need them.
    """
    con = connect_lake(settings, read_only=False, threads=settings.threads)
    try:
        # A lake whose label coverage an older version counted (any feedback as a label) is counted again, once.
        recounted = _retrying(con, tallies.recount_coverage, "counting the label coverage again")
        folded = fold(con)  # before the flush: deltas still inlined in the catalog fold there, leaving no file with deletes
        # Rows small commits kept in the catalog go to files first: "before" counts them as files too.
        con.execute(f"CALL ducklake_flush_inlined_data('{LAKE}')").to_arrow_table()
        before = files_in_lake(con)
        older = f"now() - INTERVAL '{float(keep_s)} seconds'"
        for statement in (
            f"CALL ducklake_merge_adjacent_files('{LAKE}')",
            f"CALL ducklake_expire_snapshots('{LAKE}', older_than => {older})",
            f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => {older})",
            f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => {older})",
        ):
            con.execute(statement).to_arrow_table()  # not fetchall: its timestamps would need pytz
        after = files_in_lake(con)
    except duckdb.Error as exc:
        raise StoreError(f"compacting the lake failed: {str(exc).splitlines()[0]}") from exc
    finally:
        con.close()
    return {"files_before": before, "files_after": after, "deltas_folded": folded, "coverage_recounted": int(recounted)}



def migrate(db_path: Path, settings: StoreSettings) -> dict[str, int]:
    """Copy a DuckDB store into an empty lake in one lake transaction: schemas, devices, the ledger, every table.

    The ledger comes along, so a device retrying a batch that landed before the move gets its 200.
    Returns the rows copied per table; refuses a lake that already holds batches.
    """
    from edgeloop.ingest.connection import connect
    from edgeloop.ingest.store import register_schema

    source = connect(Path(db_path), read_only=True)
    if not settings.on_s3:
        Path(settings.data_path or "").mkdir(mode=0o750, parents=True, exist_ok=True)
    target = connect_lake(settings, read_only=False)
    claims = Claims(settings.catalog or "", f"migrate-{os.getpid()}", settings.lake_claim_timeout_s)
    copied: dict[str, int] = {}
    try:
        with claims.exclusive("catalog"):
            _run_in_transaction(target, lambda c: c.execute(BOOTSTRAP))
            if target.execute("SELECT count(*) FROM batches").fetchone()[0]:
                raise StoreError("the lake already holds batches: migrate into an empty lake (a new catalog database)")
            tables = [name for (name,) in source.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
                "ORDER BY table_name"
            ).fetchall()]
            schemas = [ModelSchema.from_canonical_json(text) for (text,) in source.execute(
                "SELECT schema_json FROM schemas ORDER BY registered_at, version"
            ).fetchall()]

            def copy(con: duckdb.DuckDBPyConnection) -> None:
                for schema in schemas:  # the model tables, as the lake types them, and the schema registry
                    register_schema(con, schema, lake=True)
                con.execute("DELETE FROM schemas")
                con.execute("DELETE FROM models")  # both copied as they were, registration times included
                have = {name for (name,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
                ).fetchall()}
                deltas = {aggregate.name: aggregate.table(True) for aggregate in AGGREGATES}
                for table in tables:
                    if table == "rows_daily":
                        continue  # counted by landed_daily now
                    source_table, table = table, deltas.get(table, table)  # a lake keeps an aggregate's rows as deltas
                    if table not in have:  # a table of a later feature: its columns, arrays as lists
                        columns = source.execute(
                            "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = current_database() "
                            "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [source_table]
                        ).fetchall()
                        body = ", ".join(f"{quote(name)} {_lake_type(type_)}" for name, type_ in columns)
                        con.execute(f"CREATE TABLE {quote(table)} ({body})")
                    else:  # columns a later feature added to a table the lake has too
                        lake_columns = {name for (name,) in con.execute(
                            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
                            "AND table_schema = 'main' AND table_name = ?", [table]
                        ).fetchall()}
                        for name, type_ in source.execute(
                            "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = current_database() "
                            "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [source_table]
                        ).fetchall():
                            if name not in lake_columns:
                                con.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {_lake_type(type_)}")
                    reader = source.execute(f"SELECT * FROM {quote(source_table)}").fetch_record_batch(100_000)
                    con.register("__edgeloop_source", reader)
                    try:
                        con.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM __edgeloop_source")
                    finally:
                        con.unregister("__edgeloop_source")
                    copied[source_table] = int(source.execute(f"SELECT count(*) FROM {quote(source_table)}").fetchone()[0])
                    landed = int(con.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])
                    if landed != copied[source_table]:
                        raise StoreError(f"{table}: {copied[source_table]} rows in the DuckDB file, {landed} in the lake")

            _run_in_transaction(target, copy)
    except duckdb.Error as exc:
        raise StoreError(f"migrating {db_path} into the lake failed (the lake is unchanged): {str(exc).splitlines()[0]}") from exc
    finally:
        claims.close()
        target.close()
        source.close()
    return copied


def _lake_type(type_: str) -> str:
    """DuckLake has no fixed-size arrays: FLOAT[16] becomes FLOAT[]."""
    return re.sub(r"\[\d+\]", "[]", type_)
