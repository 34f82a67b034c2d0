"""Deletion: remove a device's, a model's old or a person's rows, count them first, audit them.

A ``Deletion`` is one predicate: every row of a device (``--device``), a model's rows created
before a time (``--before``, also what retention runs daily), or the rows whose pseudonymized
field holds a value (``--where-hashed``: the value ``edgeloop-collector pseudonym`` prints on a
device, so the fleet key never leaves the fleet). Feedback on a deleted prediction goes with
it. ``apply`` counts per table (a dry run) or deletes and writes one row to the ``deletions``
audit table, in the caller's transaction on the one writer. The bytes are only gone from the
file once it is rewritten (``ingest/compaction.py``): DuckDB leaves deleted values in freed
blocks, and a CHECKPOINT alone does not clear them (measured on DuckDB 1.5).

A deletion also holds against what devices still have in their spools: a ``--where-hashed``
deletion leaves a row in ``erasures`` (the pseudonym's sha256), and a ``--device`` or
``--where-hashed`` one the deleted predictions' record ids in ``tombstones`` (for
``store.tombstone_days``). The writer's ``Guard`` leaves out, when they land later, the rows
holding an erased pseudonym and the feedback on a tombstoned prediction, counted as ``erased``.
A ``--before`` deletion leaves no tombstones: it may remove millions of rows. Instead, with a
retention set, feedback whose prediction id is a UUIDv7 (as the SDK mints them) from before
the model's retention cut-off, and whose prediction the table no longer holds, is left out too.
A ``--device`` deletion is no revocation: the device's later rows are new data.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from edgeloop.errors import BatchRejected
from edgeloop.ingest import health, tallies
from edgeloop.ingest.catalog import Catalog
from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.connection import quote
from edgeloop.schemas.model_schema import NAME_PATTERN
from edgeloop.times import EARLIEST, bounded

__all__ = ["Deletion", "Guard", "apply", "retention_deletions"]

REASONS = ("manual", "retention")
MAX_TEXT = 1024



def _refuse(message: str) -> BatchRejected:
    return BatchRejected(400, "bad_deletion", message)


@dataclass(frozen=True, slots=True)
class Deletion:
    """One predicate: exactly one of ``device``, ``before`` (with ``model``) or ``hashed``."""

    device: str | None = None
    model: str | None = None
    before: datetime | None = None
    hashed: tuple[str, str] | None = None  # (field, pseudonym)
    reason: str = "manual"

    def __post_init__(self) -> None:
        chosen = [self.device is not None, self.before is not None, self.hashed is not None]
        if sum(chosen) != 1:
            raise _refuse("give exactly one of --device NAME, --model M --before DATE, --where-hashed FIELD=VALUE")
        if self.before is not None and self.model is None:
            raise _refuse("--before needs --model (a deletion by age is per model)")
        if self.before is not None and self.before.tzinfo is None:
            raise _refuse("--before needs a time zone (UTC is assumed on the command line)")
        if self.before is not None:
            try:
                bounded(self.before)
            except ValueError as exc:
                raise _refuse(f"before: {exc}") from None
        if self.model is not None and not NAME_PATTERN.match(self.model):
            raise _refuse(f"{self.model!r} is not a model name")
        if self.device is not None and not (0 < len(self.device) <= MAX_TEXT):
            raise _refuse("a device name is 1 to 1024 characters")
        if self.hashed is not None:
            field, value = self.hashed
            if not NAME_PATTERN.match(field):
                raise _refuse(f"{field!r} is not a field name")
            # The `hash` rule stores HMAC-SHA256 as 64 lower-case hex digits: anything else (the README's elided
            # '8369e634…', a raw e-mail) matches no row and would be audited and erased for good as if it had.
            if len(value) != 64 or value.strip("0123456789abcdef"):
                raise _refuse(f"{value[:80]!r} is no pseudonym: give the 64 hex digits `edgeloop-collector pseudonym "
                              "VALUE` prints on a device")
        if self.reason not in REASONS:
            raise _refuse(f"reason must be one of {', '.join(REASONS)}")

    def describe(self) -> str:
        """The predicate as one line for the audit table and the dry run."""
        scope = f"model = {self.model}" if self.model else "every model"
        if self.device is not None:
            return f"device = {self.device!r} ({scope})"
        if self.before is not None:
            return f"created_at < {self.before.astimezone(UTC).isoformat()} ({scope})"
        assert self.hashed is not None
        # The audit keeps a digest of the pseudonym, not the pseudonym: it proves which request ran
        # (hash the value again to check) without leaving the deleted rows' link in the file.
        return f"{self.hashed[0]} = the pseudonym with sha256 {hashlib.sha256(self.hashed[1].encode()).hexdigest()} ({scope})"

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device, "model": self.model, "reason": self.reason,
            "before": self.before.astimezone(UTC).isoformat() if self.before else None,
            "where_hashed": {"field": self.hashed[0], "value": self.hashed[1]} if self.hashed else None,
        }

    @classmethod
    def from_json(cls, payload: Any) -> Deletion:
        """A deletion from the admin API's JSON body; anything malformed is a 400."""
        if not isinstance(payload, dict):
            raise _refuse("send a JSON object")
        unknown = set(payload) - {"device", "model", "before", "where_hashed", "reason", "execute", "by"}
        if unknown:
            raise _refuse(f"unknown keys: {', '.join(sorted(unknown))}")
        for key in ("device", "model", "before", "reason"):
            if payload.get(key) is not None and not isinstance(payload[key], str):
                raise _refuse(f"{key} must be a string")
        before = None
        if payload.get("before") is not None:
            try:
                before = datetime.fromisoformat(payload["before"])
                before = bounded(before) if before.tzinfo is not None else before  # a naive one is refused below
            except ValueError as exc:
                raise _refuse(f"before: {exc}") from None
        hashed = None
        where = payload.get("where_hashed")
        if where is not None:
            if not isinstance(where, dict) or not all(isinstance(where.get(k), str) for k in ("field", "value")):
                raise _refuse('where_hashed is {"field": "...", "value": "..."}')
            hashed = (where["field"], where["value"])
        return cls(device=payload.get("device"), model=payload.get("model"), before=before, hashed=hashed,
                   reason=payload.get("reason") or "manual")


