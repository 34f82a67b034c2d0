"""How the CLI reaches the database: directly when no server runs, else through the server.

DuckDB lets one process open a file read-write, and a read-write holder blocks readers in
other processes. So ``sql``, ``export``, ``fleet`` and ``devices`` open the file directly
when they can, and fall back to the running server's admin API when the file is held.
A lake (``store.backend = "ducklake"``) is always attached directly: it has no such lock.
Both backends speak the ``Admin`` protocol and pass the same tests.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from edgeloop.errors import (
    AuthError,
    DatabaseInUse,
    IngestError,
    QueryFailed,
    QueryRefused,
    QueryTooExpensive,
    StoreClosed,
    StoreError,
)
from edgeloop.ingest.connection import connect
from edgeloop.ingest.export import ResultStream, exported_select
from edgeloop.ingest.query import check_query, readable, run_query, stream_query, translate_errors

# What only some commands use (Arrow, the schema models, the writer's modules, HTTP) is imported where it is used:
# `sql` and `export` to a file start with DuckDB alone.
if TYPE_CHECKING:
    import urllib.error

    import pyarrow as pa

    from edgeloop.ingest.catalog import Catalog
    from edgeloop.ingest.config import IngestConfig, StoreSettings
    from edgeloop.ingest.deletion import Deletion
    from edgeloop.ingest.label_import import LabelRow
    from edgeloop.ingest.legacy import Finding

__all__ = ["Admin", "LocalAdmin", "RemoteAdmin", "open_admin"]

FINGERPRINTS_SQL = "SELECT model, schema_fingerprint FROM models ORDER BY model"


class Admin(Protocol):
    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table: ...
    def fingerprints(self) -> dict[str, str]: ...
    def stream(self, sql: str, params: Sequence[Any] = (), *, export: bool = False) -> ResultStream: ...
    def add_device(self, name: str) -> str: ...
    def revoke_device(self, name: str) -> None: ...
    def push_schema(self, text: str, source: str) -> dict[str, Any]: ...
    def catalog(self) -> Catalog: ...
    def set_policy(self, model: str, text: str, source: str, devices: str | None, tag: str | None) -> dict[str, Any]: ...
    def rollback_policy(self, model: str, to: int | None) -> dict[str, Any]: ...
    def tag_device(self, name: str, add: list[str], remove: list[str]) -> dict[str, Any]: ...
    def import_labels(self, model: str, source: str, tag: str, rows: list[LabelRow]) -> dict[str, Any]: ...
    def delete(self, deletion: Deletion, *, execute: bool, by: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


class LocalAdmin:
    """Opens the DuckDB file itself: read-only for queries, read-write for device changes.

    With ``lake`` settings it attaches the lake instead (any number of processes may), and its
    changes take the same catalog lock as the replicas' (``ingest/lake.py``).
    """

    def __init__(self, path: Path, *, read_only: bool, timeout_s: float | None = None, write_to: Path | None = None,
                 lake: StoreSettings | None = None, max_value_bytes: int = 8 * 1024 * 1024, tombstone_days: int = 90) -> None:
        self._lake = lake
        self._tombstone_days = tombstone_days  # store.tombstone_days: a deletion here expires them as the server's does
        self._path = Path(path)
        self._read_only = read_only
        if lake is None:
            self._con = connect(path, read_only=read_only, write_to=write_to)
        else:
            from edgeloop.ingest.lake import connect_lake  # the lake extra's dependencies

            self._con = connect_lake(lake, read_only=read_only, write_to=write_to)
        self._timeout_s = timeout_s
        self._max_value_bytes = max_value_bytes
        self.write_to = write_to

    def tables_read(self, sql: str) -> frozenset[str]:
        """The project tables and views an allowed query reads (refuses one that is not allowed)."""
        return check_query(self._con, sql).tables

    def copy(self, sql: str, params: Sequence[Any], options: str, on_progress: Callable[[float], None] | None = None) -> int:
        """``COPY (<allowed SELECT>) TO write_to``: the only write this connection can make; returns the rows."""
        if self.write_to is None:
            raise StoreError("this connection was not opened to write an export")
        checked = check_query(self._con, sql)
        with translate_errors(None):
            # The types the server's Arrow stream gives: one file whichever path wrote it.
            select = exported_select(self._con, checked.sql, params, parquet=options.startswith("FORMAT parquet"))
        target = "'" + str(self.write_to).replace("'", "''") + "'"
        copy = f"COPY ({select}) TO {target} ({options})"
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with translate_errors(None):
                    outcome["rows"] = self._con.execute(copy, list(params) if params else None).fetchone()[0]
            except BaseException as exc:  # handed to the calling thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="edgeloop-export")
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
                if on_progress is not None and worker.is_alive():
                    on_progress(self._con.query_progress())
        except BaseException:
            self._con.interrupt()
            worker.join()
            raise
        if "error" in outcome:
            raise outcome["error"]
        return int(outcome["rows"])

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return run_query(self._con, sql, params, timeout_s=self._timeout_s)

    def fingerprints(self) -> dict[str, str]:
        """Each landed model's schema fingerprint, by name (without Arrow: an export's COPY needs none)."""
        with translate_errors(None):
            return dict(self._con.execute(FINGERPRINTS_SQL).fetchall())

    def stream(self, sql: str, params: Sequence[Any] = (), *, export: bool = False) -> ResultStream:
        """The rows as DuckDB produces them; an export is not stopped by ``sql_timeout_s``."""
        checked = check_query(self._con, sql)
        batches = stream_query(self._con, sql, params, timeout_s=None if export else self._timeout_s, checked=checked)
        first = next(batches)
        return ResultStream(first.schema, itertools.chain([first], batches), tables=checked.tables, close=batches.close)

    def _write(self, fn: Any) -> Any:
        if self._lake is not None:
            from edgeloop.ingest.lake import Claims

            claims = Claims(self._lake.catalog or "", f"cli-{os.getpid()}", self._lake.lake_claim_timeout_s)
            try:
                with claims.exclusive("catalog"):
                    return self._transaction(fn)
            finally:
                claims.close()
        return self._transaction(fn)

    def _transaction(self, fn: Any) -> Any:
        self._con.execute("BEGIN TRANSACTION")
        try:
            result = fn(self._con)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return result

    def add_device(self, name: str) -> str:
        from edgeloop.ingest.auth import DeviceRegistry

        return self._write(lambda con: DeviceRegistry.add(con, name))

    def revoke_device(self, name: str) -> None:
        from edgeloop.ingest.auth import DeviceRegistry

        self._write(lambda con: DeviceRegistry.revoke(con, name))

    def push_schema(self, text: str, source: str) -> dict[str, Any]:
        from edgeloop.ingest.store import register_schema
        from edgeloop.schemas.model_schema import ModelSchema

        schema = ModelSchema.from_toml(text, source=source)
        return self._write(lambda con: register_schema(con, schema, lake=self._lake is not None))

    def catalog(self) -> Catalog:
        from edgeloop.ingest.store import load_catalog

        return load_catalog(self._con, adopt=False)

    def legacy_values(self) -> list[Finding]:
        """What an earlier version stored that today's checks refuse (``ingest/legacy.py``)."""
        from edgeloop.ingest.legacy import legacy_values

        with translate_errors(None):
            return legacy_values(self._con)

    def set_policy(self, model: str, text: str, source: str, devices: str | None, tag: str | None) -> dict[str, Any]:
        from edgeloop.ingest.policies import PolicyBook

        return self._write(lambda con: PolicyBook.set(con, self.catalog(), model, text, source=source, devices=devices, tag=tag))

    def rollback_policy(self, model: str, to: int | None) -> dict[str, Any]:
        from edgeloop.ingest.policies import PolicyBook

        return self._write(lambda con: PolicyBook.rollback(con, self.catalog(), model, to))

    def tag_device(self, name: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        from edgeloop.ingest.policies import PolicyBook

        return self._write(lambda con: PolicyBook.tag(con, name, add, remove))

    def import_labels(self, model: str, source: str, tag: str, rows: list[LabelRow]) -> dict[str, Any]:
        from edgeloop.ingest.label_import import land_labels

        schema = self.catalog().latest(model)
        if schema is None:
            raise StoreError(f"no model named {model!r} is registered")
        return self._write(lambda con: land_labels(con, schema, rows, source=source, tag=f"import:{tag}",
                                                   max_value_bytes=self._max_value_bytes))

    def delete(self, deletion: Deletion, *, execute: bool, by: str) -> dict[str, Any]:
        """Count or delete; a deletion then rewrites the file (this process holds it alone)."""
        from edgeloop.ingest.compaction import compact_file
        from edgeloop.ingest.deletion import apply

        catalog = self.catalog()
        result = self._write(lambda con: apply(con, deletion, catalog, execute=execute, by=by,
                                                    tombstone_days=self._tombstone_days))
        if execute and self._lake is not None:
            result["file_note"] = "a lake keeps deleted rows in older snapshots until `edgeloop-ingest compact` expires them"
        elif execute:
            self._con.execute("CHECKPOINT")
            self._con.close()
            try:
                before, after = compact_file(self._path)
                result.update(file_bytes_before=before, file_bytes_after=after)
            except StoreError as exc:  # the rows are deleted and audited: say so, and that the bytes may remain
                result["compaction_error"] = str(exc)
            finally:
                self._con = connect(self._path, read_only=self._read_only, write_to=self.write_to)
        return result

    def close(self) -> None:
        try:
            self._con.close()
        except duckdb.Error:
            pass


class RemoteAdmin:
    """Talks to a running server's admin API with the admin token."""

    def __init__(self, url: str, token: str, *, ca_file: Path | None = None, timeout_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._context = None
        if self.url.startswith("https://"):
            import ssl

            self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if ca_file:
                # Trusting exactly the server's own certificate pins it; its name need not match the URL.
                self._context.check_hostname = False

    def _open(self, method: str, path: str, payload: Any = None, *, raw: bytes | None = None) -> Any:
        import urllib.error
        import urllib.request

        data = raw if raw is not None else json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/toml" if raw is not None else "application/json",
            },
        )
        try:
            return urllib.request.urlopen(request, timeout=self._timeout_s, context=self._context)
        except urllib.error.HTTPError as exc:
            raise _translate(exc) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"cannot reach the server at {self.url}: {reason}") from exc

    def _request(self, method: str, path: str, payload: Any = None, *, raw: bytes | None = None) -> tuple[str, bytes]:
        with self._open(method, path, payload, raw=raw) as response:
            return response.headers.get_content_type(), response.read()

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        import pyarrow as pa

        result = self.stream(sql, params)
        try:
            return readable(pa.Table.from_batches(list(result.batches), schema=result.schema), sql)
        finally:
            result.close()

    def fingerprints(self) -> dict[str, str]:
        return {row["model"]: row["schema_fingerprint"] for row in self.query(FINGERPRINTS_SQL).to_pylist()}

    def stream(self, sql: str, params: Sequence[Any] = (), *, export: bool = False) -> ResultStream:
        """Read the server's Arrow stream batch by batch; its last message says whether the rows were cut."""
        import http.client

        import pyarrow as pa

        response = self._open("POST", "/v1/sql", {"sql": sql, "params": list(params), "export": export})
        try:
            reader = pa.ipc.open_stream(response)
        except (pa.ArrowException, OSError, http.client.HTTPException) as exc:
            response.close()
            raise StoreError(f"the server sent an unreadable result: {exc}") from exc
        tables = frozenset(filter(None, response.headers.get("X-Edgeloop-Tables", "").split(",")))
        result = ResultStream(reader.schema, iter(()), tables=tables, close=response.close)

        def batches() -> Iterator[pa.RecordBatch]:
            ended = False  # the server's last batch (edgeloop.rows) came: without it the rows are not the whole result
            while True:
                try:
                    batch, metadata = reader.read_next_batch_with_custom_metadata()
                except StopIteration:
                    if not ended:
                        raise StoreError("the server's result stream ended before its last batch: the rows received "
                                         "are not the whole result; run the query again") from None
                    return
                except (pa.ArrowException, OSError, http.client.HTTPException) as exc:
                    raise StoreError(f"the server's result stream broke off: the rows received are not the whole result "
                                     f"({type(exc).__name__}: {exc})") from exc
                note = {k.decode(): v.decode() for k, v in (metadata or {}).items()} if metadata else {}
                ended = ended or "edgeloop.rows" in note
                if "edgeloop.error" in note:
                    value = note.get("edgeloop.value")
                    details = {"limit": note.get("edgeloop.limit", ""), "value": float(value) if value else None}
                    raise _error(note.get("edgeloop.error_code", ""), note["edgeloop.error"], details)
                if note.get("edgeloop.truncated") == "true":
                    result.truncated, result.truncated_reason = True, note.get("edgeloop.reason", "")
                if batch.num_rows:
                    yield batch

        result.batches = batches()
        return result

    def add_device(self, name: str) -> str:
        _, body = self._request("POST", "/v1/devices", {"name": name})
        return json.loads(body)["token"]

    def revoke_device(self, name: str) -> None:
        self._request("DELETE", f"/v1/devices/{urllib.parse.quote(name, safe='')}")

    def push_schema(self, text: str, source: str) -> dict[str, Any]:
        from edgeloop.schemas.model_schema import ModelSchema

        ModelSchema.from_toml(text, source=source)  # a bad file fails here, naming the file
        _, body = self._request("POST", "/v1/schemas", raw=text.encode())
        return json.loads(body)

    def set_policy(self, model: str, text: str, source: str, devices: str | None, tag: str | None) -> dict[str, Any]:
        payload = {"policy": text, "source": source, "devices": devices, "tag": tag}
        return json.loads(self._request("POST", f"/v1/policies/{urllib.parse.quote(model, safe='')}", payload)[1])

    def rollback_policy(self, model: str, to: int | None) -> dict[str, Any]:
        return json.loads(self._request("POST", f"/v1/policies/{urllib.parse.quote(model, safe='')}/rollback", {"to": to})[1])

    def tag_device(self, name: str, add: list[str], remove: list[str]) -> dict[str, Any]:
        payload = {"add": add, "remove": remove}
        return json.loads(self._request("POST", f"/v1/devices/{urllib.parse.quote(name, safe='')}/tags", payload)[1])

    def catalog(self) -> Catalog:
        from edgeloop.ingest.catalog import Catalog
        from edgeloop.schemas.model_schema import ModelSchema

        _, body = self._request("GET", "/v1/schemas")
        return Catalog(ModelSchema.from_canonical_json(json.dumps(entry["schema"])) for entry in json.loads(body)["schemas"])

    def import_labels(self, model: str, source: str, tag: str, rows: list[LabelRow]) -> dict[str, Any]:
        payload = {"source": source, "tag": tag, "rows": [row.to_json() for row in rows]}
        _, body = self._request("POST", f"/v1/feedback/{urllib.parse.quote(model, safe='')}", payload)
        return json.loads(body)

    def delete(self, deletion: Deletion, *, execute: bool, by: str) -> dict[str, Any]:
        _, body = self._request("POST", "/v1/deletions", {**deletion.to_json(), "execute": execute, "by": by})
        return json.loads(body)

    def close(self) -> None:
        pass


