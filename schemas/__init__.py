"""The record contract shared by the device agent and the ingest service; no I/O but reading schema files."""

from schemas.envelope import BATCH_METADATA_KEYS, ENVELOPE_COLUMNS, KINDS, envelope_arrow_fields, landing_arrow_fields
from schemas.errors import EdgeloopError, RecordError, SchemaError
from schemas.model_schema import FieldSpec, ModelSchema, PrivacyRule, load_schema_file
from schemas.records import RecordIssue, RecordValidator
from schemas.registry import EXAMPLES_DIR, SchemaRegistry

__all__ = [
    "BATCH_METADATA_KEYS",
    "ENVELOPE_COLUMNS",
    "EXAMPLES_DIR",
    "KINDS",
    "EdgeloopError",
    "FieldSpec",
    "ModelSchema",
    "PrivacyRule",
    "RecordError",
    "RecordIssue",
    "RecordValidator",
    "SchemaError",
    "SchemaRegistry",
    "envelope_arrow_fields",
    "landing_arrow_fields",
    "load_schema_file",
]