def _models(con: duckdb.DuckDBPyConnection, deletion: Deletion, catalog: Catalog) -> list[str]:
    known = sorted({schema.name for schema in catalog})
    if deletion.model is None:
        return known
    if deletion.model not in known:
        raise BatchRejected(404, "unknown_model", f"no model named {deletion.model!r} is registered (known: {', '.join(known) or 'none'})")
    return [deletion.model]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?", [table]
    ).fetchall()
    return {row[0] for row in rows}


def _hashed_fields(catalog: Catalog, model: str) -> set[str]:
    return {spec.name for schema in catalog if schema.name == model for spec in schema.fields if spec.privacy.action == "hash"}


def apply(con: duckdb.DuckDBPyConnection, deletion: Deletion, catalog: Catalog, *, execute: bool, by: str,
          tombstone_days: int) -> dict[str, Any]:
    """Count (``execute=False``) or delete the matching rows, per table; a deletion writes its audit row.

    Runs in the caller's transaction. Feedback whose prediction is deleted is deleted with it. An executed
    deletion records what keeps it from being undone by later uploads (its erasure, its tombstones) and
    removes the tombstones older than ``tombstone_days``: every path that deletes (the server, the CLI on a
    stopped server's file, retention) expires them, so none needs the server to run. ``tombstones_until``
    says when this deletion's own tombstones stop holding (None when it wrote none).
    """
    deletion_id = str(uuid.uuid4()) if execute else None
    deleted_at = datetime.now(UTC)
    models = _models(con, deletion, catalog)
    if deletion.hashed is not None:
        field = deletion.hashed[0]
        models = [model for model in models if field in _hashed_fields(catalog, model)]
        if not models:
            raise _refuse(f"no model{' ' + repr(deletion.model) if deletion.model else ''} pseudonymizes a field "
                          f"named {field!r} (--where-hashed matches fields with privacy = \"hash\")")
    counts: dict[str, int] = {}
    for model in models:
        predictions, feedback = model, f"{model}_feedback"
        have = {table: _columns(con, table) for table in (predictions, feedback)}
        if not have[predictions]:
            continue  # registered, never given tables (cannot happen after registration, but be safe)
        where: dict[str, tuple[str, list[Any]] | None] = {}
        for table in (predictions, feedback):
            if deletion.device is not None:
                where[table] = ("device = ?", [deletion.device])
            elif deletion.before is not None:
                where[table] = ("created_at < ?::TIMESTAMPTZ", [deletion.before.isoformat()])
            else:
                field, value = deletion.hashed  # type: ignore[misc]
                where[table] = (f"{quote(field)} = ?", [value]) if field in have[table] else None
        con.execute("CREATE OR REPLACE TEMP TABLE __edgeloop_doomed (record_id UUID)")
        with tallies.dropped_after(con, "__edgeloop_doomed"):
            if where[predictions] is not None:
                clause, params = where[predictions]  # type: ignore[misc]
                con.execute(f"INSERT INTO temp.__edgeloop_doomed SELECT record_id FROM {quote(predictions)} WHERE {clause}", params)
            doomed = con.execute("SELECT count(*) FROM temp.__edgeloop_doomed").fetchone()[0]
            clause, params = where[feedback] or ("false", [])
            feedback_where = f"({clause}) OR prediction_id IN (SELECT record_id FROM temp.__edgeloop_doomed)"
            if have[feedback]:
                counts[feedback] = con.execute(f"SELECT count(*) FROM {quote(feedback)} WHERE {feedback_where}", params).fetchone()[0]
            counts[predictions] = doomed
            if execute:
                gone = []  # what the fleet views counted of the rows about to go
                if have[feedback] and counts[feedback]:
                    gone.append(("feedback", feedback, feedback_where, params))
                if doomed:
                    gone.append(("prediction", predictions, "record_id IN (SELECT record_id FROM temp.__edgeloop_doomed)", []))
                health.note_deleted(con, model, gone)
                if have[feedback] and counts[feedback]:
                    con.execute(f"DELETE FROM {quote(feedback)} WHERE {feedback_where}", params)
                if doomed:
                    con.execute(f"DELETE FROM {quote(predictions)} WHERE record_id IN (SELECT record_id FROM temp.__edgeloop_doomed)")
                if doomed and deletion.before is None:  # why --before keeps none: the module's docstring
                    con.execute("INSERT INTO tombstones SELECT ?, record_id, ?, ? FROM temp.__edgeloop_doomed",
                                [model, deletion_id, deleted_at])
                if doomed or counts.get(feedback):
                    tallies.rebuild(con, model)  # the dashboard's label coverage counts what is left
    total = sum(counts.values())
    result: dict[str, Any] = {
        "predicate": deletion.describe(), "reason": deletion.reason, "tables": counts, "rows": total,
        "executed": execute, "deletion_id": None, "tombstones_until": None,
    }
    if deletion.before is None and any(counts.get(model) for model in models):  # its predictions' tombstones
        result["tombstones_until"] = (deleted_at + timedelta(days=tombstone_days)).isoformat()
    if execute:
        result["deletion_id"] = deletion_id
        con.execute(
            "INSERT INTO deletions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [deletion_id, deleted_at, by[:MAX_TEXT], deletion.reason, result["predicate"], total,
             orjson.dumps(counts, option=orjson.OPT_SORT_KEYS).decode()],
        )
        if deletion.hashed is not None:  # also when nothing has landed yet: the person's rows may still be on a device
            con.execute("INSERT INTO erasures VALUES (?, ?, ?, ?, ?)",
                        [deletion_id, deletion.model, deletion.hashed[0], _digest(deletion.hashed[1]), deleted_at])
        _expire_tombstones(con, tombstone_days, now=deleted_at)
    return result


