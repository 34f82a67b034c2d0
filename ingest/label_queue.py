"""The label queue: a model's predictions most worth labelling, as tasks for a labelling tool.

``queue_query`` selects predictions with no label yet (no feedback carrying the truth field;
optionally kept by one sampling strategy, created since a time), oldest first or least confident
first; ``write_tasks`` writes
them as a Label Studio task list, JSON lines or CSV. Binary fields (an image model's thumbnail)
are written as files in ``<task file stem>_files/`` next to the task file and referenced by
their path relative to the task file's folder; in Label Studio tasks as
``/data/local-files/?d=<path>`` (start Label Studio with ``LOCAL_FILES_SERVING_ENABLED=true``
and ``LOCAL_FILES_DOCUMENT_ROOT`` = that folder). Each task carries the prediction's
``record_id``, which ``feedback import`` reads back.
"""

from __future__ import annotations

import csv
import io
import shutil
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from edgeloop.durable import write_durably
from edgeloop.errors import EdgeloopError, QueryFailed
from edgeloop.ingest.choices import ORDERS, QUEUE_FORMATS
from edgeloop.ingest.connection import quote
from edgeloop.schemas.model_schema import ModelSchema

__all__ = ["ORDERS", "QUEUE_FORMATS", "label_config", "queue_query", "write_tasks"]

STRATEGY_COLUMN = "sampled_by"
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"), (b"RIFF", ".webp"))


def queue_query(
    schema: ModelSchema, columns: dict[str, str], *, strategy: str | None = None, since: datetime | None = None,
    until: datetime | None = None, order: str = "oldest", limit: int = 100,
) -> tuple[str, list[Any]]:
    """SQL for unlabelled predictions of ``schema``'s model; ``columns`` are its table's (name → type)."""
    table = quote(schema.name)
    # Labelled means a feedback carrying the truth: a comment or a cost alone leaves the prediction to label.
    truth = schema.field(schema.truth_field) if schema.truth_field else None
    carries = f" AND f.{quote(truth.name)} IS NOT NULL" if truth is not None and truth.section == "feedback" else ""
    where = [f"NOT EXISTS (SELECT 1 FROM {quote(schema.name + '_feedback')} AS f "
             f"WHERE f.prediction_id = p.record_id{carries})"]
    params: list[Any] = []
    if strategy is not None:
        kind = columns.get(STRATEGY_COLUMN)
        if kind is None:
            raise QueryFailed(
                f"--strategy needs the {STRATEGY_COLUMN!r} column, which model {schema.name!r} does not have "
                "(it arrives with sampling strategies on the devices)"
            )
        # A list of strategy names, or their comma-separated text.
        names = f"p.{STRATEGY_COLUMN}" if kind.endswith("[]") else f"string_split(p.{STRATEGY_COLUMN}, ',')"
        where.append(f"list_contains({names}, ?)")
        params.append(strategy)
    if since is not None:
        where.append("p.created_at >= ?::TIMESTAMPTZ")
        params.append(since.isoformat())
    if until is not None:
        where.append("p.created_at < ?::TIMESTAMPTZ")
        params.append(until.isoformat())
    if order == "uncertainty":
        if schema.confidence_field is None or schema.confidence_field not in columns:
            raise QueryFailed(f"--order uncertainty needs the model's confidence_field; {schema.name!r} declares none")
        ordering = f"p.{quote(schema.confidence_field)} ASC NULLS LAST, p.created_at, p.record_id"
    elif order == "oldest":
        ordering = "p.created_at, p.record_id"
    else:
        raise QueryFailed(f"--order must be one of {', '.join(ORDERS)}")
    if not isinstance(limit, int) or limit < 1:
        raise QueryFailed("--limit must be a positive number")
    sql = f"SELECT p.* FROM {table} AS p WHERE {' AND '.join(where)} ORDER BY {ordering} LIMIT {int(limit)}"
    return sql, params


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


