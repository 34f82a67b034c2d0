"""The device-side record pipeline: validate → sample → privacy → one Arrow batch per model.

The intake server hands ``Pipeline.process`` the records of one request (already decoded
from JSON) and gets back the kept records as one ``RecordBatch`` per model, typed exactly as
``ModelSchema.arrow_schema``, plus one result per input record for the app. Columns are
built with one ``pa.array`` call each, never per record: this runs on every record the
device sees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import uuid_utils

from edgeloop.collector.config import PrivacySettings, SamplingSettings
from edgeloop.collector.privacy import Privacy, load_detector, redactor_for
from edgeloop.collector.redact import Redactor
from edgeloop.collector.sampling import Sampler
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.schemas.records import RecordValidator
from edgeloop.schemas.registry import SchemaRegistry

__all__ = ["Pipeline", "ProcessedRecords"]

_EMPTY: dict[str, Any] = {}
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_UUID = pa.uuid()
_BYTES16 = pa.binary(16)


@dataclass
class ProcessedRecords:
    """What became of one request's records."""

    batches: dict[str, pa.RecordBatch]
    """Model name -> its kept records, typed as the schema's ``arrow_schema`` (only models with any)."""
    results: list[dict[str, Any]]
    """One per input record, in input order: status ``accepted``, ``sampled_out`` or ``invalid``."""
    drops: Counter[str] = field(default_factory=Counter)
    """Records not kept, by reason: invalid, unknown_model, sampled_out, rate_capped."""

    @property
    def accepted(self) -> int:
        return sum(batch.num_rows for batch in self.batches.values())

    @property
    def invalid(self) -> int:
        return sum(1 for result in self.results if result["status"] == "invalid")


