"""The device-side record pipeline: validate → sample → privacy → one Arrow batch per model.

The intake server hands ``Pipeline.process_lines`` an NDJSON slice's lines, parsed and
validated in one pass (``LineValidator``), or ``Pipeline.process`` records already decoded
from JSON (a JSON body, or a slice with a line that is not a valid record), and gets back the kept records as one ``RecordBatch`` per model, typed exactly as
``ModelSchema.arrow_schema``, plus one result per input record for the app. Columns are
built with one ``pa.array`` call each, never per record: this runs on every record the
device sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import uuid_utils

from edgeloop.collector.config import PolicySettings, PrivacySettings, SamplingSettings
from edgeloop.collector.policies import Policies
from edgeloop.collector.privacy import Privacy, load_detector, redactor_for
from edgeloop.collector.recent_ids import RecentIds
from edgeloop.collector.redact import Redactor
from edgeloop.collector.sampling import Charge, Sampler
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.schemas.records import UNSET_ID_MESSAGE, UNSET_IDS, LineValidator, RecordValidator
from edgeloop.schemas.registry import SchemaRegistry

__all__ = ["Pipeline", "ProcessedRecords", "RequestRecords"]

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
    """One per input record, in input order: status ``accepted`` (with ``duplicate: true`` for an
    id accepted before), ``sampled_out`` or ``invalid``; an empty dict for a status not listed."""
    drops: Counter[str] = field(default_factory=Counter)
    """Records not kept, by reason: invalid, unknown_model, sampled_out, rate_capped."""
    keys: dict[str, list[bytes]] = field(default_factory=dict)
    """Model name -> the RecentIds keys of its kept records, to remember once they are journaled."""
    duplicates: Counter[str] = field(default_factory=Counter)
    """Records whose id was accepted before (or earlier in the request), by model: not stored again."""
    charges: list[Charge] = field(default_factory=list)
    """What the kept records were charged against the sampling quotas, to ``Sampler.refund`` if they are refused."""

    @property
    def accepted(self) -> int:
        """Records new to the agent, in ``batches``."""
        return sum(batch.num_rows for batch in self.batches.values())

    @property
    def invalid(self) -> int:
        return sum(1 for result in self.results if result.get("status") == "invalid")


@dataclass
class RequestRecords:
    """What became of one request's records, gathered slice by slice so only one slice is ever Python objects."""

    count: int = 0
    """Records in the request."""
    listed: frozenset[str] = frozenset({"accepted", "sampled_out", "invalid"})
    """The statuses whose per-record results the answer lists."""
    results: list[dict[str, Any]] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    seen: set[bytes] = field(default_factory=set)
    """RecentIds keys of the request's records so far: an id twice in one request is stored once."""
    keys: dict[str, list[bytes]] = field(default_factory=dict)
    charges: list[Charge] = field(default_factory=list)
    """What the request's kept records were charged against the sampling quotas."""
    _parts: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)

    def absorb(self, part: ProcessedRecords, positions: Sequence[int]) -> None:
        """Add a slice's outcome; ``positions`` maps the slice's record indices to the request's."""
        for model, batch in part.batches.items():
            self._parts.setdefault(model, []).append(batch)
            self.keys.setdefault(model, []).extend(part.keys.get(model, ()))
        listed = self.listed
        for result in part.results:
            if not result:
                continue  # a status the answer does not list
            status = result["status"]
            if status == "invalid":
                self.invalid += 1
            if status in listed:
                self.results.append({**result, "index": positions[result["index"]]})
        self.drops.update(part.drops)
        self.duplicates.update(part.duplicates)
        self.charges += part.charges

    def refuse(self, index: int, field: str, message: str) -> None:
        """Count record ``index`` invalid before it reached the pipeline (an NDJSON line that is not JSON)."""
        self.invalid += 1
        self.drops["invalid"] += 1
        if "invalid" in self.listed:
            self.results.append(_invalid(index, field, message))

    def batches(self) -> dict[str, pa.RecordBatch]:
        """Model name -> the request's kept records as one batch."""
        return {model: parts[0] if len(parts) == 1 else pa.concat_batches(parts) for model, parts in self._parts.items()}

    @property
    def accepted(self) -> int:
        return sum(batch.num_rows for parts in self._parts.values() for batch in parts)