# What a spreadsheet takes for the start of a formula (OWASP's list), as a cell's first character.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _sheet_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: device text starting like a formula gets a quote mark before it."""
    if isinstance(value, list):
        value = orjson.dumps(value).decode()
    value = _plain(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _extension(data: bytes) -> str:
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".bin")


def label_config(schema: ModelSchema, choices: Sequence[str]) -> str:
    """A Label Studio labelling config for the queue: the image (or the record) and one choice per class."""
    image = next((spec.name for spec in schema.section("inputs") if spec.type == "binary" and spec.stored), None)
    truth = schema.truth_field or next((spec.name for spec in schema.section("feedback")), "label")
    target = image or "record_id"
    shown = f'  <Image name="{image}" value="${image}"/>' if image else '  <Text name="record_id" value="$record_id"/>'
    options = "\n".join(f'    <Choice value="{_xml(choice)}"/>' for choice in choices)
    return f'<View>\n{shown}\n  <Choices name="{truth}" toName="{target}" choice="single" showInline="true">\n{options}\n  </Choices>\n</View>\n'


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def write_tasks(table: pa.Table, schema: ModelSchema, fmt: str, out: Path) -> dict[str, Any]:
    """Write the queue to ``out`` (whole or not at all) and its binary fields to ``<stem>_files/``; what was written."""
    if fmt not in QUEUE_FORMATS:
        raise EdgeloopError(f"--format must be one of {', '.join(QUEUE_FORMATS)}")
    out = Path(out)
    binary = [spec.name for spec in schema.fields if spec.type == "binary" and spec.stored and spec.section != "feedback"
              and spec.name in table.column_names]
    folder = out.parent / f"{out.stem}_files"
    rows = table.to_pylist()
    files = 0
    if binary:
        staging = out.parent / f".{folder.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    for row in rows:
        for name in binary:
            data = row[name]
            if data is None:
                continue
            relative = f"{folder.name}/{row['record_id']}.{name}{_extension(data)}"
            write_durably(staging / Path(relative).name, data)
            row[name] = relative
            files += 1
    feedback = [spec.name for spec in schema.section("feedback")]
    if fmt == "label-studio":
        payload = [_task(row, schema, binary) for row in rows]
        data = orjson.dumps(payload, option=orjson.OPT_INDENT_2, default=_plain)
    elif fmt == "jsonl":
        data = b"".join(orjson.dumps({**{k: _plain(v) for k, v in row.items()}, **{name: None for name in feedback}},
                                     default=_plain) + b"\n" for row in rows)
    else:
        buffer = io.StringIO(newline="")
        names = [*table.column_names, *[name for name in feedback if name not in table.column_names]]
        writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _sheet_cell(v) for k, v in row.items()})
        data = buffer.getvalue().encode()
    if binary:
        # The files first, so a task file never names a file that is not there.
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    write_durably(out, data)
    config = None
    if fmt == "label-studio":
        prediction = schema.prediction_field
        classes = sorted({str(row[prediction]) for row in rows if prediction and row.get(prediction) is not None})
        config = out.with_name(f"{out.stem}.label_config.xml")
        write_durably(config, label_config(schema, classes).encode())
    return {"tasks": len(rows), "files": files, "folder": str(folder) if binary else None,
            "label_config": str(config) if config else None}


def _task(row: dict[str, Any], schema: ModelSchema, binary: list[str]) -> dict[str, Any]:
    """One Label Studio task: the record's fields as data, the model's answer as a pre-annotation."""
    data = {key: (f"/data/local-files/?d={value}" if key in binary and value is not None else _plain(value))
            for key, value in row.items()}
    task: dict[str, Any] = {"data": data}
    prediction, truth = schema.prediction_field, schema.truth_field
    if prediction and truth and row.get(prediction) is not None:
        target = binary[0] if binary else "record_id"
        score = row.get(schema.confidence_field) if schema.confidence_field else None
        task["predictions"] = [{
            "model_version": str(row.get("model_version")),
            **({"score": float(score)} if isinstance(score, int | float) else {}),
            "result": [{"from_name": truth, "to_name": target, "type": "choices",
                        "value": {"choices": [str(row[prediction])]}}],
        }]
    return task