class Pipeline:
    """Validates, samples and anonymizes records; owns the sampler's per-hour state."""

    def __init__(
        self,
        registry: SchemaRegistry,
        sampling: SamplingSettings,
        fleet_key: bytes,
        privacy: PrivacySettings | None = None,
    ) -> None:
        self.registry = registry
        self.sampler = Sampler(sampling)
        self.privacy_settings = privacy or PrivacySettings()
        detector = load_detector(self.privacy_settings.detector) if self.privacy_settings.detector else None
        self._redactors: dict[str, Redactor] = {
            schema.name: redactor_for(schema, self.privacy_settings, detector) for schema in registry
        }
        self.privacy = Privacy(fleet_key, redactor=redactor_for(None, self.privacy_settings, detector))
        self._validators: dict[str, RecordValidator] = {}

    def reload(self, registry: SchemaRegistry, sampling: SamplingSettings) -> None:
        """Take new schemas and sampling rules; the per-hour counts of max_per_hour carry over."""
        self.registry = registry
        self._validators = {}
        self.sampler.reload(sampling)

    def _validator(self, schema: ModelSchema) -> RecordValidator:
        validator = self._validators.get(schema.name)
        if validator is None:
            validator = self._validators[schema.name] = RecordValidator(schema)
        return validator

    def process(self, records: list[Any], *, now: datetime | None = None) -> ProcessedRecords:
        """Validate, sample and anonymize ``records``; ``now`` stamps records without created_at."""
        now = datetime.now(UTC) if now is None else now.astimezone(UTC)
        results: list[dict[str, Any]] = [_EMPTY] * len(records)
        drops: Counter[str] = Counter()
        groups: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                results[index] = _invalid(index, "record", "must be a JSON object")
                drops["invalid"] += 1
                continue
            model = record.get("model")
            if model.__class__ is str and model in self.registry:
                members = groups.get(model)
                if members is None:
                    groups[model] = [index]
                else:
                    members.append(index)
            elif model is None:
                results[index] = _invalid(index, "model", "required field is missing")
                drops["invalid"] += 1
            elif not isinstance(model, str):
                results[index] = _invalid(index, "model", "must be a string")
                drops["invalid"] += 1
            else:
                results[index] = _invalid(index, "model", f"unknown model {model!r}")
                drops["unknown_model"] += 1
        batches: dict[str, pa.RecordBatch] = {}
        for model, members in groups.items():
            batch = self._process_model(self.registry[model], records, members, now, results, drops)
            if batch is not None:
                batches[model] = batch
        return ProcessedRecords(batches=batches, results=results, drops=drops)

    def _process_model(
        self,
        schema: ModelSchema,
        records: list[Any],
        members: list[int],
        now: datetime,
        results: list[dict[str, Any]],
        drops: Counter[str],
    ) -> pa.RecordBatch | None:
        good_at, good, issues = self._validator(schema).validate([records[i] for i in members])
        for issue in issues:
            index = members[issue.index]
            results[index] = _invalid(index, issue.field, issue.message)
        if issues:
            drops["invalid"] += len(issues)
        if not good:
            return None

        confidence = schema.confidence_field
        kinds = [record["kind"] for record in good]
        if confidence is None:
            confidences: list[float | None] = [None] * len(good)
        else:
            confidences = [record.get("outputs", _EMPTY).get(confidence) for record in good]
        decisions = self.sampler.decide(schema.name, kinds, confidences, now)

        kept: list[dict[str, Any]] = []
        weights: list[float] = []
        ids: list[bytes] = []
        for position, decision in enumerate(decisions):
            index = members[good_at[position]]
            record = good[position]
            given = record.get("record_id")
            if given is None:
                minted = uuid_utils.uuid7()
                id_bytes, id_text = minted.bytes, str(minted)
            else:
                id_bytes, id_text = given.bytes, _uuid_text(records[index].get("record_id"), given)
            if decision.__class__ is float:
                results[index] = {"index": index, "status": "accepted", "record_id": id_text}
                kept.append(record)
                weights.append(decision)  # type: ignore[arg-type]
                ids.append(id_bytes)
            else:
                results[index] = {"index": index, "status": "sampled_out", "record_id": id_text}
                drops[decision] += 1  # type: ignore[index]
        if not kept:
            return None
        return self._batch(schema, kept, weights, ids, now)

    def _batch(
        self, schema: ModelSchema, kept: list[dict[str, Any]], weights: list[float], ids: list[bytes], now: datetime
    ) -> pa.RecordBatch:
        rows = len(kept)
        redactor = self._redactors.get(schema.name) or self.privacy.redactor
        is_feedback = [record["kind"] == "feedback" for record in kept]
        any_feedback = any(is_feedback)
        created = [record.get("created_at") or now for record in kept]
        columns: list[pa.Array] = [
            pa.ExtensionArray.from_storage(_UUID, pa.array(ids, type=_BYTES16)),
            pa.array([record["kind"] for record in kept], type=pa.string()),
            pa.repeat(pa.scalar(schema.name, type=pa.string()), rows),
            pa.array([record["model_version"] for record in kept], type=pa.string()),
            pa.array(created, type=_TIMESTAMP),
            pa.array(weights, type=pa.float64()),
        ]
        if any_feedback:
            prediction_ids = [r["prediction_id"].bytes if f else None for r, f in zip(kept, is_feedback, strict=True)]
            sources = [r.get("source") if f else None for r, f in zip(kept, is_feedback, strict=True)]
            columns.append(pa.ExtensionArray.from_storage(_UUID, pa.array(prediction_ids, type=_BYTES16)))
            columns.append(self.privacy.text_column(schema.source_privacy, sources, redactor))
        else:
            columns.append(pa.nulls(rows, type=_UUID))
            columns.append(pa.nulls(rows, type=pa.string()))

        sections = {
            section: [record.get(section, _EMPTY) for record in kept] for section in ("inputs", "outputs", "feedback")
        }
        column = self.privacy.column
        for spec in schema.stored_fields:
            dicts = sections[spec.section]
            name = spec.name
            columns.append(column(spec, [values.get(name) for values in dicts], redactor))
        return pa.RecordBatch.from_arrays(columns, schema=schema.arrow_schema)


def _invalid(index: int, field: str, message: str) -> dict[str, Any]:
    return {"index": index, "status": "invalid", "error": {"field": field, "message": message}}


def _uuid_text(raw: Any, parsed: Any) -> str:
    """The canonical text of a record id; the app's own text when it already is canonical."""
    if raw.__class__ is str and len(raw) == 36 and raw[8] == raw[13] == raw[18] == raw[23] == "-" and raw.lower() == raw:
        return raw
    return str(parsed)