class Pipeline:
    """Validates, samples and anonymizes records; owns the sampler's per-hour state."""

    def __init__(
        self,
        registry: SchemaRegistry,
        sampling: SamplingSettings,
        fleet_key: bytes,
        privacy: PrivacySettings | None = None,
        *,
        recent: RecentIds | None = None,
        policies: Policies | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """``state_dir``, if given, keeps the quota windows' counts across a restart (see ``Sampler.save``)."""
        self.registry = registry
        self.sampler = Sampler(sampling.seed, state_dir=state_dir)
        self.policies = policies if policies is not None else Policies(PolicySettings(remote="forbid"), sampling)
        self.sampler.apply(self.policies.resolve(registry))
        self.privacy_settings = privacy or PrivacySettings()
        detector = load_detector(self.privacy_settings.detector) if self.privacy_settings.detector else None
        self._redactors: dict[str, Redactor] = {
            schema.name: redactor_for(schema, self.privacy_settings, detector) for schema in registry
        }
        self.privacy = Privacy(fleet_key, redactor=redactor_for(None, self.privacy_settings, detector))
        self.recent = recent if recent is not None else RecentIds(0)
        self._validators: dict[str, RecordValidator] = {}
        self._lines: LineValidator | None = None

    def reload(self, registry: SchemaRegistry, sampling: SamplingSettings, policy: PolicySettings | None = None) -> None:
        """Take new schemas and sampling rules; the quota windows carry over."""
        self.registry = registry
        self._validators = {}
        self._lines = None
        self.policies.reload(policy or self.policies.settings, sampling)
        self.apply_policies()

    def apply_policies(self) -> None:
        """Run the policies in force now; one request's records are sampled under one policy."""
        self.sampler.apply(self.policies.resolve(self.registry))

    def policy_status(self) -> dict[str, Any]:
        """The policy version each model runs, and the last answer from the server."""
        return {
            "models": {schema.name: self.sampler.version(schema.name) for schema in self.registry},
            "remote": self.policies.settings.remote,
            "last_fetch": self.policies.last_fetch,
        }

    def _validator(self, schema: ModelSchema) -> RecordValidator:
        validator = self._validators.get(schema.name)
        if validator is None:
            validator = self._validators[schema.name] = RecordValidator(schema)
        return validator

    def process_lines(
        self, lines: Sequence[bytes], *, now: datetime | None = None, seen: set[bytes] | None = None,
        listed: frozenset[str] = RequestRecords.listed,
    ) -> ProcessedRecords | None:
        """``process`` for JSON texts, each parsed and validated in one pass; None if one is not a valid record.

        None changes nothing (no id seen, no sampling state): the caller then decodes the
        texts and calls ``process``, which answers each one precisely.
        """
        lines_validator = self._lines
        if lines_validator is None:
            lines_validator = self._lines = LineValidator(self.registry)
        validate = lines_validator.validate
        records: list[Any] = []
        groups: dict[str, list[int]] = {}
        for index, line in enumerate(lines):
            record = validate(line)
            if record is None:
                return None
            records.append(record)
            model = record["model"]
            members = groups.get(model)
            if members is None:
                groups[model] = [index]
            else:
                members.append(index)
        now = datetime.now(UTC) if now is None else now.astimezone(UTC)
        processed = ProcessedRecords(batches={}, results=[_EMPTY] * len(records), drops=Counter())
        seen = set() if seen is None else seen
        for model, members in groups.items():
            good = [records[i] for i in members]
            self._keep(self.registry[model], records, members, list(range(len(members))), good, now, processed, seen, listed)
        return processed

    def process(
        self, records: list[Any], *, now: datetime | None = None, seen: set[bytes] | None = None,
        listed: frozenset[str] = RequestRecords.listed,
    ) -> ProcessedRecords:
        """Validate, sample and anonymize ``records``; ``now`` stamps records without created_at.

        ``seen`` carries the keys of records processed before in the same request (a slice's
        predecessors): an id among them is a duplicate; this call adds its own. Results of
        kept and sampled-out records are built only if ``listed`` names their status (senders
        that mint their own ids ask for errors only: most records then need no result).
        """
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
        processed = ProcessedRecords(batches={}, results=results, drops=drops)
        seen = set() if seen is None else seen
        for model, members in groups.items():
            self._process_model(self.registry[model], records, members, now, processed, seen, listed)
        return processed

    def _process_model(
        self,
        schema: ModelSchema,
        records: list[Any],
        members: list[int],
        now: datetime,
        processed: ProcessedRecords,
        seen: set[bytes],
        listed: frozenset[str],
    ) -> None:
        results, drops = processed.results, processed.drops
        good_at, good, issues = self._validator(schema).validate([records[i] for i in members])
        for issue in issues:
            index = members[issue.index]
            results[index] = _invalid(index, issue.field, issue.message)
        if issues:
            drops["invalid"] += len(issues)
        self._keep(schema, records, members, good_at, good, now, processed, seen, listed)

    def _keep(
        self,
        schema: ModelSchema,
        records: list[Any],
        members: list[int],
        good_at: list[int],
        good: list[dict[str, Any]],
        now: datetime,
        processed: ProcessedRecords,
        seen: set[bytes],
        listed: frozenset[str],
    ) -> None:
        """Dedup, sample and anonymize a model's valid records (``good``, at ``members[good_at[i]]`` of ``records``)."""
        results, drops = processed.results, processed.drops
        good_at, good, keys = self._fresh(schema, records, members, good_at, good, processed, seen, "accepted" in listed)
        if not good:
            return

        decisions, selected_by, version = self.sampler.decide(schema.name, good, charges=processed.charges)

        kept: list[dict[str, Any]] = []
        weights: list[float] = []
        sampled_by: list[str | None] = []
        ids: list[bytes] = []
        kept_keys: list[bytes] = []
        list_accepted, list_sampled_out = "accepted" in listed, "sampled_out" in listed
        for position, decision in enumerate(decisions):
            key = keys[position]
            record = good[position]
            if decision.__class__ is float:
                if key is None:
                    minted = uuid_utils.uuid7()
                    id_bytes = minted.bytes
                else:
                    id_bytes = key[:16]
                if list_accepted:
                    index = members[good_at[position]]
                    text = str(minted) if key is None else _uuid_text(records[index].get("record_id"), record["record_id"])
                    results[index] = {"index": index, "status": "accepted", "record_id": text}
                kept.append(record)
                weights.append(decision)  # type: ignore[arg-type]
                sampled_by.append(selected_by[position])
                ids.append(id_bytes)
                if key is not None:
                    kept_keys.append(key)
            else:
                if list_sampled_out:
                    index = members[good_at[position]]
                    text = str(uuid_utils.uuid7()) if key is None else _uuid_text(records[index].get("record_id"), record["record_id"])
                    results[index] = {"index": index, "status": "sampled_out", "record_id": text}
                drops[decision] += 1  # type: ignore[index]
        if kept:
            processed.batches[schema.name] = self._batch(schema, kept, weights, sampled_by, version, ids, now)
            processed.keys[schema.name] = kept_keys

    def _fresh(
        self,
        schema: ModelSchema,
        records: list[Any],
        members: list[int],
        good_at: list[int],
        good: list[dict[str, Any]],
        processed: ProcessedRecords,
        seen: set[bytes],
        list_accepted: bool = True,
    ) -> tuple[list[int], list[dict[str, Any]], list[bytes | None]]:
        """Set aside records whose id the agent already has (or this request had earlier): answered accepted, stored once.

        A record whose id is the nil or max UUID (an app's unset default) is invalid: taken as
        an id, every record after the first would vanish as a resend.
        """
        recent = self.recent
        tags = {"prediction": recent.tag(schema.name, "prediction"), "feedback": recent.tag(schema.name, "feedback")}
        fresh_at: list[int] = []
        fresh: list[dict[str, Any]] = []
        keys: list[bytes | None] = []
        for position, record in enumerate(good):
            given = record.get("record_id")
            if given is None:
                key = None
            else:
                raw = given.bytes
                if raw in UNSET_IDS:
                    index = members[good_at[position]]
                    processed.results[index] = _invalid(index, "record_id", UNSET_ID_MESSAGE)
                    processed.drops["invalid"] += 1
                    continue
                key = raw + tags[record["kind"]]
                if key in seen or key in recent:
                    if list_accepted:
                        index = members[good_at[position]]
                        text = _uuid_text(records[index].get("record_id"), given)
                        processed.results[index] = {"index": index, "status": "accepted", "record_id": text, "duplicate": True}
                    processed.duplicates[schema.name] += 1
                    continue
                seen.add(key)
            fresh_at.append(good_at[position])
            fresh.append(record)
            keys.append(key)
        return fresh_at, fresh, keys

    def _batch(
        self,
        schema: ModelSchema,
        kept: list[dict[str, Any]],
        weights: list[float],
        sampled_by: list[str | None],
        version: str | None,
        ids: list[bytes],
        now: datetime,
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
        columns.append(pa.array(sampled_by, type=pa.string()))
        columns.append(pa.repeat(pa.scalar(version, type=pa.string()), rows))

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