def _expire_tombstones(con: duckdb.DuckDBPyConnection, tombstone_days: int, *, now: datetime | None = None) -> int:
    """Remove the tombstones older than ``tombstone_days`` (they no longer hold anything back); how many went."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=tombstone_days)
    return con.execute("DELETE FROM tombstones WHERE deleted_at < ?", [cutoff]).fetchone()[0]


def _digest(pseudonym: str) -> str:
    return hashlib.sha256(pseudonym.encode()).hexdigest()


class Guard:
    """What executed deletions leave out of later landings: rows holding an erased pseudonym, feedback on a
    tombstoned prediction. The writer holds one and keeps it current (``current``), so a landing of a model
    with neither pays a dict lookup per table; the rows left out are counted per batch, as duplicates are.
    """

    def __init__(self, erasures: list[tuple[str | None, str, str]], tombstoned: set[str], deletions: int,
                 settings: StoreSettings) -> None:
        self._erasures = erasures  # (model or None for every model, field, pseudonym sha256)
        self._tombstoned = tombstoned  # models with tombstones (some may have expired since: the query filters)
        self._deletions = deletions  # rows of the audit when loaded: another deletion makes this guard stale
        self._settings = settings
        self._fields: dict[str, dict[str, frozenset[str]]] = {}  # model → field → erased digests, built on demand

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, settings: StoreSettings) -> Guard:
        erasures = [tuple(row) for row in con.execute("SELECT model, field, pseudonym_sha256 FROM erasures").fetchall()]
        tombstoned = {row[0] for row in con.execute("SELECT DISTINCT model FROM tombstones").fetchall()}
        deletions = con.execute("SELECT count(*) FROM deletions").fetchone()[0]
        return cls(erasures, tombstoned, deletions, settings)  # type: ignore[arg-type]

    def current(self, con: duckdb.DuckDBPyConnection) -> Guard:
        """This guard, or a new one if a deletion ran since it was loaded (one count of the small audit table)."""
        if con.execute("SELECT count(*) FROM deletions").fetchone()[0] == self._deletions:
            return self
        return Guard.load(con, self._settings)

    def _erased_fields(self, model: str) -> dict[str, frozenset[str]]:
        fields = self._fields.get(model)
        if fields is None:
            merged: dict[str, set[str]] = {}
            for scope, field, digest in self._erasures:
                if scope is None or scope == model:
                    merged.setdefault(field, set()).add(digest)
            fields = self._fields[model] = {field: frozenset(digests) for field, digests in merged.items()}
        return fields

    def left_out(self, con: duckdb.DuckDBPyConnection, model: str, kind: str, rows: pa.Table,
                 erased: dict[str, int]) -> pa.Table:
        """``rows`` (of one model and kind, with ``batch_id``) without those a deletion covers; counts them per batch."""
        fields = self._erased_fields(model)
        feedback = kind == "feedback" and "prediction_id" in rows.column_names
        tombstoned = feedback and model in self._tombstoned
        retention_days = self._settings.retention_days_by_model.get(model, self._settings.retention_days) if feedback else None
        if not fields and not tombstoned and not retention_days:
            return rows
        hit: Any = None
        for field, digests in fields.items():
            if field not in rows.column_names:
                continue
            column = rows.column(field)
            if column.type != pa.string():
                column = column.cast(pa.string())
            matched = [value for value in pc.unique(column).to_pylist() if value is not None and _digest(value) in digests]
            if matched:
                mask = pc.fill_null(pc.is_in(column, value_set=pa.array(matched, pa.string())), False)
                hit = mask if hit is None else pc.or_(hit, mask)
        if tombstoned:
            mask = self._on_tombstones(con, model, rows)
            hit = mask if hit is None else pc.or_(hit, mask)
        if retention_days:
            mask = _aged_out(con, model, rows, retention_days)
            if mask is not None:
                hit = mask if hit is None else pc.or_(hit, mask)
        if hit is None or not pc.any(hit).as_py():
            return rows
        for entry in pc.value_counts(rows.column("batch_id").filter(hit)).to_pylist():
            erased[entry["values"]] = erased.get(entry["values"], 0) + entry["counts"]
        return rows.filter(pc.invert(hit))

    def _on_tombstones(self, con: duckdb.DuckDBPyConnection, model: str, rows: pa.Table) -> Any:
        """Which feedback rows name a prediction tombstoned less than ``tombstone_days`` ago."""
        keys = pa.table({"prediction_id": rows.column("prediction_id"), "__row": pa.array(range(rows.num_rows), pa.int64())})
        since = datetime.now(UTC) - timedelta(days=self._settings.tombstone_days)
        tallies.copy_to_temp(con, "__edgeloop_fed", keys)
        with tallies.dropped_after(con, "__edgeloop_fed"):
            found = con.execute(
                "SELECT DISTINCT k.__row FROM temp.__edgeloop_fed AS k JOIN tombstones AS t ON t.record_id = k.prediction_id "
                "WHERE t.model = ? AND t.deleted_at >= ?", [model, since],
            ).to_arrow_table().column("__row")
        return pc.is_in(keys.column("__row"), value_set=found.combine_chunks())


def retention_deletions(catalog: Catalog, days: int | None, days_by_model: dict[str, int], now: datetime) -> list[Deletion]:
    """What ``store.retention_days`` asks for today: one ``--before`` deletion per model that has a retention."""
    deletions = []
    for model in sorted({schema.name for schema in catalog}):
        keep = days_by_model.get(model, days)
        if keep and keep <= (now - EARLIEST).days:  # a cutoff before year 1: nothing is that old, and timedelta overflows
            deletions.append(Deletion(model=model, before=now - timedelta(days=keep), reason="retention"))
    return deletions


def _aged_out(con: duckdb.DuckDBPyConnection, model: str, rows: pa.Table, days: int) -> Any:
    """Which feedback rows name a prediction past the model's retention that ``model`` no longer holds, or None.

    A UUIDv7 id carries its prediction's time (ids of other versions are let through); a prediction still
    held (retention has not run yet) keeps its feedback, and both go at the next run.
    """
    cutoff_ms = int((datetime.now(UTC) - timedelta(days=days)).timestamp() * 1000)
    if cutoff_ms <= 0:
        return None
    ids = rows.column("prediction_id")
    raw = pa.chunked_array([getattr(chunk, "storage", chunk) for chunk in ids.chunks]).cast(pa.binary())
    version = pc.binary_slice(raw, 6, 7)  # the high nibble of byte 6 is the UUID's version
    v7 = pc.and_(pc.greater_equal(version, pa.scalar(b"\x70", pa.binary())), pc.less_equal(version, pa.scalar(b"\x7f", pa.binary())))
    old = pc.less(pc.binary_slice(raw, 0, 6), pa.scalar(cutoff_ms.to_bytes(6, "big"), pa.binary()))
    candidates = pc.fill_null(pc.and_(v7, old), False)
    if not pc.any(candidates).as_py():
        return None
    keys = pa.table({"prediction_id": ids, "__row": pa.array(range(rows.num_rows), pa.int64())})
    tallies.copy_to_temp(con, "__edgeloop_aged", keys.filter(candidates))
    with tallies.dropped_after(con, "__edgeloop_aged"):
        held = con.execute(
            f"SELECT DISTINCT k.__row FROM temp.__edgeloop_aged AS k JOIN {quote(model)} AS p ON p.record_id = k.prediction_id"
        ).to_arrow_table().column("__row")
    return pc.and_(candidates, pc.invert(pc.is_in(keys.column("__row"), value_set=held.combine_chunks())))
