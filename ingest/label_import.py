"""Label import: feedback rows from a labelling tool's file, validated and landed like device feedback.

``read_labels`` turns a file (Label Studio's JSON export, JSON lines or CSV) into ``LabelRow``s
and per-row errors; ``land_labels`` validates them against the model's feedback fields on the
writer, checks each names a landed prediction, and inserts them into ``<model>_feedback``
with ``source`` = the tool and ``labeled_by`` = the annotator. Each row's ``record_id`` is a
UUIDv5 of (prediction, source, annotator, label values, annotation time), so importing the same
file twice adds nothing: the second time every row is a duplicate, dropped as batches drop
record ids that have already landed. ``<model>_training`` then picks the latest label per
prediction, device or imported alike.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from edgeloop.errors import BatchRejected, EdgeloopError
from edgeloop.ingest import tallies
from edgeloop.ingest.aggregate import on_lake
from edgeloop.ingest.choices import IMPORT_FORMATS
from edgeloop.ingest.connection import quote
from edgeloop.ingest.store import add_feedback_column
from edgeloop.schemas.model_schema import FieldSpec, ModelSchema
from edgeloop.times import from_iso, utc_time

__all__ = ["IMPORT_FORMATS", "LABEL_NAMESPACE", "MAX_ROWS", "LabelRow", "land_labels", "read_labels"]

MAX_ROWS = 50_000  # per call: the CLI sends a big file in parts of this many rows
MAX_FILE_BYTES = 1024 * 1024 * 1024
LABEL_NAMESPACE = uuid.UUID("5b0c3c4e-8f53-4d36-9a3f-2f1d7e0c4a11")
RESERVED_KEYS = frozenset({"record_id", "prediction_id", "labeled_by", "annotator", "created_at"})
_MAX_TEXT = 1024
# Label Studio result types this importer maps onto a feedback field: where the value sits.
_LS_VALUES = {"choices": "choices", "labels": "labels", "textarea": "text", "number": "number", "rating": "rating"}


@dataclass(slots=True)
class LabelRow:
    """One label for one prediction, as read from the file (values not yet checked)."""

    row: int
    record_id: Any
    fields: dict[str, Any] = field(default_factory=dict)
    labeled_by: Any = None
    created_at: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "record_id": self.record_id, "fields": self.fields,
                "labeled_by": self.labeled_by, "created_at": self.created_at}

    @classmethod
    def from_json(cls, value: Any) -> LabelRow:
        if not isinstance(value, dict) or not isinstance(value.get("row"), int) or not isinstance(value.get("fields"), dict):
            raise BatchRejected(400, "bad_json", 'each row is {"row": n, "record_id": "...", "fields": {...}, "labeled_by", "created_at"}')
        return cls(value["row"], value.get("record_id"), value["fields"], value.get("labeled_by"), value.get("created_at"))


def _error(row: int, record_id: Any, message: str) -> dict[str, Any]:
    return {"row": row, "record_id": record_id if isinstance(record_id, str) else None, "error": message}


def read_labels(path: Path, fmt: str, schema: ModelSchema) -> tuple[list[LabelRow], list[dict[str, Any]]]:
    """The file's labels and the rows that could not be read (with their row number); nothing is checked yet.

    A row with no feedback value at all (a task nobody labelled yet) is left out, not an error.
    """
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise EdgeloopError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit of one import")
        data = path.read_bytes()
    except OSError as exc:
        raise EdgeloopError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    names = {spec.name for spec in schema.section("feedback")}
    if fmt == "label-studio":
        return _read_label_studio(path, data, names)
    rows: list[LabelRow] = []
    errors: list[dict[str, Any]] = []
    if fmt == "jsonl":
        records: list[tuple[int, Any]] = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                errors.append(_error(number, None, f"not JSON: {exc}"))
    elif fmt == "csv":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise EdgeloopError(f"{path}: not UTF-8: {exc}") from exc
        records = _read_csv(path, text)
    else:
        raise EdgeloopError(f"--format must be one of {', '.join(IMPORT_FORMATS)}")
    for number, record in records:
        if not isinstance(record, dict):
            errors.append(_error(number, None, "not a JSON object"))
            continue
        values = {key: value for key, value in record.items() if key in names and value is not None}
        if not values:
            continue
        rows.append(LabelRow(number, record.get("record_id", record.get("prediction_id")), values,
                             record.get("labeled_by", record.get("annotator")), record.get("created_at")))
    return rows, errors


def _read_csv(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """Each data row with its number (row 1 is the header, so it is the row's line in a spreadsheet), empty cells left out.

    Strict: a quote never closed would swallow every later row into one label. A column named
    twice is refused, since which of its values is the label is a guess.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
        twice = sorted(name for name, count in Counter(header).items() if count > 1)  # linear: a header may be huge
        if twice:
            raise EdgeloopError(f"{path}:1: column {', '.join(twice)} appears twice in the header")
        return [(index, {k: v for k, v in record.items() if k is not None and v not in ("", None)})
                for index, record in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise EdgeloopError(f"{path}:{reader.line_num}: not CSV: {exc}") from exc


def _annotator(value: Any) -> Any:
    """Label Studio's ``completed_by``: a user id, or (newer exports) an object with the e-mail."""
    if isinstance(value, dict):
        return value.get("email") or value.get("username") or value.get("id")
    return value


def _read_label_studio(path: Path, data: bytes, names: set[str]) -> tuple[list[LabelRow], list[dict[str, Any]]]:
    try:
        tasks = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EdgeloopError(f"{path}: not a Label Studio JSON export: {exc}") from exc
    if not isinstance(tasks, list):
        raise EdgeloopError(f"{path}: a Label Studio JSON export is a list of tasks")
    rows: list[LabelRow] = []
    errors: list[dict[str, Any]] = []
    for number, task in enumerate(tasks, start=1):
        data_ = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data_, dict):
            errors.append(_error(number, None, "a task needs a \"data\" object"))
            continue
        record_id = data_.get("record_id")
        annotations = task.get("annotations", task.get("completions")) or []
        if not isinstance(annotations, list):
            errors.append(_error(number, record_id, "\"annotations\" is not a list"))
            continue
        for annotation in annotations:
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue  # a skipped task is no label
            values: dict[str, Any] = {}
            problems = []
            for result in annotation.get("result") or []:
                if not isinstance(result, dict):
                    problems.append("a result that is not an object")
                    continue
                kind, name, value = result.get("type"), result.get("from_name"), result.get("value")
                if kind not in _LS_VALUES:
                    problems.append(f"result type {kind!r} is not supported (choices, labels, textarea, number, rating are)")
                    continue
                if name not in names:
                    problems.append(f"from_name {name!r} is not a feedback field (fields: {', '.join(sorted(names))})")
                    continue
                got = value.get(_LS_VALUES[kind]) if isinstance(value, dict) else None
                if isinstance(got, list):
                    if len(got) != 1:
                        problems.append(f"{name}: {len(got)} values given; a feedback field holds one")
                        continue
                    got = got[0]
                values[name] = got
            if problems:
                errors.append(_error(number, record_id, "; ".join(problems)))
            elif values:
                rows.append(LabelRow(number, record_id, values, _annotator(annotation.get("completed_by")),
                                     annotation.get("updated_at") or annotation.get("created_at")))
    return rows, errors


def _coerce(spec: FieldSpec, value: Any, max_value_bytes: int) -> Any:
    """The value as the column stores it, or ValueError saying why not."""
    if spec.privacy.action != "keep":
        raise ValueError(f"{spec.name} has privacy rule {spec.privacy}, applied on devices only: it cannot be imported")
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            value = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
            if value is None:
                raise ValueError(f"{spec.name}: expected text")
        cap = spec.max_bytes or max_value_bytes
        if len(value.encode()) > cap:
            raise ValueError(f"{spec.name}: {len(value.encode())} bytes, over its cap of {cap}")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"{spec.name}: expected true or false")
        return value
    if kind in ("int32", "int64"):
        try:
            number = int(value) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{spec.name}: {value!r} is not an integer") from None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"{spec.name}: {value!r} is not an integer")
        bits = 31 if kind == "int32" else 63
        if not -(2**bits) <= number < 2**bits:
            raise ValueError(f"{spec.name}: {number} is out of range for {kind}")
        return number
    if kind in ("float32", "float64"):
        try:
            number = float(value) if isinstance(value, str | int) and not isinstance(value, bool) else value
        except ValueError:
            raise ValueError(f"{spec.name}: {value!r} is not a number") from None
        if not isinstance(number, float) or not math.isfinite(number):
            raise ValueError(f"{spec.name}: {value!r} is not a finite number")
        return number
    if kind == "timestamp":
        return _timestamp(value, spec.name)
    if kind == "vector":
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError(f"{spec.name}: expected a JSON list of {spec.dim} numbers") from None
        if not isinstance(value, list) or len(value) != spec.dim or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value
        ):
            raise ValueError(f"{spec.name}: expected a list of {spec.dim} finite numbers")
        return [float(x) for x in value]
    raise ValueError(f"{spec.name}: {kind} fields cannot be imported from a file")


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected an ISO 8601 time")
    try:
        instant = utc_time(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    # The offset as written is kept: it is part of each label's record id, so a file imported again adds nothing.
    parsed = from_iso(value)
    return parsed if parsed.tzinfo else instant


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} must be text")
    text = str(value)
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{what} is over {_MAX_TEXT} characters")
    return text


