"""The record contract shared by the device agent and the ingest service; no I/O but reading schema files.

Names load lazily, so ``from edgeloop.errors import ...`` (the SDK in an inference app) does
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
    "BATCH_METADATA_KEYS": "edgeloop.schemas.envelope",
    "ENVELOPE_COLUMNS": "edgeloop.schemas.envelope",
    "KINDS": "edgeloop.schemas.envelope",
    "envelope_arrow_fields": "edgeloop.schemas.envelope",
    "landing_arrow_fields": "edgeloop.schemas.envelope",
    "EdgeloopError": "edgeloop.errors",
    "RecordError": "edgeloop.errors",
    "SchemaError": "edgeloop.errors",
    "FieldSpec": "edgeloop.schemas.model_schema",
    "ModelSchema": "edgeloop.schemas.model_schema",
    "PrivacyRule": "edgeloop.schemas.model_schema",
    "load_schema_file": "edgeloop.schemas.model_schema",
    "RecordIssue": "edgeloop.schemas.records",
    "RecordValidator": "edgeloop.schemas.records",
    "EXAMPLES_DIR": "edgeloop.schemas.registry",
    "SchemaRegistry": "edgeloop.schemas.registry",
}

if TYPE_CHECKING:
    from edgeloop.errors import EdgeloopError, RecordError, SchemaError
    from edgeloop.schemas.envelope import (
        BATCH_METADATA_KEYS,
        ENVELOPE_COLUMNS,
        KINDS,
        envelope_arrow_fields,
        landing_arrow_fields,
    )
    from edgeloop.schemas.model_schema import FieldSpec, ModelSchema, PrivacyRule, load_schema_file
    from edgeloop.schemas.records import RecordIssue, RecordValidator
    from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'edgeloop.schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
