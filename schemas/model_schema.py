"""A model's schema file: typed input, output and feedback fields with a privacy rule each.

A schema file is TOML::

    name = "vibration"            # the model this schema describes
    version = 3                   # bump when fields change
    confidence_field = "confidence"   # optional: output used for uncertainty sampling and calibration
    prediction_field = "predicted_class"  # optional: the output the field report compares ...
    truth_field = "true_class"            # ... with this feedback field (the ground truth)
    task = "classification"               # optional: inferred from the two fields' types

    [inputs.temperature_c]
    type = "float32"
    privacy = "round:0.1"

    [outputs.confidence]
    type = "float32"
    required = true

    [feedback.true_class]
    type = "string"
    privacy = "keep"              # a string field must say: free text may carry personal data

Field names are flat column names in Parquet and DuckDB, so they must be unique across
``inputs``, ``outputs`` and ``feedback`` and must not shadow an envelope column.

The fingerprint covers what shapes the data a device writes (fields, types, privacy rules,
the confidence field that drives sampling). ``prediction_field``, ``truth_field`` and
``task`` only say how the server reads that data, so they travel with the schema but leave
the fingerprint alone: declaring them is not a new schema for the fleet.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeloop.errors import SchemaError
from edgeloop.schemas import envelope
from edgeloop.schemas.names import NAME_PATTERN
from edgeloop.settings import read_text

# Arrow is imported where a schema becomes Arrow types: the agent's `status` reads its config (whose privacy
# settings are a SchemaPrivacy) without it.
if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FieldSpec", "ModelSchema", "PrivacyRule", "RedactPattern", "SchemaPrivacy", "load_schema_file"]

FieldType = Literal["bool", "int32", "int64", "float32", "float64", "string", "timestamp", "vector", "binary"]
Section = Literal["inputs", "outputs", "feedback"]
Task = Literal["classification", "regression"]

NUMERIC_TYPES = frozenset({"int32", "int64", "float32", "float64"})
FLOAT_TYPES = frozenset({"float32", "float64"})
LABEL_TYPES = frozenset({"bool", "int32", "int64", "string"})
TRUNCATE_UNITS = ("second", "minute", "hour", "day")
MAX_INT32 = 2**31 - 1  # the catalog stores versions as INTEGER; JSON and Arrow readers hold no more than 64 bits



@cache
def arrow_types() -> dict[str, pa.DataType]:
    """The Arrow type of each scalar field type."""
    import pyarrow as pa

    return {
        "bool": pa.bool_(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "binary": pa.binary(),
    }


class PrivacyRule(BaseModel):
    """A parsed privacy rule: ``keep``, ``drop``, ``hash``, ``redact``, ``round:<step>``,
    ``truncate:<unit>`` or ``noise:<scale>``."""

    model_config = ConfigDict(frozen=True)

    action: Literal["keep", "drop", "hash", "redact", "round", "truncate", "noise"]
    step: float | None = None
    unit: Literal["second", "minute", "hour", "day"] | None = None
    scale: float | None = None

    @classmethod
    def parse(cls, text: str) -> PrivacyRule:
        action, _, arg = text.partition(":")
        action = action.strip()
        arg = arg.strip()
        if action in ("keep", "drop", "hash", "redact"):
            if arg:
                raise ValueError(f"privacy rule {action!r} takes no argument")
            return cls(action=action)
        if action in ("round", "noise"):
            try:
                value = float(arg)
            except ValueError:
                raise ValueError(f"privacy rule {action!r} needs a number, as in '{action}:0.5'") from None
            if not value > 0:
                raise ValueError(f"privacy rule {action!r} needs a positive number, got {arg!r}")
            return cls(action=action, step=value) if action == "round" else cls(action=action, scale=value)
        if action == "truncate":
            if arg not in TRUNCATE_UNITS:
                raise ValueError(f"privacy rule 'truncate' needs one of {', '.join(TRUNCATE_UNITS)}, got {arg!r}")
            return cls(action=action, unit=arg)
        raise ValueError(
            f"unknown privacy rule {text!r} (use keep, drop, hash, redact, round:<step>, truncate:<unit>, noise:<scale>)"
        )

    def __str__(self) -> str:
        if self.action == "round":
            return f"round:{self.step:g}"
        if self.action == "noise":
            return f"noise:{self.scale:g}"
        if self.action == "truncate":
            return f"truncate:{self.unit}"
        return self.action


class RedactPattern(BaseModel):
    """A user's own kind of personal data for the ``redact`` rule: a regex, an optional
    checksum its matches must pass, and the placeholder they become."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    regex: str
    validator: Literal["luhn", "mod97"] | None = None
    placeholder: str | None = None  # default: "<NAME>"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", value):
            raise ValueError(f"pattern name {value!r}: letters, digits and _ (starting with a letter)")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        check_regex(value)
        return value

    @property
    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.regex)

    @property
    def label(self) -> str:
        return self.placeholder or f"<{self.name.upper()}>"