def land_labels(
    con: duckdb.DuckDBPyConnection, schema: ModelSchema, rows: list[LabelRow], *, source: str, tag: str,
    max_value_bytes: int,
) -> dict[str, Any]:
    """Check and insert ``rows`` into ``<model>_feedback`` in the caller's transaction (the writer).

    Returns ``{"imported", "duplicates", "errors"}``: a row that is not valid, or names no landed
    prediction of the model, is an error with its row number; the valid rows land regardless.
    """
    if len(rows) > MAX_ROWS:
        raise BatchRejected(413, "too_many_rows", f"at most {MAX_ROWS} labels per call (the CLI sends parts)")
    try:
        source_ = _text(source, "source") if source else None
    except ValueError as exc:  # the sender's: a 400 (it was a 500) and one line in the CLI
        raise BatchRejected(400, "bad_json", str(exc)) from None
    if not source_:
        raise BatchRejected(400, "bad_json", "source must be a non-empty string")
    feedback = {spec.name: spec for spec in schema.section("feedback")}
    required = {name for name, spec in feedback.items() if spec.required and spec.privacy.action == "keep"}
    table = f"{schema.name}_feedback"
    errors: list[dict[str, Any]] = []
    checked: list[tuple[LabelRow, uuid.UUID, dict[str, Any], str | None, datetime | None]] = []
    for row in rows:
        try:
            try:
                prediction = uuid.UUID(row.record_id) if isinstance(row.record_id, str) else None
            except ValueError:
                prediction = None
            if prediction is None:
                raise ValueError(f"record_id {row.record_id!r} is not a record id (a UUID)")
            unknown = sorted(set(row.fields) - set(feedback))
            if unknown:
                raise ValueError(f"not feedback fields of {schema.name}: {', '.join(unknown)}")
            values = {name: _coerce(feedback[name], value, max_value_bytes) for name, value in row.fields.items()}
            missing = sorted(required - set(values))
            if missing:
                raise ValueError(f"required feedback fields missing: {', '.join(missing)}")
            labeled_by = _text(row.labeled_by, "labeled_by")
            created_at = _timestamp(row.created_at, "created_at") if row.created_at is not None else None
        except ValueError as exc:
            errors.append(_error(row.row, row.record_id, str(exc)))
            continue
        checked.append((row, prediction, values, labeled_by, created_at))
    known: dict[uuid.UUID, tuple[str, str]] = {}
    if checked:
        found = con.execute(
            f"SELECT record_id, model_version, device FROM {quote(schema.name)} WHERE record_id IN (SELECT unnest(?::UUID[]))",
            [sorted({str(prediction) for _, prediction, *_ in checked})],
        ).fetchall()
        known = {record_id: (version, device) for record_id, version, device in found}
    now = datetime.now(UTC)
    tag = f"{tag}:{uuid.uuid4().hex[:12]}"  # one per call: the tallies tell this call's feedback from earlier parts
    out: list[dict[str, Any]] = []
    seen: set[uuid.UUID] = set()
    duplicates = 0
    for row, prediction, values, labeled_by, created_at in checked:
        if prediction not in known:
            errors.append(_error(row.row, row.record_id, f"no prediction of {schema.name} has record_id {prediction}"))
            continue
        identity = orjson.dumps(
            [str(prediction), source_, labeled_by, values, created_at.isoformat() if created_at else None],
            option=orjson.OPT_SORT_KEYS, default=str,
        )
        feedback_id = uuid.uuid5(LABEL_NAMESPACE, identity.decode())
        if feedback_id in seen:
            duplicates += 1
            continue
        seen.add(feedback_id)
        version, device = known[prediction]
        out.append({
            "record_id": feedback_id, "model_version": version, "created_at": created_at or now, "sample_weight": 1.0,
            "prediction_id": prediction, "source": source_, "labeled_by": labeled_by, **values,
            "device": device, "batch_id": tag, "received_at": now, "clock_offset_s": None,
        })
    imported = 0
    if out:
        add_feedback_column(con, schema.name, "labeled_by", "VARCHAR")
        landed = {row[0] for row in con.execute(
            f"SELECT record_id FROM {quote(table)} WHERE record_id IN (SELECT unnest(?::UUID[]))",
            [[str(row["record_id"]) for row in out]],
        ).fetchall()}
        fresh = [row for row in out if row["record_id"] not in landed]
        duplicates += len(out) - len(fresh)
        if fresh:
            # Rows may give different feedback fields: every column, null where a row has none.
            columns = list(dict.fromkeys(name for row in fresh for name in row))
            arrow = pa.table({
                name: [str(row[name]) if name in ("record_id", "prediction_id") else row.get(name) for row in fresh]
                for name in columns
            })
            con.register("__edgeloop_labels", arrow)
            try:
                select = ", ".join(
                    f"{quote(name)}::UUID AS {quote(name)}" if name in ("record_id", "prediction_id") else quote(name)
                    for name in columns
                )
                con.execute(f"INSERT INTO {quote(table)} BY NAME SELECT {select} FROM __edgeloop_labels")
            finally:
                con.unregister("__edgeloop_labels")
            # The dashboard's label coverage, as a landing of device feedback keeps it.
            columns = {"prediction_id": pa.array([row["prediction_id"].bytes for row in fresh], pa.uuid())}
            truth = tallies.declared_truth(con, schema.name)
            if truth is not None:  # only whether it has a value counts: a row without one labels nothing
                columns[truth] = pa.array([True if row.get(truth) is not None else None for row in fresh], pa.bool_())
            ids = pa.table(columns)
            tallies.note_landed(con, schema.name, [], [ids], [tag], truth=tallies.labelled_by(con, schema.name),
                                lake=on_lake(con))
            imported = len(fresh)
    errors.sort(key=lambda error: error["row"])
    return {"imported": imported, "duplicates": duplicates, "errors": errors}
