"""The record contract shared by the device agent and the ingest service; no I/O but reading schema files.

Names load lazily, so ``from schemas.errors import ...`` (the SDK in an inference app) does
not pull in pyarrow and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_HOMES = {
    "BATCH_METADATA_KEYS": "schemas.envelope",
    "ENVELOPE_COLUMNS": "schemas.envelope",
    "KINDS": "schemas.envelope",
    "envelope_arrow_fields": "schemas.envelope",
    "landing_arrow_fields": "schemas.envelope",
    "EdgeloopError": "schemas.errors",
    "RecordError": "schemas.errors",
    "SchemaError": "schemas.errors",
    "FieldSpec": "schemas.model_schema",
    "ModelSchema": "schemas.model_schema",
    "PrivacyRule": "schemas.model_schema",
    "load_schema_file": "schemas.model_schema",
    "RecordIssue": "schemas.records",
    "RecordValidator": "schemas.records",
    "EXAMPLES_DIR": "schemas.registry",
    "SchemaRegistry": "schemas.registry",
}

if TYPE_CHECKING:
    from schemas.envelope import BATCH_METADATA_KEYS, ENVELOPE_COLUMNS, KINDS, envelope_arrow_fields, landing_arrow_fields
    from schemas.errors import EdgeloopError, RecordError, SchemaError
    from schemas.model_schema import FieldSpec, ModelSchema, PrivacyRule, load_schema_file
    from schemas.records import RecordIssue, RecordValidator
    from schemas.registry import EXAMPLES_DIR, SchemaRegistry


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