def check_regex(text: str) -> re.Pattern[str]:
    """Compile a user's regex; one that fails or matches the empty string is a ValueError."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ValueError(f"regex {text!r} does not compile: {exc}") from None
    if pattern.search("") is not None:
        raise ValueError(f"regex {text!r} matches the empty string, so it would match everywhere")
    return pattern


class SchemaPrivacy(BaseModel):
    """A schema's own additions to the ``redact`` rule (on top of the fleet's ``[privacy]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: tuple[RedactPattern, ...] = ()
    allow: tuple[str, ...] = ()  # regexes of text never redacted

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            check_regex(text)
        return value


class FieldSpec(BaseModel):
    """One typed field of a model's inputs, outputs or feedback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    section: Section
    type: FieldType
    privacy: PrivacyRule = PrivacyRule(action="keep")
    required: bool = False
    dim: Annotated[int, Field(gt=0, le=65536)] | None = None
    max_bytes: Annotated[int, Field(gt=0)] | None = None
    description: str = ""

    @field_validator("privacy", mode="before")
    @classmethod
    def _parse_privacy(cls, value: Any) -> Any:
        return PrivacyRule.parse(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combination(self) -> FieldSpec:
        if not NAME_PATTERN.match(self.name):
            raise ValueError("field names are lower-case letters, digits and _ (starting with a letter)")
        if self.name in envelope.ENVELOPE_COLUMNS:
            raise ValueError(f"{self.name!r} is an envelope column and cannot be a field name")
        if self.type == "vector" and self.dim is None:
            raise ValueError("a vector field needs dim (its length)")
        if self.type != "vector" and self.dim is not None:
            raise ValueError("dim only applies to vector fields")
        if self.type == "binary" and self.max_bytes is None:
            raise ValueError("a binary field needs max_bytes (its size cap)")
        if self.max_bytes is not None and self.type not in ("binary", "string"):
            raise ValueError("max_bytes only applies to string and binary fields")
        rule = self.privacy.action
        if rule == "redact" and self.type != "string":
            raise ValueError("redact applies to string fields only")
        if rule in ("round", "noise") and self.type not in NUMERIC_TYPES and self.type != "vector":
            raise ValueError(f"{rule} applies to numeric and vector fields only")
        if rule == "truncate" and self.type != "timestamp":
            raise ValueError("truncate applies to timestamp fields only")
        if rule == "hash" and self.type == "vector":
            raise ValueError("hash does not apply to vector fields")
        return self

    @property
    def stored(self) -> bool:
        """Whether the field leaves the device at all (``drop`` removes it before disk)."""
        return self.privacy.action != "drop"

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type of the stored column, after the privacy rule."""
        import pyarrow as pa

        if self.privacy.action == "hash":
            return pa.string()
        if self.type == "vector":
            return pa.list_(pa.float32(), self.dim)
        return arrow_types()[self.type]

    def canonical(self) -> dict[str, Any]:
        """What identifies this field in the fingerprint (descriptions do not count)."""
        return {
            "name": self.name,
            "section": self.section,
            "type": self.type,
            "privacy": str(self.privacy),
            "required": self.required,
            "dim": self.dim,
            "max_bytes": self.max_bytes,
        }