def _translate(exc: urllib.error.HTTPError) -> IngestError:
    error: dict[str, Any] = {}
    try:
        error = json.loads(exc.read())["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"HTTP {exc.code} {exc.reason}"
    if exc.code == 401:
        return AuthError(f"the server refused the admin token: {message}")
    return _error(code, message, error.get("details"), status=exc.code)


def _error(code: str, message: str, details: Any, *, status: int | None = None) -> IngestError:
    """The exception for the server's error ``code``, whether it came as a status or as a stream's tail."""
    if code == "read_only":
        return QueryRefused(message)
    if code == "busy":
        return StoreError(f"{message} (HTTP {status or 429})")
    if code == "query_too_expensive":
        details = details if isinstance(details, dict) else {}
        return QueryTooExpensive(message, limit=details.get("limit", ""), value=details.get("value"))
    if code == "query_failed":
        return QueryFailed(message)
    if code == "shutting_down":
        return StoreClosed(message)
    return StoreError(message)


def open_admin(config: IngestConfig, *, url: str | None = None, token_file: Path | None = None,
               ca_file: Path | None = None, write: bool = False, write_to: Path | None = None) -> Admin:
    """The direct backend if the file is free (or ``url`` is not given), else the running server.

    ``write_to`` is the one file the direct backend's ``copy`` may write (an export's temp file).
    """
    if url is None and config.store.backend == "ducklake":
        return LocalAdmin(config.store.db_path, read_only=not write, timeout_s=config.store.sql_timeout_s,
                          write_to=write_to, lake=config.store, tombstone_days=config.store.tombstone_days)
    if url is None:
        try:
            return LocalAdmin(config.store.db_path, read_only=not write, timeout_s=config.store.sql_timeout_s,
                              write_to=write_to, max_value_bytes=config.limits.max_value_bytes,
                              tombstone_days=config.store.tombstone_days)
        except DatabaseInUse:
            url = config.server.url
    from edgeloop.ingest.auth import admin_token

    token = admin_token(token_file or config.server.admin_token_file)
    return RemoteAdmin(url, token, ca_file=ca_file or config.server.tls_cert_file)
