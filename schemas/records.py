"""Validate records an app sends against their model's schema, one error per bad record.

An app sends records as JSON objects::

    {"kind": "prediction", "model": "vibration", "model_version": "2.1.0",
     "record_id": "<uuid, optional>", "created_at": "<RFC 3339, optional>",
     "inputs": {...}, "outputs": {...}}
    {"kind": "feedback", "model": "vibration", "model_version": "2.1.0",
     "prediction_id": "<uuid>", "source": "operator", "feedback": {...}}

Validation is pydantic, compiled once per schema; a list validates in one call and only
a list with errors pays for a second pass over its good records. ``LineValidator`` parses
and validates a JSON line in one pass (pydantic-core's ``validate_json``) for any model of a
registry; it only says whether a line is a valid record: the precise error of a refused one
comes from ``RecordValidator``.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union
from uuid import UUID

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    Strict,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import NotRequired, Required, TypedDict

from edgeloop.schemas.model_schema import FieldSpec, ModelSchema
from edgeloop.times import EARLIEST_TIME_S, LATEST_TIME_S, past_leap_second

__all__ = ["LineValidator", "RecordIssue", "RecordValidator"]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
FLOAT32_MAX = 3.4028234663852886e38
FLOAT64_MAX = sys.float_info.max
STRICT = ConfigDict(extra="forbid", strict=True)
# JSON text has no NaN or Infinity (orjson refuses them, and 1e400); jiter would read them as floats.
STRICT_JSON = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class RecordIssue:
    """Why one record (by its index in the request) was refused."""

    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


def _utc(value: datetime) -> datetime:
    # Naive means UTC; an aware value keeps its offset (Arrow stores the instant as UTC).
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        value.astimezone(UTC)
    except OverflowError:  # the server refuses a batch holding it, and the device would dead-letter its other rows
        raise ValueError("the time is outside years 1 to 9999 once in UTC") from None
    return value


def _base64(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
    return value


def _max_bytes(limit: int):
    def check(value: bytes | str) -> bytes | str:
        size = len(value) if isinstance(value, bytes) else len(value.encode())
        if size > limit:
            raise ValueError(f"{size} bytes is over the {limit}-byte cap")
        return value

    return check


# Lax mode parses RFC 3339 text, epoch seconds and UUID text in Rust, several times faster
# than a Python before-validator; every other type stays strict.
_Time = Annotated[datetime, Strict(False), AfterValidator(_utc)]
_TIME = TypeAdapter(_Time)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_US = EARLIEST_TIME_S * 1_000_000
LATEST_US = (LATEST_TIME_S + 1) * 1_000_000 - 1


def _late_time(value: Any) -> datetime:
    """A time Rust's parser refused that is still one: a leap second, or epoch micro- or nanoseconds; else its error."""
    if isinstance(value, str):
        value = past_leap_second(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e22:
        # Pydantic takes numbers over 2e10 as milliseconds up to year 9999; past it, microseconds, then nanoseconds.
        for per_us in (1, 1_000):
            us = round(value / per_us) if isinstance(value, float) else value // per_us
            if EARLIEST_US <= us <= LATEST_US:
                return _EPOCH + timedelta(microseconds=us)
    try:
        return _TIME.validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        raise PydanticCustomError("time", error["msg"].removeprefix("Value error, ")) from None


class _LateTime:
    """Pydantic's own datetime parse first (Rust, every record), then ``_late_time`` only for what it refused."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.union_schema(
            [(handler.generate_schema(_Time), "time"), (core_schema.no_info_plain_validator_function(_late_time), "late")],
            mode="left_to_right",
        )


Timestamp = Annotated[datetime, _LateTime]


UNSET_ID_MESSAGE = "the nil (all zeros) or max (all ones) UUID names no record: an unset default?"
UNSET_IDS = frozenset({bytes(16), b"\xff" * 16})  # an app's unset default: every record would share it


def _not_nil(value: UUID) -> UUID:
    # An app's unset default: every record would share it, and all but the first vanish as resends.
    if value.int in (0, 2**128 - 1):
        raise ValueError(UNSET_ID_MESSAGE)
    return value


Uuid = Annotated[UUID, Strict(False), AfterValidator(_not_nil)]
# A record_id is checked against UNSET_IDS by whoever dedups by it (the agent's pipeline, on the
# bytes it keys on anyway): a Python validator here cost 0.3 us on every record.
RecordId = Annotated[UUID, Strict(False)]


def _float(spec: FieldSpec) -> Any:
    """A float its column holds after its privacy rule: 1e300 would land as infinity in float32, 1e308 too under round:0.01."""
    limit = FLOAT64_MAX if spec.type == "float64" else FLOAT32_MAX
    rule = spec.privacy
    if rule.action == "round" and rule.step is not None:
        limit = limit * min(1.0, rule.step) / 2  # round(x / step) * step stays finite, and within its type once cast back
    elif rule.action == "noise":
        limit /= 2
    return Annotated[float, Field(ge=-limit, le=limit)]


def _python_type(spec: FieldSpec) -> Any:
    """The pydantic type a field's raw (pre-privacy) value must have."""
    match spec.type:
        case "bool":
            return bool
        case "int32":
            return Annotated[int, Field(ge=INT32[0], le=INT32[1])]
        case "int64":
            return Annotated[int, Field(ge=INT64[0], le=INT64[1])]
        case "float32" | "float64":
            return _float(spec)
        case "string":
            if spec.max_bytes:
                return Annotated[str, AfterValidator(_max_bytes(spec.max_bytes))]
            return str
        case "timestamp":
            return Timestamp
        case "vector":
            return Annotated[list[_float(spec)], Field(min_length=spec.dim, max_length=spec.dim)]  # type: ignore[misc]
        case "binary":
            return Annotated[bytes, BeforeValidator(_base64), AfterValidator(_max_bytes(spec.max_bytes))]
    raise AssertionError(spec.type)


def _section_dict(schema: ModelSchema, section: str, config: ConfigDict) -> type:
    fields: dict[str, Any] = {}
    for spec in schema.section(section):
        kind = Required if spec.required else NotRequired
        optional = _python_type(spec) if spec.required else _python_type(spec) | None
        fields[spec.name] = kind[optional]
    typed = TypedDict(f"{schema.name}_{section}", fields)  # type: ignore[operator]
    typed.__pydantic_config__ = config  # type: ignore[attr-defined]
    return typed


def _record_type(schema: ModelSchema, config: ConfigDict) -> Any:
    """One record of ``schema``: a prediction or a feedback, told apart by ``kind``."""
    inputs = _section_dict(schema, "inputs", config)
    outputs = _section_dict(schema, "outputs", config)
    feedback = _section_dict(schema, "feedback", config)
    common = {
        "model": Required[Literal[schema.name]],  # type: ignore[valid-type]
        "model_version": Required[Annotated[str, Field(min_length=1, max_length=128)]],
        "record_id": NotRequired[RecordId | None],
        "created_at": NotRequired[Timestamp | None],
    }
    prediction = TypedDict(  # type: ignore[operator]
        "prediction",
        {**common, "kind": Required[Literal["prediction"]], "inputs": Required[inputs], "outputs": Required[outputs]},
    )
    label = TypedDict(  # type: ignore[operator]
        "feedback",
        {
            **common,
            "kind": Required[Literal["feedback"]],
            "prediction_id": Required[Uuid],
            "source": NotRequired[Annotated[str, Field(max_length=128)] | None],
            "feedback": Required[feedback],
        },
    )
    prediction.__pydantic_config__ = config  # type: ignore[attr-defined]
    label.__pydantic_config__ = config  # type: ignore[attr-defined]
    return Annotated[Union[prediction, label], Field(discriminator="kind")]


class RecordValidator:
    """Validates raw records of one model; returns normalized dicts and per-record issues.

    A ``record_id`` in UNSET_IDS passes here: the caller refuses it (with UNSET_ID_MESSAGE).
    """

    def __init__(self, schema: ModelSchema) -> None:
        self.schema = schema
        self._many = TypeAdapter(list[_record_type(schema, STRICT)])

    def validate(self, records: list[Any]) -> tuple[list[int], list[dict[str, Any]], list[RecordIssue]]:
        """Validate records; returns (indices of good ones, their normalized dicts, issues)."""
        try:
            return list(range(len(records))), self._many.validate_python(records), []
        except ValidationError as exc:
            issues = _issues(exc)
        bad = {issue.index for issue in issues}
        good_idx = [i for i in range(len(records)) if i not in bad]
        good = self._many.validate_python([records[i] for i in good_idx]) if good_idx else []
        return good_idx, good, issues


class LineValidator:
    """Parses and validates one JSON text as a record of any of ``schemas`` in one pass.

    Gives the same normalized dict ``RecordValidator`` gives for ``orjson.loads`` of the
    text, or None for a text that is not a valid record (``RecordValidator`` then says why).
    """

    def __init__(self, schemas: Iterable[ModelSchema]) -> None:
        members = [_record_type(schema, STRICT_JSON) for schema in schemas]
        if len(members) > 1:
            self._one: TypeAdapter[Any] | None = TypeAdapter(
                Annotated[Union[tuple(members)], Field(discriminator="model")]  # type: ignore[valid-type]
            )
        else:
            self._one = TypeAdapter(members[0]) if members else None

    def validate(self, text: bytes) -> dict[str, Any] | None:
        """The record ``text`` holds, normalized; None unless it is one valid record."""
        if self._one is None:
            return None
        try:
            return self._one.validate_json(text)
        except ValidationError:
            return None


def _issues(exc: ValidationError) -> list[RecordIssue]:
    """One issue per bad record: the first error pydantic found in it, by dotted field path."""
    first: dict[int, RecordIssue] = {}
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        index = loc.pop(0)
        if index in first or loc[-1:] == ["time"]:
            continue  # a time's first parse: its second (``_late_time``) says why, or took it
        if loc[-1:] == ["late"]:
            loc.pop()
        if loc and loc[0] in ("prediction", "feedback"):
            loc.pop(0)  # the union's tag adds nothing for the reader
        field = ".".join(str(part) for part in loc) or "record"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field, message = "kind", "must be 'prediction' or 'feedback'"
        elif error["type"] == "literal_error" and field == "model":
            message = "record is for another model"
        first[index] = RecordIssue(index=index, field=field, message=message)
    return sorted(first.values(), key=lambda issue: issue.index)