class ModelSchema(BaseModel):
    """A model's schema: its name, schema version and fields, in file order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: Annotated[int, Field(ge=1)]  # at most MAX_INT32 in files (from_mapping): a stored catalog may hold more
    description: str = ""
    confidence_field: str | None = None
    prediction_field: str | None = None
    truth_field: str | None = None
    task: Task | None = None
    fields: tuple[FieldSpec, ...]
    # The feedback envelope's free-text `source` (who labelled it) is text from the field too.
    source_privacy: PrivacyRule = PrivacyRule(action="redact")
    privacy: SchemaPrivacy = SchemaPrivacy()
    source: str | None = Field(default=None, exclude=True)

    @field_validator("source_privacy", mode="before")
    @classmethod
    def _parse_source_privacy(cls, value: Any) -> Any:
        rule = PrivacyRule.parse(value) if isinstance(value, str) else value
        if isinstance(rule, PrivacyRule) and rule.action not in ("keep", "drop", "hash", "redact"):
            raise ValueError("source_privacy is keep, drop, hash or redact")
        return rule

    @model_validator(mode="after")
    def _check_fields(self) -> ModelSchema:
        if not NAME_PATTERN.match(self.name):
            raise ValueError("model names are lower-case letters, digits and _ (starting with a letter)")
        seen: set[str] = set()
        for spec in self.fields:
            if spec.name in seen:
                raise ValueError(f"field {spec.name!r} appears twice (names are unique across sections)")
            seen.add(spec.name)
        if self.confidence_field is not None:
            spec = self.field(self.confidence_field)
            if spec is None or spec.section != "outputs" or spec.type not in ("float32", "float64"):
                raise ValueError(f"confidence_field {self.confidence_field!r} must name a float output field")
        if not any(spec.section != "feedback" for spec in self.fields):
            raise ValueError("a schema needs at least one input or output field")
        self._check_comparison()
        return self

    def _check_comparison(self) -> None:
        """prediction_field and truth_field come together, are stored, and can be compared."""
        if (self.prediction_field is None) != (self.truth_field is None):
            raise ValueError("prediction_field and truth_field go together: declare both or neither")
        if self.prediction_field is None or self.truth_field is None:
            if self.task is not None:
                raise ValueError("task needs prediction_field and truth_field")
            return
        prediction, truth = self.field(self.prediction_field), self.field(self.truth_field)
        if prediction is None or prediction.section != "outputs" or not prediction.stored:
            raise ValueError(f"prediction_field {self.prediction_field!r} must name a stored output field")
        if truth is None or truth.section != "feedback" or not truth.stored:
            raise ValueError(f"truth_field {self.truth_field!r} must name a stored feedback field")
        task = self.comparison_task
        if task == "regression":
            if prediction.type not in NUMERIC_TYPES or truth.type not in NUMERIC_TYPES:
                raise ValueError("a regression compares numeric prediction and truth fields")
            if prediction.privacy.action == "hash" or truth.privacy.action == "hash":
                raise ValueError("a regression cannot compare hashed fields")
        else:
            if prediction.type not in LABEL_TYPES or truth.type not in LABEL_TYPES:
                raise ValueError("a classification compares label fields (string, bool or int), not floats")
            if prediction.arrow_type != truth.arrow_type or prediction.privacy != truth.privacy:
                raise ValueError(
                    f"prediction_field and truth_field are stored as {prediction.arrow_type} ({prediction.privacy}) and "
                    f"{truth.arrow_type} ({truth.privacy}); a classification compares like with like (same type and privacy rule)"
                )

    @property
    def comparison_task(self) -> Task | None:
        """classification or regression: declared, else floats mean regression; None when nothing is declared."""
        if self.prediction_field is None:
            return None
        if self.task is not None:
            return self.task
        prediction = self.field(self.prediction_field)
        return "regression" if prediction is not None and prediction.type in FLOAT_TYPES else "classification"

    def field(self, name: str) -> FieldSpec | None:
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None

    def section(self, section: Section) -> tuple[FieldSpec, ...]:
        return tuple(spec for spec in self.fields if spec.section == section)

    @cached_property
    def stored_fields(self) -> tuple[FieldSpec, ...]:
        """Fields that reach the spool, in column order."""
        return tuple(spec for spec in self.fields if spec.stored)

    def canonical(self) -> dict[str, Any]:
        canonical: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "confidence_field": self.confidence_field,
            "fields": [spec.canonical() for spec in self.fields],
        }
        # Only when set, so the fingerprints of schemas without them stay what they were.
        if self.source_privacy.action != "redact":
            canonical["source_privacy"] = str(self.source_privacy)
        if self.privacy != SchemaPrivacy():
            canonical["privacy"] = self.privacy.model_dump(mode="json")
        return canonical

    def comparison(self) -> dict[str, Any]:
        """The declarations the field report reads; empty when none are made."""
        declared = {"prediction_field": self.prediction_field, "truth_field": self.truth_field, "task": self.task}
        return {key: value for key, value in declared.items() if value is not None}

    def canonical_json(self) -> str:
        """Stable JSON that travels in batch metadata: what shapes stored data, plus the comparison declarations.

        Only declarations that are made are written, so a schema without them travels byte for byte
        as before (and a server that predates them still reads it).
        """
        return json.dumps({**self.canonical(), **self.comparison()}, sort_keys=True, separators=(",", ":"))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical form, first 16 hex digits: changes whenever stored data would (and only then)."""
        stored = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(stored.encode()).hexdigest()[:16]

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of a sealed batch: envelope columns, then stored fields."""
        import pyarrow as pa

        fields = list(envelope.envelope_arrow_fields())
        fields.extend(pa.field(spec.name, spec.arrow_type, nullable=True) for spec in self.stored_fields)
        return pa.schema(fields)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> ModelSchema:
        """Parse a schema file; any problem is a one-line SchemaError naming file and field."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SchemaError(f"{source}: not valid TOML: {exc}") from exc
        return cls.from_mapping(raw, source=source)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "<mapping>") -> ModelSchema:
        raw = dict(raw)
        version = raw.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > MAX_INT32:
            # Checked on files only, as max_bytes below: a catalog that already holds a bigger version must still load.
            raise SchemaError(f"{source}: version: at most {MAX_INT32}")
        fields: list[dict[str, Any]] = []
        for section in ("inputs", "outputs", "feedback"):
            table = raw.pop(section, {})
            if not isinstance(table, dict):
                raise SchemaError(f"{source}: [{section}] must be a table of fields")
            for name, spec in table.items():
                if not isinstance(spec, dict):
                    raise SchemaError(f"{source}: field {section}.{name}: must be a table with at least 'type'")
                if spec.get("type") == "string" and "privacy" not in spec:
                    raise SchemaError(
                        f"{source}: field {section}.{name}: a string field needs an explicit privacy rule"
                        " (keep, drop, hash or redact): free text from the field may carry personal data"
                    )
                max_bytes = spec.get("max_bytes")
                if isinstance(max_bytes, int) and not isinstance(max_bytes, bool) and max_bytes > MAX_INT32:
                    # Checked on files only: a catalog that already holds a bigger cap must still load.
                    raise SchemaError(f"{source}: field {section}.{name} (max_bytes): at most {MAX_INT32}")
                fields.append({"name": name, "section": section, **spec})
        try:
            return cls(**raw, fields=tuple(fields), source=source)
        except ValidationError as exc:
            raise SchemaError(f"{source}: {_one_line(exc, fields)}") from exc

    @classmethod
    def from_canonical_json(cls, text: str) -> ModelSchema:
        """Rebuild a schema from the JSON a batch carries in its metadata."""
        try:
            raw = json.loads(text)
            fields = raw.pop("fields")
            return cls(**raw, fields=tuple(fields), source="batch metadata")
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise SchemaError(f"batch metadata: schema is not valid: {exc}") from exc


def _one_line(exc: ValidationError, fields: list[dict[str, Any]]) -> str:
    """The first validation error as 'field inputs.x: problem' on one line."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] == "fields" and isinstance(loc[1], int) and loc[1] < len(fields):
        spec = fields[loc[1]]
        where = f"field {spec['section']}.{spec['name']}"
        rest = ".".join(str(part) for part in loc[2:])
        if error["type"] == "extra_forbidden":
            return f"{where}: unknown setting {loc[-1]!r}"
        if rest:
            where += f" ({rest})"
        return f"{where}: {message}"
    if not loc:
        return message
    where = ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        return f"unknown top-level key {where!r}"
    if error["type"] == "missing":
        return f"missing {where!r}"
    return f"{where}: {message}"


def load_schema_file(path: str | Path) -> ModelSchema:
    path = Path(path)
    return ModelSchema.from_toml(read_text(path, error=SchemaError), source=str(path))
